# The two commands of README.rst: `make dev` runs the embedded default,
# `make test` sets up and passes the tests. Both install what they need.
SHELL := /bin/bash
# the environment's interpreter: the system's python3 where it is 3.11 or later and can make a
# venv (Debian's, built with PGO and LTO: a pure-Python loop takes 1.1 s on it and 1.4 to 1.6 s
# on pyenv's default build, which is first on PATH on these machines), else python3 on PATH
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, ensurepip; assert sys.version_info >= (3, 11)' \
	2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROXY := node_modules/.bin/configurable-http-proxy

.PHONY: help dev test test-fast fuzz setup test-setup helm lint bench clean

help:  ## list the targets and the variables of `make dev`
	@echo "Targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 20
	@echo
	@echo "make dev reads (see docs/embedded.rst):"
	@PYTHONPATH=. $(PYTHON) -c 'from glue.embedded.dev import VARIABLES; [print(f"  {k:22} {v}") for k, v in VARIABLES.items()]' 2>/dev/null \
	  || echo "  NOTEBOOKS_PORT NOTEBOOKS_CONFIG NOTEBOOKS_STATE NOTEBOOKS_REPOS NOTEBOOKS_DEMO_TOKEN NOTEBOOKS_LISTEN NOTEBOOKS_PUBLIC_URL NOTEBOOKS_SINGLE_ORIGIN NOTEBOOKS_PROXY GITLAB_URL"

# rfc3987-syntax's import name from its maintained fork, whose parsers are built on first
# use: about 1.5 s less in every single-user server's start (the shim's pyproject.toml says why)
IRI_SHIM := helm-chart/images/singleuser/rfc3987-syntax

# uv installs the environment (pip's resolver and installer took 34 s of a fresh `make test`,
# uv 15 s, the same versions); --compile-bytecode as pip would, since nothing writes bytecode
# where PYTHONDONTWRITEBYTECODE is set (it is on these machines)
$(STAMP): pyproject.toml $(IRI_SHIM)/pyproject.toml $(wildcard $(IRI_SHIM)/rfc3987_syntax/*.py)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode -e '.[test]' ./$(IRI_SHIM)
	touch $@

$(PROXY): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# the project's own bytecode, compiled here (only what changed since): every process that
# imports it then reads it compiled, among them the session's steps, git component and
# server, which run in a sandbox that cannot write it, and anything started where
# PYTHONDONTWRITEBYTECODE is set (it is on these machines); about 0.02 s less of each step's
# start, 0.08 s of the glue's, 0.1 to 0.3 s of the hub's (docs/development.rst)
setup: $(STAMP) $(PROXY)  ## install the Python environment and the proxy
	$(PY) -m compileall -q glue testing benchmarks > /dev/null

# the Debian packages first (npm among them), then the environment, the proxy and helm side
# by side: each is mostly one core's wait on the network or the disk
test-setup:  ## also the Debian packages and helm the tests need
	tests/setup/system-packages.sh
	@$(MAKE) --no-print-directory -j3 setup helm

helm:
	tests/setup/install-helm.sh >/dev/null

dev: setup  ## run the embedded default (NOTEBOOKS_CONFIG=my.yaml make dev: your config)
	tests/setup/system-packages.sh dev
	$(PY) -m glue.embedded

lint: setup  ## ruff, mypy, the import rules (pyproject's [tool.importlinter]), doc8
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/doc8 --quiet README.rst docs benchmarks/RESULTS.rst

# the suite runs in TEST_WORKERS processes (pytest-xdist), a module's tests in one of them
# (tests/conftest.py says which tests run apart, and in what order); PYTEST_ARGS adds to
# pytest's command line (e.g. --basetemp=/tmp/mine, -x)
# 5 by default: the suite is bound by its CPU, but some tests mostly wait (the culler's
# sweeps, an idle connection); with four, 91 of the cores' CPU-seconds went idle while two
# workers waited, with five 42 and the run was 20 to 40 s shorter; six left 13 idle but the
# same tests cost 13% more CPU. docs/development.rst has the figures
TEST_WORKERS ?= 5
PYTEST_XDIST = -n $(TEST_WORKERS) --dist loadscope

# the lint runs beside the suite (mypy alone takes 10 to 40 s); its output follows the
# suite's, and either failing fails `make test`
test: test-setup  ## install, lint, run the whole test suite
	@$(MAKE) --no-print-directory lint > $(VENV)/lint.log 2>&1 & linting=$$!; \
	$(VENV)/bin/pytest -q $(PYTEST_XDIST) $(PYTEST_ARGS); tested=$$?; \
	wait $$linting; linted=$$?; cat $(VENV)/lint.log; \
	if [ $$linted -ne 0 ]; then echo "make lint failed (above)"; fi; \
	exit $$(( tested || linted ))

test-fast: test-setup  ## install, run every test that needs no hub, server or browser (no lint)
	$(VENV)/bin/pytest -q -m "not hub" $(PYTEST_XDIST) $(PYTEST_ARGS)

fuzz: test-setup  ## the deep schemathesis run: 250 cases an operation and phase (make test: 40)
	NOTEBOOKS_FUZZ_EXAMPLES=250 $(VENV)/bin/pytest -q -n 0 tests/test_contract.py -k fuzz $(PYTEST_ARGS)

bench: setup  ## the benchmarks
	$(PY) -m benchmarks

# the state (hub database, secrets, workspaces) goes; .dev/repos, the user's projects, stays
clean:  ## remove what setup installed and the embedded default's state
	rm -rf $(VENV) node_modules .tools .dev/state test-artifacts
