"""The JupyterHub internals renku-notebooks relies on, against the pinned hub (jupyterhub==5.5.0).

Every function of glue/hub/internals.py runs here against a real `JupyterHub`
application, initialised as the hub initialises itself (its database in a
sqlite file, its roles, services and tokens, its real API handlers and
tornado application, served on a loopback port), with a proxy of JupyterHub's
documented `Proxy` API that keeps its routes in memory and a spawner of the
documented `Spawner` API that serves HTTP from this process. So is each hub
behaviour we rely on without a function (internals.py's docstring lists them),
and each of the hub's answers that the glue reads by its text
(glue.core.contracts `HUB_*`). An upgrade that changes one fails here, and
the failure names the internal.

The glue's fallback when a hub lacks our endpoints runs against a second such
hub whose `extra_handlers` omit ours, and end to end against the embedded
default started without them (testing/hub_config.py,
NOTEBOOKS_TEST_WITHOUT_HUB_HANDLERS): the glue still lists and stops servers,
a running server's stop is refused unless forced, and an unknown user is a
404 as before, never a fallback.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import re
import signal
import sqlite3
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from jupyterhub import __version__ as jupyterhub_version
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.app import JupyterHub
from jupyterhub.proxy import Proxy
from jupyterhub.spawner import LocalProcessSpawner, Spawner
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from traitlets.config import Config

from glue.core import contracts
from glue.core.config import validate
from glue.core.errors import AutosaveFailed, TooManyServers, UpstreamError
from glue.core.target import Target
from glue.hub import autosaveapi, internals, serversapi
from glue.hub.localspawner import LocalCommitSpawner
from glue.providers.access import Access
from glue.providers.select import make_provider
from glue.service import failures, hubapi
from glue.service.hubapi import Hub, HubCannotSave, HubError
from glue.service.servers import Servers
from testing import CHECKOUT
from testing.checks import wait_until
from testing.hub import Client, RunningHub
from testing.marks import starts_hub
from testing.worlds import local_config

TOKEN = "glue-service-token-" + "0" * 32
# what the glue's service role holds (glue.hub.setup.service_role), and what these tests add
# to create users and read the hub's rows
SCOPES = ["read:users", "read:servers", "servers", "delete:servers", "admin:auth_state",
          "admin:users", "list:users", "tokens"]
SERVER_LIMIT = 3
# the hub's slow_spawn_timeout and slow_stop_timeout: a start or stop that fails or ends at
# once is answered within it even on a loaded machine (0.3 s was not, once); the slow ones
# of these tests last longer
SLOW = 2.0
TARGET = Target("demo", "hello", "a" * 40, "")


def internal(what: str) -> str:
    """The failure message of a check: which internal changed, and where it is relied on."""
    return (
        f"JupyterHub {jupyterhub_version} changed {what}: glue/hub/internals.py (or the hub "
        f"answers in glue/core/contracts.py) relies on jupyterhub=={internals.JUPYTERHUB_VERSION}'s"
    )


# --- a hub in this process ----------------------------------------------------------------


class MemoryProxy(Proxy):
    """JupyterHub's documented API for proxy implementations, with the routes in a dict."""

    should_start = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.routes: dict[str, dict[str, Any]] = {}
        # for each add_user: whether the hub said it adds the route of a spawn then
        self.of_spawn: list[tuple[str, bool]] = []

    async def add_user(self, user: Any, server_name: str = "", client: Any = None) -> None:
        spawner = internals.loaded_spawners(user).get(server_name)
        self.of_spawn.append((server_name, internals.adding_route_of_spawn(spawner)))
        await super().add_user(user, server_name, client)

    async def add_route(self, routespec: str, target: str, data: dict[str, Any]) -> None:
        self.routes[routespec] = {"routespec": routespec, "target": target, "data": data}

    async def delete_route(self, routespec: str) -> None:
        self.routes.pop(routespec, None)

    async def get_all_routes(self) -> dict[str, dict[str, Any]]:
        return dict(self.routes)


class QuickSpawner(Spawner):
    """A documented Spawner whose server is an HTTP listener in this process. Its
    user_options steer it: `fail` (start raises that), `finishes_its_start` (seconds it
    takes, cancelled or not), `slow_start` and `slow_stop` (seconds),
    `left_behind` (stop raises and the spawner stays `active`, as CommitKubeSpawner's
    with a pod it could not delete), `autosave` ("fail": AutosaveFailed)."""

    _runner: web.AppRunner | None = None
    left_behind = False
    marker = 0
    stops = 0

    async def start(self) -> tuple[str, int]:
        if self.user_options.get("fail"):
            raise RuntimeError(self.user_options["fail"])
        finishing = self.user_options.get("finishes_its_start")
        if finishing:  # as CommitSpawnerMixin's steps: a step begun is finished, cancelled or not
            began = asyncio.ensure_future(asyncio.sleep(finishing))
            while not began.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(began)
        delay = self.user_options.get("slow_start")
        if delay:
            await asyncio.sleep(delay)
        app = web.Application()

        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app.router.add_route("*", "/{tail:.*}", ok)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return ("127.0.0.1", self._runner.addresses[0][1])

    async def stop(self, now: bool = False) -> None:
        self.stops += 1
        if self.user_options.get("slow_stop"):
            await asyncio.sleep(self.user_options["slow_stop"])
        if self.user_options.get("left_behind"):
            self.left_behind = True
            raise RuntimeError("the server could not be stopped")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def poll(self) -> int | None:
        return None if self._runner is not None else 0

    @property
    def active(self) -> bool:
        return bool(super().active or self.left_behind)

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.marker:
            state["marker"] = self.marker
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.marker = int(state.get("marker", 0))

    def run_post_stop_hook(self) -> Any:
        future = internals.spawn_future(self)
        type(self).post_stop_seen.append((future, future is not None and future.done()))
        return super().run_post_stop_hook()

    post_stop_seen: list[tuple[Any, bool]] = []  # class-wide, for the tests

    async def autosave(self) -> dict[str, Any]:
        """As CommitSpawnerMixin's: what the saving DELETE runs before the stop."""
        proxy = self.user.settings["proxy"]
        type(self).saves.append(self.proxy_spec in proxy.routes)
        if self.user_options.get("autosave") == "fail":
            raise AutosaveFailed("GitLab refused the push")
        return {"pushed": True}

    saves: list[bool] = []  # whether the route was open at each save


