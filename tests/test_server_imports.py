"""The single-user server's start imports nothing that builds parsers it may never use, and
runs nothing it does not need.

jsonschema imports `rfc3987_syntax` for its `iri` and `iri-reference` format checks on
every import (jupyter_server -> jupyter_events -> jsonschema); rfc3987-syntax 1.1.0
builds its Lark parsers there, 1.4-1.7 s of each server start on this machine. The
environment serves that module from its maintained fork (helm-chart/images/singleuser/
rfc3987-syntax), which builds them when a value is first checked: the check stays.

JupyterLab's import runs `node yarn.js config` for npm's registry where node is on PATH;
the embedded default's server (glue.session.serverapp) imports it without that lookup.

JupyterHub's single-user extension imports the hub's ORM (SQLAlchemy's ORM, alembic) and
its page handlers; that server imports the ORM on its first use, which never comes in a
single-user server, and the handlers not at all. And once the server has stopped, its
process ends without tearing its modules down (`serverapp.end_without_teardown`).

The package's own modules are read compiled: `make setup` compiles them, because the
session's processes run in a sandbox that cannot write bytecode, and nothing writes it where
PYTHONDONTWRITEBYTECODE is set.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from testing import CHECKOUT

# what the server imports, then what jsonschema's format checker still says about IRIs
PROBE = """
import gc
import jupyterhub.singleuser
import jsonschema
import lark
print(sum(isinstance(o, lark.Lark) for o in gc.get_objects()))
checker = jsonschema.FormatChecker()
print(checker.conforms("http://例え.jp/a?b#c", "iri"), checker.conforms("http://a b", "iri"),
      checker.conforms("../x", "iri-reference"), checker.conforms("../x", "iri"))
"""


def test_the_server_imports_the_iri_check_without_building_it() -> None:
    run = subprocess.run(
        [sys.executable, "-P", "-c", PROBE], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-3000:]
    parsers, checks = run.stdout.splitlines()
    assert parsers == "0", f"{parsers} Lark parsers built while the server's modules were imported"
    # jsonschema's `iri` and `iri-reference` checks still run, on the fork's parsers
    assert checks == "True False True False", run.stdout


# how many times node ran after each step: JupyterLab imported (by the embedded default's
# server module, or directly), then npm's registry asked for as a build would ask
NODE_PROBE = """
import sys, pathlib
runs = lambda: len(pathlib.Path(sys.argv[1]).read_text().splitlines())
import {module}
import jupyterlab.labapp, jupyterlab.commands
print(runs(), jupyterlab.labapp.app_version)
jupyterlab.commands.AppOptions().registry
print(runs())
"""


def test_the_servers_start_asks_node_for_nothing(tmp_path: Path) -> None:
    """Counted by a `node` first on PATH that notes each run and runs the real one."""
    node = shutil.which("node")
    assert node, "the tests need node (tests/setup/system-packages.sh)"
    runs = tmp_path / "runs"
    runs.write_text("")
    (tmp_path / "bin").mkdir()
    counting = tmp_path / "bin" / "node"
    counting.write_text(f'#!/bin/sh\necho "$*" >> {runs}\nexec {node} "$@"\n')
    counting.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}

    def probe(module: str) -> list[str]:
        run = subprocess.run(
            [sys.executable, "-P", "-c", NODE_PROBE.format(module=module), str(runs)],
            cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        runs.write_text("")
        return run.stdout.split()

    # JupyterLab on its own asks at its import: the lookup the server skips is there
    plain_at_import, plain_version, _ = probe("jupyterlab")
    assert plain_at_import == "1"
    # the server's module: no node at the import, the same version; a build still asks
    at_import, version, after = probe("glue.session.serverapp")
    assert (at_import, version) == ("0", plain_version)
    assert after == "1"


# the server's module imported, then what is loaded, then the hub's modules used as the hub
# uses them (each the real one)
DATABASE_PROBE = """
import sys
import glue.session.serverapp
print(sorted(m for m in ("sqlalchemy.orm", "alembic", "jupyterhub.handlers") if m in sys.modules))
import jupyterhub.metrics, jupyterhub.orm
from jupyterhub.handlers.pages import HealthCheckHandler
from tornado.web import RequestHandler
print(jupyterhub.metrics.orm.User.__tablename__, jupyterhub.orm.Server.__tablename__,
      issubclass(HealthCheckHandler, RequestHandler), "alembic" in sys.modules)
"""


def test_the_servers_start_imports_nothing_of_the_hubs_database() -> None:
    run = subprocess.run(
        [sys.executable, "-P", "-c", DATABASE_PROBE],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    loaded, used = run.stdout.splitlines()
    assert loaded == "[]", f"imported at the server's start: {loaded}"
    # what the hub's modules hold is the real ORM and the real handlers once asked for
    assert used == "users servers True True", used


# a JupyterHub whose extension asks more of the hub's handlers than the placeholder holds:
# its first import fails once jupyterhub.log has bound the placeholder's class
FALLBACK_PROBE = """
import sys

