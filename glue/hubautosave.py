"""The hub's own endpoints for a server's autosave, registered by glue.hubconfig.

The glue cannot reach a session's workspace; the spawner can. So a stop through
the glue first asks the hub, while the server still runs:

    GET  /hub/api/notebooks/autosave/<user>/<server>   what a stop would save (read:servers)
    POST /hub/api/notebooks/autosave/<user>/<server>   save it now (delete:servers)

Both call the spawner's own methods (`autosave_status`, `autosave`): the
embedded default runs the step in the server's sandbox (the same autosave its
`stop()` runs), CommitKubeSpawner asks the pod's sidecar on its control port
(glue/autosavecontrol.py; the same step as the pod's `preStop`). Answers: 200
with the step's JSON; 409 `autosave_failed` with the reason (the server keeps
running); 404 for a server that does not exist or is not ready (nothing runs
to save); 501 `autosave_unsupported` for a spawner class without these
methods (not one of ours), which saves only at its own stop, if at all.

The culler (jupyterhub-idle-culler, run by `python -m glue.culler`) reads the
hub's API under `/hub/api/notebooks/culler`: the hub's own handlers for the
version and the user list, and a server DELETE that autosaves first. When
that autosave fails the DELETE is 409 and nothing stops: the culler logs it
and tries again at its next round, while the server stays idle. A stop that
has begun cannot be refused (see LocalCommitSpawner.stop), so this is the
place.

JupyterHub calls `extra_handlers` deprecated in favour of services, but only
a handler inside the hub holds the spawner.
"""

from __future__ import annotations

import json
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.apihandlers.hub import RootAPIHandler
from jupyterhub.apihandlers.users import UserListAPIHandler, UserServerAPIHandler
from jupyterhub.scopes import needs_scope

from .errors import AutosaveFailed

PATH = r"/api/notebooks/autosave/([^/]+)/([^/]+)"
# the culler's API root (`--url`), below the hub's own
CULLER_API = "/api/notebooks/culler"


class AutosaveAPIHandler(APIHandler):
    @needs_scope("read:servers")
    async def get(self, user_name: str, server_name: str) -> None:
        await self._answer(user_name, server_name, "autosave_status")

    @needs_scope("delete:servers")
    async def post(self, user_name: str, server_name: str) -> None:
        await self._answer(user_name, server_name, "autosave")

    async def _answer(self, user_name: str, server_name: str, method: str) -> None:
        user = self.find_user(user_name)
        spawner = user.spawners.get(server_name) if user else None
        if spawner is None:
            return self._json(404, "server_not_found", f"{user_name} has no server {server_name}.")
        if not spawner.ready or spawner.pending:
            return self._json(404, "not_running", f"{spawner._log_name} is not running.")
        act = getattr(spawner, method, None)
        if act is None:
            return self._json(
                501,
                "autosave_unsupported",
                "This spawner cannot autosave a running server; it saves only when it stops.",
            )
        try:
            answer = await act()
        except AutosaveFailed as e:
            return self._json(409, e.code, e.message)
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(answer))

    def _json(self, status: int, code: str, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"status": status, "error": code, "message": message}))


class SavingServerAPIHandler(UserServerAPIHandler):
    """The hub's server DELETE, after the spawner's autosave (for the culler)."""

    @needs_scope("delete:servers")
    async def delete(self, user_name: str, server_name: str = "") -> None:
        user = self.find_user(user_name)
        spawner = user.spawners.get(server_name) if user else None
        save = getattr(spawner, "autosave", None)
        if spawner is not None and spawner.ready and not spawner.pending and save:
            try:
                await save()
            except AutosaveFailed as e:
                self.log.warning(
                    "Kept %s running: its autosave failed (%s); a cull retries it.",
                    spawner._log_name,
                    e.message,
                )
                self.set_status(409)
                self.set_header("Content-Type", "application/json")
                self.write(
                    json.dumps({"status": 409, "error": e.code, "message": e.message})
                )
                return
        await super().delete(user_name, server_name)


def handlers() -> list[tuple[str, Any]]:
    """For `c.JupyterHub.extra_handlers` (the hub adds its /hub prefix)."""
    return [
        (PATH, AutosaveAPIHandler),
        (CULLER_API + "/?", RootAPIHandler),
        (CULLER_API + "/users", UserListAPIHandler),
        (CULLER_API + r"/users/([^/]+)/servers/([^/]*)", SavingServerAPIHandler),
    ]
