"""The caller's servers, as the hub keeps them: list, read, start and stop one per commit.

The hub is the only store: a server is ours when its user_options name a
project and a commit, and its status is read from the hub every time, so any
number of glue replicas agree and a restarted glue knows everything.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

from .errors import Conflict, NotFound, TooManyServers
from .hub import Hub
from .launch import Launch
from .target import Target

ServerModel = dict[str, Any]
STOP_POLL_SECONDS = 0.25


def status_of(server: dict[str, Any]) -> str:
    if server.get("ready"):
        return "running"
    pending = server.get("pending")
    if pending == "spawn":
        return "starting"
    if pending == "stop":
        return "stopping"
    if pending:
        return "starting"
    # a named server we launched that is neither running nor pending has failed or died
    return "failed"


def server_model(server: dict[str, Any]) -> ServerModel | None:
    """Our server model for a hub server model, or None if the glue did not launch it."""
    options = server.get("user_options") or {}
    if not all(isinstance(options.get(k), str) for k in ("namespace", "project", "commit_sha")):
        return None
    return {
        "name": server["name"],
        "namespace": options["namespace"],
        "project": options["project"],
        "commit_sha": options["commit_sha"],
        "notebook": options.get("notebook") or "",
        "status": status_of(server),
        "url": server.get("url"),
        "started": server.get("started"),
        "last_activity": server.get("last_activity"),
        "profile": options.get("profile"),
        "image": options.get("image"),
        "image_fallback": options.get("image_fallback"),
    }


def find(servers: list[ServerModel], target: Target) -> ServerModel | None:
    return next((m for m in servers if m["name"] == target.server_name), None)


class Servers:
    def __init__(self, hub: Hub, *, servers_per_user: int, stop_timeout: float):
        self.hub = hub
        self.servers_per_user = servers_per_user
        self.stop_timeout = stop_timeout
        # one launch or stop at a time per server in this process; the hub settles the rest
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def _lock(self, user: str, server: str) -> asyncio.Lock:
        lock = self._locks.get((user, server))
        if lock is None:
            lock = asyncio.Lock()
            self._locks[(user, server)] = lock
        return lock

    async def list(self, user: str) -> list[ServerModel]:
        model = await self.hub.user(user)
        servers = (model.get("servers") or {}).values()
        found = [m for m in map(server_model, servers) if m is not None]
        return sorted(found, key=lambda m: m["started"] or "", reverse=True)

    async def get(self, user: str, target: Target) -> ServerModel | None:
        return find(await self.list(user), target)

    async def start(self, user: str, launch: Launch) -> tuple[int, ServerModel]:
        """201 started, 202 starting, 200 already there; never a second server."""
        target = launch.target
        async with self._lock(user, target.server_name):
            servers = await self.list(user)
            current = find(servers, target)
            if current and current["status"] in ("running", "starting"):
                return 200, current
            if current and current["status"] == "stopping":
                raise Conflict(
                    "This server is stopping; launch it again in a moment.", code="server_stopping"
                )
            if current is None and len(servers) >= self.servers_per_user:
                raise TooManyServers(
                    f"You already have {len(servers)} servers, the most allowed; "
                    "stop one to launch another."
                )
            fresh = await self.hub.start(user, target.server_name, launch.user_options())
            model = await self.get(user, target)
        if model is None:
            raise NotFound("The server stopped right after it was launched.", code="server_gone")
        if not fresh:
            return 200, model
        return (201 if model["status"] == "running" else 202), model

    async def stop(self, user: str, target: Target) -> tuple[int, ServerModel | None]:
        """Stop and remove; 204 once gone, 202 if still stopping after the stop timeout."""
        async with self._lock(user, target.server_name):
            if await self.get(user, target) is None:
                raise NotFound("You have no server for this commit.", code="server_not_found")
            await self.hub.stop(user, target.server_name)
            deadline = time.monotonic() + self.stop_timeout
            while (model := await self.get(user, target)) is not None:
                if time.monotonic() >= deadline:
                    return 202, model
                await asyncio.sleep(STOP_POLL_SECONDS)
        return 204, None
