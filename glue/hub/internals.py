"""Every JupyterHub internal that renku-notebooks touches, and nothing else.

JupyterHub is pinned (`jupyterhub==5.5.0`, the Zero-to-JupyterHub 4.4.0 hub
image's); every function here says which of that version's behaviours it relies
on and why we need it. tests/test_hub_internals.py runs each of them against
the pinned hub (a real `JupyterHub` application with its in-memory database,
its real API handlers and a proxy of its documented `Proxy` API), so an
upgrade that changes one fails there, naming the internal, instead of in a
user's stop. Every other hub module goes through this one; the same test
checks that none of them reaches past it.

What counts as internal: whatever JupyterHub does not document for spawner,
authenticator or extra-handler authors, and may change in any release:

- the hub's in-memory registries: `User.spawners` (the loaded Spawner objects;
  indexing creates one), `User.orm_spawners` (stored servers), the handler's
  `users` (the `UserDict` of loaded users) and `BaseHandler.find_user`;
- the database session behind a spawner (`Spawner.db`, `Spawner.orm_spawner`):
  writing its `user_options` and `state`, deleting its row, committing;
- the tornado settings a `User` carries (`User.settings`: the proxy, the
  cookie secret, `slow_spawn_timeout`) and `User.url`, `User.stop`;
- the proxy's `add_user` / `delete_user` routes (documented for proxy
  implementers, not for callers);
- private spawner attributes: `_log_name`, `_spawn_future`, `_proxy_pending`;
- the REST handlers' helpers `server_model` and `get_scope_filter`, and the
  hub's own handler classes, which we register again under our paths;
- `jupyterhub.utils.subdomain_hook_idna` (the documented API is the config
  value `subdomain_hook = "idna"`, not the function we wrap).

What stays where it is, as public API: the `Spawner`, `LocalProcessSpawner` and
`Authenticator` base classes' documented traits and hooks (`start`, `stop`,
`poll`, `get_state`, `load_state`, `clear_state`, `progress`,
`apply_user_options`, `delete_forever`, `run_post_stop_hook`, `add_poll_callback`,
`user_options`, `server`, `ready`, `pending`, `active`, `proc`, `pid`, ...,
`Spawner.user.name`, `.id` and `.get_auth_state()`), `APIHandler` with
`jupyterhub.scopes.needs_scope` for `extra_handlers`, the helpers of
`jupyterhub.utils` that spawners are written with (`maybe_future`,
`exponential_backoff`), and the hub's configuration traits.

Relied on without a function here, and tested beside them:

- `LocalProcessSpawner._signal(sig)`: its `poll` (of a server resumed from
  state) and `stop` signal through it, and LocalCommitSpawner overrides it to
  signal into the sandbox (bubblewrap's pid is not the server's);
- the hub's removal (`DELETE .../servers/<name>` with `{"remove": true}`)
  refuses a spawner that is still `active` ("is active and cannot be
  deleted"): CommitKubeSpawner keeps a server whose pod a stop left behind so;
- when a start fails, the hub runs `run_post_stop_hook` before the spawn's
  `_spawn_future` is done (CommitSpawnerMixin removes such a server then);
- a hub without our `extra_handlers` answers their paths with its catch-all
  `{"status": 404, "message": "Not Found"}` (`API404`).

KubeSpawner's own internals (its reflector, `_make_delete_pod_request`, its
label builders) stay in glue.hub.kubespawner, pinned with
jupyterhub-kubespawner and exercised by tests/test_kube_manifest.py.

The hub's REST answers that the glue service reads by their text (the 400s of a
launch, the "Spawn failed:" of the progress stream, the catch-all 404) belong
to the same list, but live in glue.core.contracts: the service may not import
glue.hub. tests/test_hub_internals.py checks them against the same hub.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from jupyterhub.apihandlers.hub import RootAPIHandler
from jupyterhub.apihandlers.users import UserListAPIHandler, UserServerAPIHandler
from jupyterhub.utils import subdomain_hook_idna

# the hub these internals are written against (pyproject's `hub` extra pins it)
JUPYTERHUB_VERSION = "5.5.0"

#: The hub's own API handlers, registered again below `SAVING_API` (glue.hub.autosaveapi): the
#: culler's root (`GET /`: the hub's version), its user list, and the server DELETE that our
#: saving DELETE runs after its autosave. Their behaviour is the hub's: whatever 5.5 does there.
HubRootAPIHandler: Any = RootAPIHandler
HubUserListAPIHandler: Any = UserListAPIHandler
HubServerAPIHandler: Any = UserServerAPIHandler


# --- a spawner and its user ---------------------------------------------------------------


def log_name(spawner: Any) -> str:
    """`user:server` as the hub's own log lines name a server (`Spawner._log_name`), so ours
    read the same: one grep finds a server's whole story."""
    return str(spawner._log_name)


