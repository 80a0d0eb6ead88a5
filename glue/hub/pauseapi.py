"""The hub's pause of a server, and the culler's idle action, registered by glue.hub.setup.

    POST   /hub/api/notebooks/pause/users/<user>/servers/<server>   (delete:servers)
           -> 200 {"hibernated_at": <seconds since the epoch>, "disk_bytes": <int or null>}
    DELETE /hub/api/notebooks/culling/users/<user>/servers/<server>
           the culler's stop: a pause (`culling.idleAction: hibernate`, while the user has
           fewer than `launch.hibernatedPerUser` paused servers), else the saving DELETE

A pause is a hub stop WITHOUT the named server's removal (internals.stop_keeping_server):
the hub keeps the server, its user_options (image, profile) and its spawner state, and the
spawner keeps the whole workspace and records the pause in its state (`pausing`,
CommitSpawnerMixin.paused). The embedded default autosaves nothing then: the kept workspace
holds more than a save could (ignored files, installed packages), and its removal autosaves
it (glue.hub.autosaveapi); the Kubernetes spawner saves before its pod goes, since no pod
mounts a paused server's claim later. A resume is the hub's ordinary start of that server.

Refused, with the glue's JSON error: 404 `server_not_found`; 409 `server_starting` while it
starts or stops (nothing half-started is frozen), `not_running` when it is not running
(paused already, failed), `too_many_paused` at the user's limit of paused servers; 501
`pause_unsupported` for a spawner that cannot keep a workspace (`can_pause` False: not one
of ours, or one whose workspace would go with its stop), which the culler then stops and
removes after its autosave instead.
"""

from __future__ import annotations

import json
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope

from glue.core.contracts import CULLING_API, HIBERNATED_AT, PAUSE_API
from glue.hub import internals
from glue.hub.autosaveapi import SavingServerAPIHandler, refuse

PATH = rf"/api/{PAUSE_API}/users/([^/]+)/servers/([^/]+)"
# the culler's API root (`--url`, glue.hub.culler): the hub's own version and user list, and
# a server DELETE that pauses or stops as `culling.idleAction` says
CULLING = f"/api/{CULLING_API}"


def paused_count(user: Any) -> int:
    """How many paused servers the user has (their stored spawner state says)."""
    return sum(
        1
        for orm_spawner in internals.stored_servers(user).values()
        if internals.stored_state(orm_spawner).get(HIBERNATED_AT) is not None
    )


def refusal(user: Any, spawner: Any, name: str) -> tuple[int, str, str] | None:
    """Why this server cannot be paused now (status, code, sentence); None when it can."""
    if spawner is None:
        return 404, "server_not_found", f"There is no server {name}."
    if not getattr(spawner, "can_pause", False):
        return 501, "pause_unsupported", "This spawner cannot keep a server's workspace."
    if spawner.pending:
        return 409, "server_starting", "The server is starting or stopping; pause it once it runs."
    if not spawner.ready:
        return 409, "not_running", "Only a running server can be paused."
    limit = spawner.notebooks["launch"]["hibernatedPerUser"]
    if paused_count(user) >= limit:
        return (
            409,
            "too_many_paused",
            f"You have {limit} paused servers already, the most you may keep; "
            "delete one first.",
        )
    return None


async def pause(spawner: Any) -> dict[str, Any]:
    """Pause a running server (refusal() said it may): the stop that keeps it."""
    spawner.pausing = True
    try:
        await internals.stop_keeping_server(spawner)
    finally:
        spawner.pausing = False
    return {"hibernated_at": spawner.hibernated_at, "disk_bytes": spawner.hibernated_disk}


class PauseAPIHandler(APIHandler):
    @needs_scope("delete:servers")
    async def post(self, user_name: str, server_name: str) -> None:
        user = internals.find_user(self, user_name)
        spawner = internals.loaded_spawners(user).get(server_name) if user else None
        refused = refusal(user, spawner, f"{user_name}:{server_name}")
        if refused is not None:
            return refuse(self, *refused)
        answer = await pause(spawner)
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(answer))


class CullingServerAPIHandler(SavingServerAPIHandler):
    """The culler's DELETE of an idle server: paused (the default idle action), or stopped
    and removed after its autosave, as `culling.idleAction` says. A server that cannot be
    paused (the user's paused servers at their limit) is stopped and removed instead."""

    @needs_scope("delete:servers")
    async def delete(self, user_name: str, server_name: str = "") -> None:
        user = internals.find_user(self, user_name)
        spawner = internals.loaded_spawners(user).get(server_name) if user else None
        hibernate = (
            spawner is not None
            and getattr(spawner, "can_pause", False)
            and spawner.notebooks["culling"]["idleAction"] == "hibernate"
        )
        if hibernate and refusal(user, spawner, server_name) is None:
            self.log.info("Pausing idle %s", internals.log_name(spawner))
            await pause(spawner)
            self.set_status(204)
            return
        await super().delete(user_name, server_name)


def handlers() -> list[tuple[str, Any]]:
    """For `c.JupyterHub.extra_handlers` (the hub adds its /hub prefix)."""
    return [
        (PATH, PauseAPIHandler),
        (CULLING + "/?", internals.HubRootAPIHandler),
        (CULLING + "/users", internals.HubUserListAPIHandler),
        (CULLING + r"/users/([^/]+)/servers/([^/]*)", CullingServerAPIHandler),
    ]