class AsksMore:
    failed = False

    def find_spec(self, name, path=None, target=None):
        if name == "jupyterhub.singleuser.extension" and not self.failed:
            self.failed = True
            import jupyterhub.log
            raise ImportError("cannot import name 'more' from 'jupyterhub.handlers.pages'")
        return None

sys.meta_path.insert(0, AsksMore())
from glue.session.serverapp import SingleUser
from jupyterhub.singleuser.extension import JupyterHubSingleUser
from jupyterhub.handlers.pages import HealthCheckHandler
import jupyterhub.handlers, jupyterhub.orm
from tornado.web import RequestHandler
print(sys.meta_path[0].failed, issubclass(SingleUser, JupyterHubSingleUser),
      issubclass(HealthCheckHandler, RequestHandler), jupyterhub.orm.Server.__tablename__)
"""


def test_a_hub_that_asks_more_of_its_handlers_is_imported_whole() -> None:
    """The fallback of import_singleuser_without_the_hub_database: the extension imported
    whole, and the hub's real handlers and ORM, no placeholder, for whatever asks later."""
    run = subprocess.run(
        [sys.executable, "-P", "-c", FALLBACK_PROBE],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["True", "True", "True", "servers"], run.stdout


# a process that ends one way or the other ({end}): what of Python's exit happened
END_PROBE = """
import atexit, sys, time
from concurrent.futures import ThreadPoolExecutor
from glue.session import serverapp

class TornDown:
    def __del__(self):
        print("torn down", flush=True)

kept = TornDown()  # a module's global: only the modules' teardown deletes it
pool = ThreadPoolExecutor(1)
pool.submit(lambda: (time.sleep(0.3), print("the pool's work done", flush=True)))
# atexit runs its handlers last registered first; stdout is a pipe, and buffered
atexit.register(sys.stdout.write, "unflushed")
atexit.register(print, "atexit ran", flush=True)
sys.stdout.write("buffered ")
{end}
"""


def test_a_stopped_server_ends_as_python_would_without_the_teardown() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}

    def ended(end: str) -> tuple[int, str]:
        run = subprocess.run(
            [sys.executable, "-P", "-c", END_PROBE.format(end=end)],
            cwd=CHECKOUT, env=env, capture_output=True, text=True, timeout=60,
        )
        return run.returncode, run.stdout

    # Python's own exit: the probe sees each of its steps, the teardown among them
    code, out = ended("sys.exit(3)")
    assert code == 3 and "torn down" in out, out
    # the server's end: the same steps, in the same order, but the teardown
    code, out = ended("serverapp.end_without_teardown(3)")
    assert code == 3
    assert out.split("\n") == ["buffered the pool's work done", "atexit ran", "unflushed"], out


def test_the_default_image_is_ours_and_pre_pulled() -> None:
    """chartpress builds the lazy-import image and writes it as the launched default and
    as the image z2jh pre-pulls onto every node."""
    chart = CHECKOUT / "helm-chart" / "renku-notebooks"
    values = yaml.safe_load((chart / "values.yaml").read_text())["jupyterhub"]
    default = values["custom"]["notebooks"]["images"]["default"]
    pulled = values["singleuser"]["image"]
    assert default == f"{pulled['name']}:{pulled['tag']}"
    images = yaml.safe_load((CHECKOUT / "chartpress.yaml").read_text())["charts"][0]["images"]
    singleuser = images["singleuser"]
    assert Path(CHECKOUT / singleuser["dockerfilePath"]).is_file()
    assert {"jupyterhub.custom.notebooks.images.default", "jupyterhub.singleuser.image"} <= set(
        singleuser["valuesPath"]
    )


def test_every_module_of_the_package_is_read_compiled() -> None:
    """Python loads a module's bytecode instead of compiling its source when the bytecode's
    header names this Python's magic number and the source's mtime and size (PEP 552's
    timestamp form, Python's default); `make setup` writes it for every module."""
    stale = []
    for source in sorted((CHECKOUT / "glue").rglob("*.py")):
        compiled = Path(importlib.util.cache_from_source(str(source)))
        header = compiled.read_bytes()[:16] if compiled.is_file() else b""
        stat = source.stat()
        current = (
            importlib.util.MAGIC_NUMBER
            + (0).to_bytes(4, "little")
            + (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
            + (stat.st_size & 0xFFFFFFFF).to_bytes(4, "little")
        )
        if header != current:
            stale.append(str(source.relative_to(CHECKOUT)))
    assert not stale, f"compiled by `make setup`, but not current: {stale}"