def spawn_future(spawner: Any) -> asyncio.Future[Any] | None:
    """The running spawn of this server (`Spawner._spawn_future`, set by the hub's
    `spawn_single_user`), None when none began. A start that fails at once reaches
    `run_post_stop_hook` while it is not done yet: that is how the mixin tells a launch
    that never ran from a server that stopped."""
    future = getattr(spawner, "_spawn_future", None)
    return future if isinstance(future, asyncio.Future) else None


def slow_spawn_timeout(user: Any) -> float:
    """Seconds the hub's launch request waits for a spawn before answering 202 (the tornado
    setting `slow_spawn_timeout`, 10 by JupyterHub's default), read from `User.settings`: a
    failure within it was answered to the launch itself."""
    return float(user.settings.get("slow_spawn_timeout", 10))


def cookie_secret(user: Any) -> bytes | str | None:
    """The hub's cookie secret (`User.settings["cookie_secret"]`): the one secret the hub keeps
    across restarts that no session sees, from which autosave branches' keys derive."""
    return (getattr(user, "settings", None) or {}).get("cookie_secret")


def loaded_spawners(user: Any) -> Mapping[str, Any]:
    """The user's Spawner objects the hub has loaded, by server name (`User.spawners`).

    Only `.get()`, `.items()` and `in`: indexing a name that is not there makes a new
    Spawner (the hub's `_SpawnerDict`), which a read must never do."""
    return user.spawners


def load_spawner(user: Any, name: str) -> Any | None:
    """The user's Spawner of that stored server, loaded from its row when the hub holds none
    (indexing `User.spawners` makes one and runs its `load_state` on the stored state, as
    the hub's own server DELETE does; the hub unloads a Spawner at its stop). None when the
    user has no such server: nothing is made for a name that is not stored."""
    if name in user.spawners:
        return user.spawners[name]
    return user.spawners[name] if name in user.orm_spawners else None


def stored_servers(user: Any) -> Mapping[str, Any]:
    """The user's servers in the hub's database, by name (`User.orm_spawners`, orm.Spawner
    rows): stopped ones the hub has not loaded a Spawner for are only here."""
    return user.orm_spawners


def user_url(user: Any) -> str:
    """Where the user's servers are (`User.url`): `<base>user/<name>/`, a whole URL on the
    user's own domain where the hub gives users one (`subdomain_host`). A server's URL is
    this plus its escaped name and `/` (the hub's `server_model`)."""
    return str(user.url)


def set_user_options(spawner: Any, options: dict[str, Any]) -> None:
    """Replace the server's user_options on the Spawner and on its database row
    (`Spawner.orm_spawner.user_options`), which the hub's server model shows (also for a
    stopped server) and a restarted hub loads again. The hub commits with a start and
    stop; anything else calls `commit` after."""
    spawner.user_options = spawner.orm_spawner.user_options = options


def adding_route_of_spawn(spawner: Any) -> bool:
    """Whether the hub is adding this server's route at the end of its spawn
    (`Spawner._proxy_pending`, set by `BaseHandler.finish_user_spawn` around
    `proxy.add_user`), not again for a running server (the hub's route check at its start)."""
    return bool(getattr(spawner, "_proxy_pending", False))


def commit(spawner: Any) -> None:
    """Commit the hub's database session (`Spawner.db`) now, for a change made outside the
    hub's start and stop (the poll's memory and disk watch, a left-behind pod's retries)."""
    spawner.db.commit()


def save_state(spawner: Any) -> None:
    """Store `get_state()` in the server's row now (`orm_spawner.state`), as the hub does
    after each start and stop: a change between them would else be lost with the hub."""
    spawner.orm_spawner.state = spawner.get_state()
    spawner.db.commit()


def record_started(spawner: Any, ip: str, port: int) -> None:
    """Store where a server whose process start() began runs (`Spawner.server.ip`/`.port`,
    which the hub sets from start()'s return) and the spawner's state (its pid), committed
    now: a start that then waits for the server's first answer leaves a hub killed meanwhile
    the same record as a start that returned, so the restarted hub finds that server."""
    spawner.server.ip = ip
    spawner.server.port = port
    spawner.orm_spawner.state = spawner.get_state()
    spawner.db.commit()


