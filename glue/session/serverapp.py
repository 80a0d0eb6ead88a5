"""The embedded default's notebook server: JupyterHub's single-user server, serving on the
listening socket its spawner bound and holds.

Every session shares the machine's network, and runs code we do not trust. A port chosen
free and bound later by the server could be taken in between by another user's session,
and one freed by a server that died could be taken before the hub's next poll removes its
route: the proxy would then send that user's requests, on that user's own origin, to the
squatter. So the local spawner (glue.hub.localspawner) binds the port, hands the
listening socket to the server as an inherited file descriptor (contracts.LISTEN_FD_ENV),
and keeps its own copy until the server's route is gone. Nothing else can bind the port
meanwhile.

JupyterHub's own entry point (`python -m jupyterhub.singleuser`) with one change: its
ServerApp (`ExtensionApp.serverapp_class`) finds its port on that socket and serves on it,
instead of binding one. And two things less at its start, each a third-party import that
costs every launch and serves nothing in a single-user server: JupyterLab is imported
without asking node for npm's registry (`import_lab_without_a_registry_lookup`), and
JupyterHub's single-user extension without the hub's database layer
(`import_singleuser_without_the_hub_database`).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import socket
import sys
import threading
import types
from typing import Any, NoReturn

from jupyter_server.serverapp import ServerApp

from glue.core import contracts

# the hub's database layer (SQLAlchemy's ORM, alembic), which the single-user extension
# imports through jupyterhub.log -> jupyterhub.metrics, and the hub's page handlers, which
# it imports through jupyterhub.log only to name HealthCheckHandler in an isinstance check
HUB_DATABASE = "jupyterhub.orm"
HUB_HANDLERS = "jupyterhub.handlers"
HUB_PAGES = "jupyterhub.handlers.pages"


class HeldSocketServerApp(ServerApp):
    """ServerApp on the inherited socket: it has no port of its own to find or to bind."""

    _held: socket.socket | None = None

    def _socket(self) -> socket.socket:
        if self._held is None:
            self._held = contracts.inherited_listener()
            if self._held is None:
                raise RuntimeError(f"No listening socket was passed in {contracts.LISTEN_FD_ENV}.")
        return self._held

    def _find_http_port(self) -> None:
        self.port = self._socket().getsockname()[1]

    def _bind_http_server_tcp(self) -> bool:
        self.http_server.add_sockets([self._socket()])
        return True


def import_lab_without_a_registry_lookup() -> None:
    """JupyterLab's import (labapp's module-level `get_app_version()`) asks yarn for npm's
    registry, by running `node yarn.js config`, where node is on PATH, as it is on the
    embedded default's machine: about 0.3 s of CPU and of the user's wait at every start.
    The version it reads does not depend on the answer, and nothing else at the import
    uses it. So, while JupyterLab is imported here (its extension would import it next),
    that lookup answers as on a machine without node; later lookups (a build from the
    server's UI) ask yarn as before."""
    try:
        from jupyterlab import commands
    except ImportError:  # a server without JupyterLab: nothing to skip
        return
    ask_yarn = getattr(commands, "_yarn_config", None)
    if ask_yarn is None:  # a JupyterLab that asks otherwise, or not at all: imported as it is
        return
    commands._yarn_config = lambda logger: {"yarn config": {}, "npm config": {}}
    try:
        import jupyterlab.labapp  # noqa: F401
    finally:
        commands._yarn_config = ask_yarn


import_lab_without_a_registry_lookup()


class ImportedOnFirstUse(types.ModuleType):
    """A module in sys.modules whose real one is imported when an attribute is first asked
    of it, and then answers as the real one. Unlike importlib's LazyLoader, it is not loaded
    by the import system's own look at `__spec__` (3.11), which every `from . import` of it
    makes."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            sys.modules.pop(self.__name__, None)
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, name)


def import_singleuser_without_the_hub_database() -> None:
    """JupyterHub's single-user extension imports the hub's ORM (`jupyterhub.orm`: SQLAlchemy's
    ORM and alembic) and its page handlers (`jupyterhub.handlers`), which only the hub runs:
    about 0.2 s of CPU and of the user's wait at every start, a quarter of the server's
    imports. So, while the extension is imported, `jupyterhub.orm` is imported on its first
    use (jupyterhub.metrics keeps it for the hub's periodic user count, which a single-user
    server never runs), and `jupyterhub.handlers.pages` is a module holding only a class
    named HealthCheckHandler, which no handler of this server is. The page placeholders are
    gone after the import, so anything that asks for the hub's handlers later gets the real
    ones, and anything that uses the ORM gets the real one. A JupyterHub that asks more of
    its handlers at this import fails it, and is then imported whole: the hub's real
    handlers and ORM, and only jupyterhub.log, if that attempt imported it, keeps the
    placeholder's class for its isinstance check (no handler of this server is one; a
    second import of jupyterhub.metrics would register its metrics twice)."""
    if "jupyterhub.singleuser.extension" in sys.modules or HUB_HANDLERS in sys.modules:
        return
    handlers = types.ModuleType(HUB_HANDLERS)
    handlers.__path__ = []
    pages = types.ModuleType(HUB_PAGES)
    pages.HealthCheckHandler = type("HealthCheckHandler", (), {})  # type: ignore[attr-defined]
    placeholders = {HUB_HANDLERS: handlers, HUB_PAGES: pages}
    sys.modules.update(placeholders)
    sys.modules.setdefault(HUB_DATABASE, ImportedOnFirstUse(HUB_DATABASE))
    try:
        import jupyterhub.singleuser.extension  # noqa: F401
    except ImportError:  # imported whole below, by the module's own import
        pass
    finally:
        for name, module in placeholders.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
        hub = sys.modules.get("jupyterhub")
        if getattr(hub, "handlers", None) is handlers:
            delattr(hub, "handlers")


import_singleuser_without_the_hub_database()

from jupyterhub.singleuser.extension import JupyterHubSingleUser  # noqa: E402


class SingleUser(JupyterHubSingleUser):
    """JupyterHub's single-user server extension, launching HeldSocketServerApp; this
    module is its extension package (the server finds its extension point here)."""

    serverapp_class = HeldSocketServerApp

    @classmethod
    def get_extension_package(cls) -> str:
        return __name__


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    return [{"module": __name__, "app": SingleUser}]


def end_without_teardown(status: int) -> NoReturn:
    """End the process as Python's own exit does, but for its last step. Its steps: the
    non-daemon threads joined (threading's exit hooks first, so that a thread pool ends the
    work it was given: a notebook's save runs in one), the atexit handlers (logging's flush
    among them), stdout and stderr flushed. The step skipped is the teardown of every module
    and a last garbage collection, which releases nothing the process's end does not: 0.3 s
    of CPU at every server's stop, a third of its CPU from start to stop (quiet machine)."""
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def main() -> None:
    """The server until it stops; then, as it has shut its kernels, terminals and extensions
    down, the process ends (`end_without_teardown`). A start that fails raises as before."""
    SingleUser.launch_instance()
    end_without_teardown(0)


if __name__ == "__main__":
    main()