class ProbeHandler(APIHandler):
    """Keeps each request's handler (after the hub authenticated it), for direct calls."""

    seen: list[Any] = []

    def get(self) -> None:
        type(self).seen.append(self)
        self.write("{}")


@dataclass
class HubInProcess:
    app: Any
    server: HTTPServer
    port: int
    db_path: Path

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hub/api"

    @property
    def proxy(self) -> MemoryProxy:
        return self.app.proxy  # type: ignore[no-any-return]

    async def call(
        self, method: str, path: str, body: Any = None, token: str = TOKEN
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"token {token}"}
        async with aiohttp.ClientSession() as session, session.request(
            method, f"{self.api_url}/{path}", json=body, headers=headers
        ) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def user(self, name: str) -> Any:
        status, _ = await self.call("POST", f"users/{name}")
        assert status in (201, 409)
        return self.app.users[name]

    async def start(self, user: str, server: str, options: dict[str, Any] | None = None) -> Any:
        await self.user(user)
        status, body = await self.call("POST", f"users/{user}/servers/{server}", options or {})
        assert status in (201, 202), body
        spawner = self.app.users[user].spawners[server]
        await wait_for(lambda: spawner.ready, f"{user}:{server} ready")
        return spawner

    async def handler(self, token: str = TOKEN) -> Any:
        """A real API handler of this hub, after the hub authenticated `token`'s request."""
        ProbeHandler.seen.clear()
        status, _ = await self.call("GET", "test-probe", token=token)
        assert status == 200
        return ProbeHandler.seen[-1]

    def row(self, user: str, server: str) -> sqlite3.Row | None:
        """The server's row as the database has it (what a restarted hub would load)."""
        with sqlite3.connect(self.db_path) as db:
            db.row_factory = sqlite3.Row
            found: sqlite3.Row | None = db.execute(
                "SELECT spawners.* FROM spawners JOIN users ON users.id = spawners.user_id"
                " WHERE users.name = ? AND spawners.name = ?",
                (user, server),
            ).fetchone()
        return found

    async def close(self) -> None:
        self.server.stop()
        for user in list(self.app.users.values()):
            for spawner in list(user.spawners.values()):
                if isinstance(spawner, QuickSpawner) and spawner._runner is not None:
                    await spawner._runner.cleanup()
        self.app.db.close()


async def wait_for(predicate: Any, what: str, timeout: float = 10) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        result = predicate()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


async def hub_in_process(root: Path, *, ours: bool) -> HubInProcess:
    """A JupyterHub initialised as `jupyterhub` initialises itself, served here; `ours`:
    with our extra_handlers (glue.hub.setup registers the same lists)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "jupyterhub_config.py").write_text("")
    c = Config()
    c.JupyterHub.config_file = str(root / "jupyterhub_config.py")
    c.JupyterHub.db_url = f"sqlite:///{root / 'hub.sqlite'}"
    c.JupyterHub.cookie_secret = b"c" * 32
    c.JupyterHub.pid_file = str(root / "hub.pid")
    c.JupyterHub.proxy_class = MemoryProxy
    c.JupyterHub.spawner_class = QuickSpawner
    c.JupyterHub.authenticator_class = "dummy"
    c.Authenticator.allow_all = True
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = SERVER_LIMIT
    c.JupyterHub.tornado_settings = {"slow_spawn_timeout": SLOW, "slow_stop_timeout": SLOW}
    c.JupyterHub.services = [{"name": "glue", "api_token": TOKEN}]
    c.JupyterHub.load_roles = [{"name": "glue", "scopes": SCOPES, "services": ["glue"]}]
    handlers: list[tuple[str, Any]] = [(r"/api/test-probe", ProbeHandler)]
    if ours:
        handlers += [*autosaveapi.handlers(), *serversapi.handlers()]
    c.JupyterHub.extra_handlers = handlers
    app = JupyterHub(config=c)
    await app.initialize([])
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app.tornado_application)
    server.add_sockets(sockets)
    return HubInProcess(app, server, sockets[0].getsockname()[1], root / "hub.sqlite")


async def served(
    tmp_path_factory: pytest.TempPathFactory, ours: bool
) -> AsyncIterator[HubInProcess]:
    """A module's hub in this process, with our endpoints (`ours`) or as JupyterHub ships."""
    root = tmp_path_factory.mktemp("hub-ours" if ours else "hub-bare")
    hub = await hub_in_process(root, ours=ours)
    try:
        yield hub
    finally:
        await hub.close()