def forget_server(spawner: Any) -> None:
    """Remove the server from the hub, as the hub's `DELETE ... {"remove": true}` does once
    the stop is done and `delete_forever()` ran: its row deleted, its Spawner unloaded, the
    deletion committed. Nothing is stopped here: the caller made sure nothing runs."""
    user = spawner.user
    spawner.db.delete(spawner.orm_spawner)
    user.spawners.pop(spawner.name, None)
    spawner.db.commit()


async def stop_ended_server(spawner: Any) -> None:
    """Stop, in the hub, a server the poll found gone: its route out of the proxy
    (`Proxy.delete_user`), then `User.stop`, as the hub itself does when a request meets a
    dead server. JupyterHub acts on a dead server only then, or at its own start."""
    await stop_keeping_server(spawner)


async def stop_keeping_server(spawner: Any) -> None:
    """Stop a server in the hub WITHOUT removing it (a pause): its route out of the proxy,
    then `User.stop`, which calls the spawner's `stop()`, then `clear_state()` and stores
    `get_state()` in the server's row (`orm_spawner.state`). The hub keeps the stopped
    named server, its user_options and that state, also across its restart."""
    await close_route(spawner.user, spawner.name)
    await spawner.user.stop(spawner.name)


def stored_state(orm_spawner: Any) -> dict[str, Any]:
    """The spawner state the hub stored for a server (`orm.Spawner.state`), loaded or not:
    how many paused servers a user has, without loading their spawners."""
    state = orm_spawner.state
    return state if isinstance(state, dict) else {}


# --- the proxy --------------------------------------------------------------------------


async def close_route(user: Any, server_name: str) -> None:
    """Take the server's route out of the proxy (`Proxy.delete_user`, the hub's proxy from
    `User.settings["proxy"]`): no browser request reaches it, as in the hub's own stop,
    which does this first. Nothing when the hub has no proxy (a bare test User)."""
    proxy = user.settings.get("proxy")
    if proxy is not None:
        await proxy.delete_user(user, server_name)


async def open_route(user: Any, server_name: str) -> None:
    """Put the server's route back into the proxy (`Proxy.add_user`, as after a spawn): a
    stop that was refused after `close_route` leaves the server reachable as before."""
    await user.settings["proxy"].add_user(user, server_name)


# --- our API handlers (APIHandler subclasses in `extra_handlers`) ------------------------


def find_user(handler: Any, name: str) -> Any | None:
    """The hub's User of that name, loaded from the database when not in memory
    (`BaseHandler.find_user`, what the hub's own handlers do); None when there is none."""
    return handler.find_user(name)


def user_in_memory(handler: Any, user_id: int) -> Any | None:
    """The User the hub holds in memory under that id (`handler.users`, the hub's `UserDict`),
    without a query; None when it is not loaded. `in` checks the dict only, and indexing a
    present id reads no database; the `UserDict.get` ruff would suggest queries the database."""
    users = handler.users
    return users[user_id] if user_id in users else None  # noqa: SIM401


def server_model(handler: Any, spawner: Any, user: Any = None) -> dict[str, Any]:
    """The hub's own JSON model of a server (`APIHandler.server_model`), for a loaded Spawner
    or, with its `user`, for a stored orm.Spawner (a stopped server): the very fields the
    hub's `GET /users/<name>` answers, so the glue reads ours and the hub's alike."""
    if user is None:
        return handler.server_model(spawner)
    return handler.server_model(spawner, user=user)


def scope_filter(handler: Any, scope: str) -> Callable[..., bool]:
    """The request's filter for one scope (`APIHandler.get_scope_filter`), called with an
    object and its `kind` ("server", "user"): the hub's own check of which servers and
    users a token may see, so our answers show no more than the hub's."""
    return handler.get_scope_filter(scope)


# --- the hub's configuration ------------------------------------------------------------


def idna_subdomain(name: str, domain: str, kind: str) -> str:
    """`<name>.<domain>` the hub's "idna" way (`jupyterhub.utils.subdomain_hook_idna`): DNS-safe
    labels for any user name, with a hash where a name cannot be one. We wrap it to keep
    services on the hub's own domain (glue.hub.setup.user_subdomain)."""
    return str(subdomain_hook_idna(name, domain, kind))
