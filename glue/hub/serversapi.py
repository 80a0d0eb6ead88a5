"""The hub's own read of one user's servers for the glue, registered by glue.hub.setup.

    GET /hub/api/notebooks/servers/<user>   (read:servers)
    -> {"name": <user>, "url": <the user's URL: on their own domain where the hub
        gives users one (subdomain_host)>, "servers": {<name>: <the hub's server model>, ...},
        "auth_state": {...}}   (auth_state only for a token with admin:auth_state)

Every status read of the glue is one read of the user's servers. The hub's
public `GET /hub/api/users/<user>?include_stopped_servers=1` loads the user
from the database on each call, with its roles, groups and spawners (about
half of the hub's time for that answer, measured with py-spy), and builds
fields the glue never reads. The hub already holds every user it serves in
memory (`JupyterHub.users`, the state its own handlers answer from), so this
handler answers from there: the same server models (the hub's own
`server_model`, stopped servers included), the same scope checks, a fraction
of the work. A user not yet in memory is found the hub's usual way.
"""

from __future__ import annotations

import json
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope

from glue.core.contracts import SERVERS_API
from glue.hub import internals

PATH = rf"/api/{SERVERS_API}/([^/]+)"

# user name -> the hub's user id, so a read finds the in-memory user without a query;
# checked against the user's current name at each read (renames, deletions fall back)
_ids: dict[str, int] = {}


class ServersAPIHandler(APIHandler):
    @needs_scope("read:servers")
    async def get(self, user_name: str) -> None:
        user = self._in_memory(user_name) or internals.find_user(self, user_name)
        if user is None:
            self.set_status(404)
            self._write({"status": 404, "error": "user_not_found", "message": "No such user."})
            return
        _ids[user_name] = user.id
        # as the hub's own user model does
        readable = internals.scope_filter(self, "read:servers")
        servers = {
            name: internals.server_model(self, spawner)
            for name, spawner in internals.loaded_spawners(user).items()
            if readable(spawner, kind="server")
        }
        for name, orm_spawner in internals.stored_servers(user).items():  # stopped, not loaded
            if name not in servers and readable(orm_spawner, kind="server"):
                servers[name] = internals.server_model(self, orm_spawner, user)
        model: dict[str, Any] = {
            "name": user.name,
            "url": internals.user_url(user),
            "servers": servers,
        }
        if internals.scope_filter(self, "admin:auth_state")(user, kind="user"):
            model["auth_state"] = await user.get_auth_state()
        self._write(model)

    def _in_memory(self, user_name: str) -> Any:
        uid = _ids.get(user_name)
        user = None if uid is None else internals.user_in_memory(self, uid)
        return user if user is not None and user.name == user_name else None

    def _write(self, model: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(model))


def handlers() -> list[tuple[str, Any]]:
    """For `c.JupyterHub.extra_handlers` (the hub adds its /hub prefix)."""
    return [(PATH, ServersAPIHandler)]