@pytest.fixture(scope="module")
@starts_hub
async def ours(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[HubInProcess]:
    async for hub in served(tmp_path_factory, ours=True):
        yield hub


@pytest.fixture(scope="module")
@starts_hub
async def bare(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[HubInProcess]:
    async for hub in served(tmp_path_factory, ours=False):
        yield hub


@pytest.fixture
async def glue_hub(request: pytest.FixtureRequest) -> AsyncIterator[Hub]:
    """The glue's hub client for the hub named by the test's parameter."""
    hub: HubInProcess = request.getfixturevalue(request.param)
    client = Hub(hub.api_url, TOKEN)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's once-only warnings about missing endpoints, from a clean slate."""
    monkeypatch.setattr(hubapi, "_warned", set())


def ours_options(target: Target = TARGET) -> dict[str, Any]:
    """user_options that make a server the glue's (glue.service.servers.server_model)."""
    return {"namespace": target.namespace, "project": target.project,
            "commit_sha": target.commit_sha}


# --- the pin ------------------------------------------------------------------------------


def test_the_pinned_jupyterhub_is_the_one_the_internals_are_written_for() -> None:
    pins = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    hub_extra = pins["project"]["optional-dependencies"]["hub"]
    assert f"jupyterhub=={internals.JUPYTERHUB_VERSION}" in hub_extra, (
        "pyproject pins another JupyterHub than glue/hub/internals.py was checked against: "
        "re-check every internal there (this module), then update JUPYTERHUB_VERSION"
    )
    assert jupyterhub_version == internals.JUPYTERHUB_VERSION, internal("its version")


def test_no_hub_module_reaches_past_internals() -> None:
    """Only glue/hub/internals.py touches JupyterHub internals: the other hub modules import
    only its public modules and name none of the internals it wraps."""
    public = {
        "jupyterhub.spawner": {"SimpleLocalProcessSpawner", "LocalProcessSpawner", "Spawner"},
        "jupyterhub.utils": {"maybe_future", "exponential_backoff"},
        "jupyterhub.apihandlers.base": {"APIHandler"},
        "jupyterhub.scopes": {"needs_scope"},
        # the documented extension point `JupyterHub.proxy_class` (glue.hub.phases)
        "jupyterhub.proxy": {"ConfigurableHTTPProxy"},
    }
    reaching = re.compile(
        r"\.spawners\b|\.orm_spawners?\b|(?<!internals)\.server_model\(|\._log_name\b"
        r"|\._spawn_future\b|\.db\b|\.proxy\.|\.settings\b|(?<!internals)\.find_user\("
        r"|get_scope_filter|\.users\[|in self\.users\b|\buser\.stop\(|subdomain_hook_idna"
    )
    found = []
    for path in sorted((CHECKOUT / "glue" / "hub").glob("*.py")):
        if path.name == "internals.py":
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            if module == "jupyterhub" or module.startswith("jupyterhub."):
                allowed = public.get(module, set())
                found += [f"{path.name}: from {module} import {a.name}"
                          for a in node.names if a.name not in allowed]
            elif isinstance(node, ast.Import):
                found += [f"{path.name}: import {a.name}" for a in node.names
                          if a.name.split(".")[0] == "jupyterhub"]
        code = "\n".join(line.split("#", 1)[0] for line in source.splitlines())
        found += [f"{path.name}: {m.group()}" for m in reaching.finditer(code)]
    assert not found, f"JupyterHub internals outside glue/hub/internals.py: {found}"


# --- a spawner and its user ---------------------------------------------------------------


async def test_log_name_is_how_the_hub_names_a_server(ours: HubInProcess) -> None:
    spawner = await ours.start("logname", "s1")
    assert internals.log_name(spawner) == "logname:s1", internal("Spawner._log_name")


async def test_the_spawn_future_runs_until_the_server_is_up(ours: HubInProcess) -> None:
    await ours.user("slow")
    status, _ = await ours.call("POST", "users/slow/servers/s1", {"slow_start": SLOW + 2})
    assert status == 202  # past slow_spawn_timeout: the hub answers while it spawns
    spawner = ours.app.users["slow"].spawners["s1"]
    future = internals.spawn_future(spawner)
    assert future is not None and not future.done(), internal("Spawner._spawn_future")
    await wait_for(lambda: spawner.ready, "slow:s1 ready")
    await wait_for(lambda: internals.spawn_future(spawner) is None, "the spawn's future cleared")


async def test_a_start_that_fails_stops_before_its_spawn_future_is_done(
    ours: HubInProcess,
) -> None:
    """What CommitSpawnerMixin.run_post_stop_hook tells a launch that never ran by."""
    await ours.user("failing")
    QuickSpawner.post_stop_seen.clear()
    status, _ = await ours.call("POST", "users/failing/servers/s1", {"fail": "boom"})
    assert status == 500
    seen = await wait_for(lambda: QuickSpawner.post_stop_seen, "run_post_stop_hook")
    future, done = seen[0]
    assert future is not None and not done, internal(
        "the order of a failed start: run_post_stop_hook before _spawn_future is done"
    )


async def test_the_users_settings_hold_what_the_mixin_reads(ours: HubInProcess) -> None:
    user = await ours.user("settings")
    assert internals.slow_spawn_timeout(user) == SLOW, internal(
        "User.settings['slow_spawn_timeout']"
    )
    assert internals.cookie_secret(user) == b"c" * 32, internal("User.settings['cookie_secret']")
    assert internals.cookie_secret(SimpleNamespace()) is None  # a spawner without a hub


async def test_loaded_spawners_and_stored_servers(ours: HubInProcess) -> None:
    spawner = await ours.start("lister", "s1")
    user = ours.app.users["lister"]
    loaded = internals.loaded_spawners(user)
    assert loaded.get("s1") is spawner, internal("User.spawners")
    assert loaded.get("nothing") is None and "nothing" not in loaded, internal(
        "User.spawners.get: it must not make a Spawner"
    )
    stored = internals.stored_servers(user)
    assert stored["s1"].name == "s1" and stored["s1"] is spawner.orm_spawner, internal(
        "User.orm_spawners"
    )
    # indexing makes a Spawner (and its row): why the wrappers say `.get` only
    user.spawners["made"]
    assert "made" in internals.loaded_spawners(user) and "made" in internals.stored_servers(user)


async def test_the_users_url_begins_each_server_url(ours: HubInProcess) -> None:
    spawner = await ours.start("urls", "s1")
    user = ours.app.users["urls"]
    assert internals.user_url(user) == "/user/urls/", internal("User.url")
    handler = await ours.handler()
    model = internals.server_model(handler, spawner)
    assert model["url"] == internals.user_url(user) + "s1/", internal("server_model's url")


async def test_user_options_and_state_reach_the_database(ours: HubInProcess) -> None:
    spawner = await ours.start("rows", "s1", {"keep": 1})
    internals.set_user_options(spawner, {"keep": 2, "learned": "x"})
    assert spawner.user_options == {"keep": 2, "learned": "x"}
    internals.commit(spawner)
    row = ours.row("rows", "s1")
    assert row and json.loads(row["user_options"]) == {"keep": 2, "learned": "x"}, internal(
        "Spawner.orm_spawner.user_options and Spawner.db.commit"
    )
    _, model = await ours.call("GET", "users/rows?include_stopped_servers=1")
    assert model["servers"]["s1"]["user_options"] == {"keep": 2, "learned": "x"}
    spawner.marker = 7
    internals.save_state(spawner)
    row = ours.row("rows", "s1")
    assert row and json.loads(row["state"]) == {"marker": 7}, internal(
        "Spawner.orm_spawner.state"
    )


async def test_forget_server_removes_it_as_the_hubs_removal_does(ours: HubInProcess) -> None:
    spawner = await ours.start("forget", "s1")
    status, _ = await ours.call("DELETE", "users/forget/servers/s1")
    assert status in (202, 204)
    await wait_for(lambda: not spawner.active, "forget:s1 stopped")
    user = ours.app.users["forget"]
    spawner = user.spawners["s1"]  # the stopped server's Spawner, loaded again
    internals.forget_server(spawner)
    assert "s1" not in internals.loaded_spawners(user), internal("User.spawners.pop")
    assert "s1" not in internals.stored_servers(user), internal("Spawner.db.delete(orm_spawner)")
    assert ours.row("forget", "s1") is None, internal("the deletion's commit")
    _, model = await ours.call("GET", "users/forget?include_stopped_servers=1")
    assert "s1" not in model["servers"]


async def test_stop_ended_server_closes_the_route_and_stops_it(ours: HubInProcess) -> None:
    spawner = await ours.start("ended", "s1")
    assert spawner.proxy_spec in ours.proxy.routes
    await internals.stop_ended_server(spawner)
    assert spawner.proxy_spec not in ours.proxy.routes, internal("Proxy.delete_user")
    assert not spawner.active and spawner.stops == 1, internal("User.stop")
    _, model = await ours.call("GET", "users/ended?include_stopped_servers=1")
    assert model["servers"]["s1"]["stopped"] is True


async def test_a_pause_stops_and_keeps_the_server_and_its_state(ours: HubInProcess) -> None:
    """What glue.hub.pauseapi relies on: a stop without removal keeps the named server and
    the state its spawner's get_state() gave after the stop; the hub unloads that Spawner,
    and load_spawner makes it again from the stored state (load_state)."""
    spawner = await ours.start("pauser", "s1")
    spawner.marker = 3
    await internals.stop_keeping_server(spawner)
    assert spawner.proxy_spec not in ours.proxy.routes, internal("Proxy.delete_user")
    assert not spawner.active and spawner.stops == 1, internal("User.stop")
    user = ours.app.users["pauser"]
    assert "s1" not in internals.loaded_spawners(user), internal("User.stop unloads it")
    assert internals.stored_state(internals.stored_servers(user)["s1"]) == {"marker": 3}, (
        internal("User.stop stores get_state() in orm_spawner.state")
    )
    again = internals.load_spawner(user, "s1")
    assert again is not None and again is not spawner and again.marker == 3, internal(
        "User.spawners[name] loads a stored server with load_state"
    )
    assert internals.load_spawner(user, "never") is None
    assert "never" not in internals.stored_servers(user)
    _, model = await ours.call("GET", "users/pauser?include_stopped_servers=1")
    assert model["servers"]["s1"]["stopped"] is True


async def test_routes_close_and_open_again(ours: HubInProcess) -> None:
    spawner = await ours.start("routes", "s1")
    user = ours.app.users["routes"]
    route = dict(ours.proxy.routes[spawner.proxy_spec])
    await internals.close_route(user, "s1")
    assert spawner.proxy_spec not in ours.proxy.routes, internal("Proxy.delete_user")
    await internals.open_route(user, "s1")
    assert ours.proxy.routes.get(spawner.proxy_spec) == route, internal("Proxy.add_user")
    await internals.close_route(SimpleNamespace(settings={}), "s1")  # no proxy: nothing


async def test_a_started_servers_address_and_state_reach_the_database(
    ours: HubInProcess,
) -> None:
    """What the local spawner stores before it waits for its server's first answer is what
    a restarted hub reads: the server's address and the spawner's state."""
    spawner = await ours.start("started", "s1")
    spawner.pid = 4242  # QuickSpawner keeps LocalProcessSpawner's state: the pid
    spawner.get_state = lambda: {"pid": 4242}
    internals.record_started(spawner, "127.0.0.1", 45678)
    with sqlite3.connect(ours.db_path) as db:
        row = db.execute(
            "SELECT server.ip, server.port, spawners.state FROM spawners"
            " JOIN servers AS server ON server.id = spawners.server_id WHERE spawners.name = 's1'"
            " AND spawners.user_id = (SELECT id FROM users WHERE name = 'started')"
        ).fetchone()
    assert row[:2] == ("127.0.0.1", 45678), internal("Spawner.server.ip/port")
    assert json.loads(row[2]) == {"pid": 4242}, internal("Spawner.orm_spawner.state")


async def test_the_route_of_a_spawn_is_told_from_a_route_added_again(ours: HubInProcess) -> None:
    """glue.hub.phases.TimedProxy times a launch's route only: the hub's own add at the end
    of a spawn, not a route added again for a running server."""
    await ours.start("routetime", "s1")
    assert ("s1", True) in ours.proxy.of_spawn, internal("Spawner._proxy_pending")
    ours.proxy.of_spawn.clear()
    await internals.open_route(ours.app.users["routetime"], "s1")
    assert ours.proxy.of_spawn == [("s1", False)], internal("Spawner._proxy_pending")


# --- our API handlers ---------------------------------------------------------------------


async def test_find_user_and_the_users_in_memory(ours: HubInProcess) -> None:
    user = await ours.user("finder")
    handler = await ours.handler()
    assert internals.find_user(handler, "finder") is user, internal("BaseHandler.find_user")
    assert internals.find_user(handler, "nobody-at-all") is None, internal("find_user's None")
    assert internals.user_in_memory(handler, user.id) is user, internal("the handler's users")
    # a user only in the database is not loaded by the in-memory lookup
    ours.app.users.pop(user.id)
    assert internals.user_in_memory(handler, user.id) is None, internal(
        "UserDict's `in`: it must not query the database"
    )
    assert internals.find_user(handler, "finder").id == user.id


async def test_server_models_and_scope_filters(ours: HubInProcess) -> None:
    spawner = await ours.start("reader", "s1")
    other = await ours.start("other-reader", "s1")
    handler = await ours.handler()
    model = internals.server_model(handler, spawner)
    assert {"name", "ready", "pending", "stopped", "url", "user_options", "started",
            "last_activity"} <= set(model), internal("APIHandler.server_model")
    stored = internals.stored_servers(ours.app.users["reader"])["s1"]
    stopped = internals.server_model(handler, stored, ours.app.users["reader"])
    assert stopped["stopped"] is True and stopped["name"] == "s1", internal(
        "APIHandler.server_model of an orm.Spawner"
    )
    readable = internals.scope_filter(handler, "read:servers")
    assert readable(spawner, kind="server") and readable(other, kind="server")
    # a user's own token reads their own servers only
    _, token = await ours.call("POST", "users/reader/tokens", {"scopes": ["read:servers!user"]})
    mine = internals.scope_filter(await ours.handler(token["token"]), "read:servers")
    assert mine(spawner, kind="server") and not mine(other, kind="server"), internal(
        "APIHandler.get_scope_filter"
    )


def test_the_hubs_handler_classes_we_register_again() -> None:
    assert internals.HubServerAPIHandler.__name__ == "UserServerAPIHandler"
    assert callable(getattr(internals.HubServerAPIHandler, "delete", None)), internal(
        "UserServerAPIHandler.delete"
    )
    assert callable(getattr(internals.HubRootAPIHandler, "get", None))
    assert callable(getattr(internals.HubUserListAPIHandler, "get", None))


async def test_the_saving_delete_saves_with_the_route_closed(ours: HubInProcess) -> None:
    """Our saving DELETE over the hub's own: the route is closed during the save, open again
    when it is refused (409, still running), and a saved server is stopped and removed."""
    kept = await ours.start("saver", "s1", {"autosave": "fail"})
    QuickSpawner.saves.clear()
    status, body = await ours.call("DELETE", "notebooks/saving/users/saver/servers/s1",
                                   {"remove": True})
    assert (status, body["error"]) == (409, "autosave_failed")
    assert QuickSpawner.saves == [False], internal("Proxy.delete_user before the save")
    assert kept.ready and kept.proxy_spec in ours.proxy.routes, internal("Proxy.add_user")
    saved = await ours.start("saver", "s2")
    status, _ = await ours.call("DELETE", "notebooks/saving/users/saver/servers/s2",
                                {"remove": True})
    assert status in (202, 204), internal("UserServerAPIHandler.delete under our path")
    user = ours.app.users["saver"]
    await wait_for(lambda: "s2" not in internals.stored_servers(user), "saver:s2 removed")
    assert not saved.active
    # the culler's root and user list, the hub's own handlers under our path
    status, root = await ours.call("GET", "notebooks/saving")
    assert status == 200 and root["version"] == jupyterhub_version
    status, users = await ours.call("GET", "notebooks/saving/users")
    assert status == 200 and "saver" in {u["name"] for u in users}


async def test_our_servers_read_equals_the_hubs_user_model(ours: HubInProcess) -> None:
    """glue.hub.serversapi (every internal of the handler side at once) answers what the
    hub's public user model says of the same user's servers."""
    await ours.start("same", "s1", ours_options())
    status, _ = await ours.call("DELETE", "users/same/servers/s1")
    assert status in (202, 204)
    await wait_for(lambda: "s1" not in internals.loaded_spawners(ours.app.users["same"]),
                   "same:s1 stopped")
    await ours.start("same", "s2")
    client = Hub(ours.api_url, TOKEN)
    try:
        mine = await client.servers("same")
        public = await client.servers_from_user_model("same")
    finally:
        await client.close()
    # the default server, which the glue never launches: the hub's user model loads a Spawner
    # for it (user_options {}), ours shows its row (None)
    for model in (mine, public):
        model["servers"].pop("", None)
    assert mine == public, internal("the server models of the hub's user model")
    assert mine["url"] == "/user/same/" and set(mine["servers"]) >= {"s1", "s2"}
    assert "auth_state" in mine


# --- the hub's configuration --------------------------------------------------------------


def test_the_idna_subdomains() -> None:
    assert internals.idna_subdomain("alice", "example.org", "user") == "alice.example.org"
    assert internals.idna_subdomain("jörg", "example.org", "user") == (
        "xn--jrg-sna.example.org"
    ), internal("subdomain_hook_idna")
    assert internals.idna_subdomain("glue", "example.org", "service") == (
        "glue--service.example.org"
    )


# --- what we rely on without a function ---------------------------------------------------


async def test_local_process_spawner_signals_through_its_signal_hook() -> None:
    """LocalCommitSpawner overrides LocalProcessSpawner._signal to signal into the sandbox:
    the base class's poll (of a server resumed from state) and stop must call it."""
    sent: list[int] = []

    class Recording(LocalProcessSpawner):  # type: ignore[misc]
        async def _signal(self, sig: int) -> bool:
            sent.append(sig)
            return signal.SIGINT not in sent  # alive until interrupted

    spawner = Recording(_mock=True, user=SimpleNamespace(name="alice"),
                        orm_spawner=SimpleNamespace(name="", server=None))
    spawner.pid, spawner.interrupt_timeout = 12345, 1
    assert await spawner.poll() is None
    await spawner.stop()
    assert sent[:3] == [0, 0, signal.SIGINT], internal("LocalProcessSpawner's use of _signal")
    assert "_signal" in LocalCommitSpawner.__dict__


async def test_the_removal_refuses_a_spawner_that_stays_active(ours: HubInProcess) -> None:
    """CommitKubeSpawner keeps a server whose pod a stop left behind by staying `active`."""
    spawner = await ours.start("sticky", "s1", {"left_behind": True})
    status, _ = await ours.call("DELETE", "users/sticky/servers/s1", {"remove": True})
    assert status in (202, 204)
    await wait_for(lambda: spawner.left_behind, "sticky:s1's stop")
    await asyncio.sleep(0.5)  # the removal runs after the stop
    user = ours.app.users["sticky"]
    assert "s1" in internals.stored_servers(user), internal(
        "the removal of an active spawner (User._delete_spawner)"
    )
    with pytest.raises(RuntimeError, match="is active and cannot be deleted"):
        await user._delete_spawner(spawner)
    assert spawner._runner is not None
    await spawner._runner.cleanup()


# --- the hub's answers the glue reads by their text (glue.core.contracts) -----------------


async def test_an_unknown_api_path_is_the_hubs_bare_404(ours: HubInProcess) -> None:
    status, body = await ours.call("GET", "notebooks/nothing-here/x")
    assert (status, body) == (404, contracts.HUB_NO_SUCH_PATH), internal(
        "the catch-all 404 (API404)"
    )
    # our handlers' own 404s say what is missing; the hub's server DELETE does not
    status, body = await ours.call("GET", "notebooks/servers/nobody-here")
    assert status == 404 and body != contracts.HUB_NO_SUCH_PATH and body["error"]
    await ours.user("known")
    status, body = await ours.call("GET", "notebooks/autosave/known/none")
    assert status == 404 and body != contracts.HUB_NO_SUCH_PATH and body["error"]
    status, body = await ours.call("DELETE", "notebooks/saving/users/nobody-here/servers/x",
                                   {"remove": True})
    assert (status, body) == (404, contracts.HUB_NO_SUCH_PATH), (
        "the hub's server DELETE answers an unknown user with a bare 404: Hub.stop's probe "
        "(Hub._saving_missing) exists for this; " + internal("UserServerAPIHandler.delete")
    )


@pytest.mark.parametrize("glue_hub", ["ours"], indirect=True)
async def test_the_launch_refusals_the_glue_reads(ours: HubInProcess, glue_hub: Hub) -> None:
    await ours.user("limits")
    for name in ("s1", "s2", "s3"):
        assert await glue_hub.start("limits", name, {}) in (201, 202)
    with pytest.raises(TooManyServers):
        await glue_hub.start("limits", "s4", {})
    status, body = await ours.call("POST", "users/limits/servers/s4", {})
    assert status == 400 and contracts.HUB_TOO_MANY_SERVERS in body["message"], internal(
        "the 400 past named_server_limit_per_user"
    )
    await wait_for(lambda: ours.app.users["limits"].spawners["s1"].ready, "limits:s1 ready")
    status, body = await ours.call("POST", "users/limits/servers/s1", {})
    assert status == 400 and contracts.HUB_ALREADY_RUNNING in body["message"], internal(
        "the 400 of a launch of a running server"
    )
    assert await glue_hub.start("limits", "s1", {}) is None


@pytest.mark.parametrize("glue_hub", ["ours"], indirect=True)
async def test_a_launch_while_it_stops_is_pending(ours: HubInProcess, glue_hub: Hub) -> None:
    spawner = await ours.start("stopping", "s1", {"slow_stop": SLOW + 2})
    status, _ = await ours.call("DELETE", "users/stopping/servers/s1")
    assert status == 202 and spawner.pending == "stop"
    status, body = await ours.call("POST", "users/stopping/servers/s1", {})
    assert status == 400 and contracts.HUB_PENDING in body["message"], internal(
        "the 400 of a launch of a stopping server"
    )
    assert await glue_hub.start("stopping", "s1", {}) is None
    await wait_for(lambda: not spawner.pending, "stopping:s1 stopped")


@pytest.mark.parametrize("glue_hub", ["ours"], indirect=True)
async def test_a_failed_spawn_is_said_so_on_the_progress_stream(
    ours: HubInProcess, glue_hub: Hub
) -> None:
    await ours.user("spawnfail")
    with pytest.raises(UpstreamError) as failed:
        await glue_hub.start("spawnfail", "s1", {"fail": "Clone failed: no such commit"})
    assert failed.value.status == 502  # the hub's 500: Servers._launch asks the progress then
    events = [e async for e in glue_hub.progress("spawnfail", "s1")]
    said = [e["message"] for e in events if e.get("failed")]
    assert said and said[0].startswith(contracts.HUB_SPAWN_FAILED), internal(
        "the progress stream's failed event"
    )
    assert failures.explain(said[0]).reason == "clone_failed"


@pytest.mark.parametrize("glue_hub", ["ours"], indirect=True)
async def test_a_stop_of_a_start_that_finishes_what_it_began_is_asked_again(
    ours: HubInProcess, glue_hub: Hub, tmp_path: Path
) -> None:
    """JupyterHub stops a starting server by cancelling its spawn and stopping it a second
    later: a spawn still pending then is its 500 (a stop clicked during a launch, on a loaded
    machine). The glue asks again until the spawn has settled, within the stop timeout."""
    await ours.user("hasty")
    options = {**ours_options(), "finishes_its_start": SLOW + 2}
    status, _ = await ours.call("POST", f"users/hasty/servers/{TARGET.server_name}", options)
    assert status == 202
    servers = servers_for(glue_hub, tmp_path)
    view = await servers.view("hasty")
    assert [(s["name"], s["status"]) for s in view.servers] == [(TARGET.server_name, "starting")]
    status, model = await servers.stop(view, TARGET)
    assert (status, model) == (204, None)
    assert (await servers.view("hasty")).find(TARGET) is None


# --- the glue without our endpoints -------------------------------------------------------


def servers_for(hub: Hub, tmp_path: Path) -> Servers:
    config = validate({
        "images": {"default": "registry.example.org/renku/default:1"},
        "profiles": [{"name": "small", "cpu": 0.5, "memory": "1G"}],
        "provider": {"kind": "local", "root": str(tmp_path)},
        "launch": {"stopTimeoutSeconds": 5},
    })
    provider = make_provider(config)
    return Servers(hub, Access(provider, 30), provider, config, base_url="/")


@pytest.mark.parametrize("glue_hub", ["bare"], indirect=True)
async def test_without_our_endpoints_the_glue_reads_the_user_model(
    bare: HubInProcess, glue_hub: Hub, fresh_warnings: None, caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    await bare.start("fallback", TARGET.server_name, ours_options())
    caplog.set_level(logging.WARNING, logger="glue.service.hubapi")
    model = await glue_hub.servers("fallback")
    assert model["name"] == "fallback" and model["url"] == "/user/fallback/"
    assert model["servers"][TARGET.server_name]["ready"] is True
    assert model["auth_state"] is None  # read, as our endpoint does for this service
    assert await glue_hub.servers("fallback") == model
    view = await servers_for(glue_hub, tmp_path).view("fallback")
    assert [(s["name"], s["status"]) for s in view.servers] == [(TARGET.server_name, "running")]
    assert view.url == "/user/fallback/"
    # what a stop would save: unknown
    assert await glue_hub.unsaved("fallback", TARGET.server_name, seconds=5) is None
    assert await glue_hub.unsaved("fallback", TARGET.server_name, seconds=5) is None
    said = [r.getMessage() for r in caplog.records if "has no /hub/api/" in r.getMessage()]
    assert len(said) == 2, said  # once for each endpoint, however often it was read
    assert "notebooks/servers" in said[0] and "notebooks/autosave" in said[1]
    # an unknown user is the hub's 404, through the fallback as through ours
    with pytest.raises(HubError) as unknown:
        await glue_hub.servers("nobody-here")
    assert unknown.value.hub_status == 404


@pytest.mark.parametrize("glue_hub", ["bare"], indirect=True)
async def test_without_our_endpoints_a_stop_is_refused_unless_forced(
    bare: HubInProcess, glue_hub: Hub, fresh_warnings: None, caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    spawner = await bare.start("stopper", TARGET.server_name, ours_options())
    servers = servers_for(glue_hub, tmp_path)
    caplog.set_level(logging.WARNING, logger="glue.service.hubapi")
    with pytest.raises(HubCannotSave):
        await glue_hub.stop("stopper", TARGET.server_name, saving=5)
    view = await servers.view("stopper")
    with pytest.raises(AutosaveFailed) as refused:
        await servers.stop(view, TARGET)
    assert refused.value.status == 409 and refused.value.code == "autosave_failed"
    assert "force=true" in refused.value.message and "nothing is lost" in refused.value.message
    assert spawner.ready and spawner.stops == 0  # still running, nothing stopped it
    said = [r.getMessage() for r in caplog.records if "notebooks/saving endpoint" in r.getMessage()]
    assert len(said) == 1, said
    assert await servers.stop(await servers.view("stopper"), TARGET, force=True) == (204, None)
    assert spawner.stops == 1 and (await servers.view("stopper")).find(TARGET) is None


@pytest.mark.parametrize("glue_hub", ["ours"], indirect=True)
async def test_with_our_endpoints_an_unknown_user_is_a_404_not_a_fallback(
    ours: HubInProcess, glue_hub: Hub, fresh_warnings: None, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="glue.service.hubapi")
    with pytest.raises(HubError) as unknown:
        await glue_hub.servers("nobody-here")
    assert unknown.value.hub_status == 404 and unknown.value.hub_body["error"] == "user_not_found"
    await ours.user("known-user")
    assert await glue_hub.unsaved("known-user", "none", seconds=5) is None  # ours: not running
    with pytest.raises(HubError) as stop:  # the bare 404 of the hub's own DELETE, probed
        await glue_hub.stop("nobody-here", "x", saving=5)
    assert stop.value.hub_status == 404 and not isinstance(stop.value, HubCannotSave)
    assert not any(glue_hub.missing(api) for api in hubapi.FALLBACKS)
    assert not [r for r in caplog.records if "has no /hub/api/" in r.getMessage()]


# --- end to end: the embedded default without our endpoints --------------------------------


@pytest.fixture(scope="module")
@starts_hub
def hub_without_ours(tmp_path_factory: pytest.TempPathFactory, repos: dict[str, Any]
                     ) -> Iterator[RunningHub]:
    config = {**local_config(repos["root"]), "culling": {"idleSeconds": 0}}
    running = RunningHub(tmp_path_factory.mktemp("hub-without-ours"), config,
                         extra_env={"NOTEBOOKS_TEST_WITHOUT_HUB_HANDLERS": "1"})
    try:
        yield running.start()
    finally:
        running.stop()


def test_the_glue_lists_and_stops_servers_on_a_hub_without_our_endpoints(
    hub_without_ours: RunningHub, repos: dict[str, Any]
) -> None:
    hub = hub_without_ours
    assert hub.admin("GET", "notebooks/servers/nobody").json() == contracts.HUB_NO_SUCH_PATH
    client = Client(hub, "olduser")
    sha = repos["shas"]["demo/hello"][0]
    path = f"demo/hello/{sha}"
    assert client.post(path).status_code in (201, 202)
    server = client.wait_running(path, timeout=250)
    # the user's own domain, as the hub's server models give it (not the glue's guess)
    assert server["url"].startswith("http://olduser.localhost:"), server["url"]
    listed = client.get("").json()["servers"]
    assert [(s["commit_sha"], s["status"]) for s in listed] == [(sha, "running")]
    page = client.get("", headers={"Accept": "text/html"})
    assert page.status_code == 200
    # a stop that cannot autosave first is refused, and the server keeps running
    refused = client.delete(path)
    assert refused.status_code == 409 and refused.json()["error"] == "autosave_failed"
    assert client.get(path).json()["status"] == "running"
    stopped = client.delete(path, params={"force": "true"})
    assert stopped.status_code in (202, 204), stopped.text
    wait_until(lambda: client.get(path).status_code == 404, 60, f"{path} removed")
    assert hub.log().count("has no /hub/api/notebooks/servers endpoint") == 1
    assert hub.log().count("has no /hub/api/notebooks/saving endpoint") == 1
