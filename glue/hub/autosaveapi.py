"""The hub's own endpoints for a server's autosave, registered by glue.hub.setup.

The glue cannot reach a session's workspace; the spawner can. So the glue's
stops and the list's unsaved-work notice go through the hub:

    GET    /hub/api/notebooks/autosave/<user>/<server>   what a stop would save (read:servers)
    DELETE /hub/api/notebooks/saving/users/<user>/servers/<server>
           the hub's server DELETE, after the spawner's autosave (delete:servers)

They call the spawner's own methods (`autosave_status`, `autosave`): the
embedded default runs the step in the server's sandbox, CommitKubeSpawner
asks the pod's sidecar on its control port (glue/session/autosavecontrol.py; the same
step as the pod's `preStop`). Answers: 200 with the step's JSON; 409
`autosave_failed` with the reason (the server keeps running: nothing stops);
404 for a server that does not exist or is not ready (nothing runs to save);
501 `autosave_unsupported` for a spawner class without these methods (not
one of ours), which saves only at its own stop, if at all.

The saving DELETE is the one stop that can be refused: a stop that has begun
cannot (see glue.hub.localspawner.LocalCommitSpawner.stop). The glue's `DELETE`
uses it, and so does the culler (jupyterhub-idle-culler, run by `python -m
glue.hub.culler` with the root `/hub/api/notebooks/saving`: the hub's own
handlers for the version and the user list): an idle server whose autosave
fails stays, and the next round tries again. The server is saved once, right
before the hub stops it, after its route in the proxy is gone (as in the hub's
own stop; a refusal restores it).

JupyterHub calls `extra_handlers` deprecated in favour of services, but only
a handler inside the hub holds the spawner.
"""

from __future__ import annotations

import json
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope

from glue.core.contracts import AUTOSAVE_API, SAVING_API
from glue.core.errors import AutosaveFailed
from glue.hub import internals

PATH = rf"/api/{AUTOSAVE_API}/([^/]+)/([^/]+)"
# the hub's API with stops that autosave first: the culler's root (`--url`), the glue's stops
SAVING = f"/api/{SAVING_API}"


class AutosaveAPIHandler(APIHandler):
    @needs_scope("read:servers")
    async def get(self, user_name: str, server_name: str) -> None:
        await self._answer(user_name, server_name, "autosave_status")

    async def _answer(self, user_name: str, server_name: str, method: str) -> None:
        user = internals.find_user(self, user_name)
        spawner = internals.loaded_spawners(user).get(server_name) if user else None
        if spawner is None:
            return self._json(404, "server_not_found", f"{user_name} has no server {server_name}.")
        if not spawner.ready or spawner.pending:
            return self._json(404, "not_running", f"{internals.log_name(spawner)} is not running.")
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
        refuse(self, status, code, message)


def refuse(handler: APIHandler, status: int, code: str, message: str) -> None:
    """The hub's JSON error, with the glue's code and sentence."""
    handler.set_status(status)
    handler.set_header("Content-Type", "application/json")
    handler.write(json.dumps({"status": status, "error": code, "message": message}))


class SavingServerAPIHandler(internals.HubServerAPIHandler):
    """The hub's server DELETE, after the spawner's autosave (the glue's stops, the culler)."""

    @needs_scope("delete:servers")
    async def delete(self, user_name: str, server_name: str = "") -> None:
        user = internals.find_user(self, user_name)
        spawner = internals.loaded_spawners(user).get(server_name) if user else None
        if spawner is None and user is not None:  # a stopped server: the hub unloaded it
            stopped = internals.load_spawner(user, server_name)
            if stopped is not None and getattr(stopped, "hibernated", False):
                return await self._delete_paused(stopped, user_name, server_name)
        save = getattr(spawner, "autosave", None)
        if spawner is None or not spawner.ready or spawner.pending or save is None:
            return await super().delete(user_name, server_name)  # nothing runs to save
        # as in the hub's own stop, the browser's way in closes before the save, so no
        # edit arrives between the save and the stop; a refused stop opens it again
        await internals.close_route(user, server_name)
        try:
            await save()
        except BaseException as e:
            await internals.open_route(user, server_name)
            if not isinstance(e, AutosaveFailed):
                raise
            self.log.warning(
                "Kept %s running: its autosave failed (%s).", internals.log_name(spawner), e.message
            )
            return refuse(self, 409, e.code, e.message)
        # saved just now: the stop that follows at once need not save again (see
        # LocalCommitSpawner.stop); only this request's stop, so the flag ends with it
        spawner.saved_for_stop = True
        try:
            await super().delete(user_name, server_name)
        finally:
            spawner.saved_for_stop = False


    async def _delete_paused(self, spawner: Any, user_name: str, server_name: str) -> None:
        """A paused server's removal: its kept workspace is autosaved first (the spawner
        mounts it and starts its git component for that), then the hub's DELETE removes it
        and delete_forever its workspace. A failed save refuses (409): nothing is removed."""
        self.log.info("Autosaving paused %s before its removal", internals.log_name(spawner))
        try:
            await spawner.autosave_paused()
        except AutosaveFailed as e:
            self.log.warning(
                "Kept paused %s: its autosave failed (%s).", internals.log_name(spawner), e.message
            )
            return refuse(self, 409, e.code, e.message)
        await super().delete(user_name, server_name)


def handlers() -> list[tuple[str, Any]]:
    """For `c.JupyterHub.extra_handlers` (the hub adds its /hub prefix)."""
    return [
        (PATH, AutosaveAPIHandler),
        (SAVING + "/?", internals.HubRootAPIHandler),
        (SAVING + "/users", internals.HubUserListAPIHandler),
        (SAVING + r"/users/([^/]+)/servers/([^/]*)", SavingServerAPIHandler),
    ]
