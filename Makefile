# The two commands of README.rst: `make dev` runs the embedded default,
# `make test` sets up and passes the tests. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROXY := node_modules/.bin/configurable-http-proxy

.PHONY: dev test setup test-setup lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(PROXY): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(STAMP) $(PROXY)

test-setup: setup
	tests/setup/system-packages.sh
	tests/setup/install-helm.sh >/dev/null

dev: setup
	tests/setup/system-packages.sh dev
	$(PY) -m glue.dev

lint: setup
	$(VENV)/bin/ruff check .

test: test-setup lint
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) node_modules .tools .dev test-artifacts
