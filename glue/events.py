"""Follow a launch live: the hub's spawn progress, relayed to the browser as server-sent events.

The launch page opens an EventSource on `<prefix>-/events/<namespace>/<project>/<sha>`.
EventSource cannot read HTTP status codes, so every outcome, errors included,
is an event on a 200 stream:

    event: progress   {"progress": 0-100, "message": "..."}
    event: ready      {"progress": 100, "message": "...", "url": "/user/.../lab/tree/..."}
    event: failed     {"error": "<code>", "message": "<a sentence for people>"}
    event: reload     {"status": "..."}   (the server changed state: render the page again)

and `: keepalive` comments keep proxies from closing a quiet stream. Only the
plain `message` of a hub event is relayed, never its `html_message`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from .accesslog import OUTCOME
from .errors import GlueError
from .hub import Hub
from .render import open_url
from .servers import Servers
from .target import Target

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]

KEEPALIVE_SECONDS = 10.0
RETRY_MILLISECONDS = 3000
FAILURE_LOOKUP_SECONDS = 5.0
STOP_POLL_SECONDS = 0.5
STOP_WAIT_SECONDS = 120.0
# how often the relay reads the server again when the hub's stream ends without an outcome
MAX_ROUNDS = 5
MAX_MESSAGE_CHARS = 1000

UNKNOWN_FAILURE = (
    "This server is not running any more: its launch failed or it stopped, "
    "and JupyterHub no longer knows why. Launch it again."
)
INTERNAL_FAILURE = "Something went wrong on our side while following the launch; reload the page."


def _message(value: Any) -> str:
    """A hub message as plain text of bounded length (the page shows it as text, never HTML)."""
    text = " ".join(str(value or "").split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _progress(value: Any) -> int:
    try:
        return max(0, min(100, int(value)))
    except (TypeError, ValueError):
        return 0


def failed(code: str, message: str) -> Event:
    return "failed", {"error": code, "message": message}


async def failure_message(hub: Hub, user: str, server: str) -> str | None:
    """Why the hub's last spawn of `server` failed, while the hub still holds that spawn.

    The hub's progress endpoint answers a failed spawn with one `failed` event
    ("Spawn failed: ..."); once it has forgotten the spawn (a hub restart, a
    server that died after it ran) there is no reason to give: None.
    """
    try:
        async with asyncio.timeout(FAILURE_LOOKUP_SECONDS):
            async with contextlib.aclosing(hub.progress(user, server)) as events:
                async for event in events:
                    if event.get("failed"):
                        return _message(event.get("message")) or None
                    return None  # a live spawn: not a failure
    except (TimeoutError, GlueError):
        return None
    return None


async def follow(hub: Hub, servers: Servers, user: str, target: Target) -> AsyncIterator[Event]:
    """The events of one server's launch until it is ready, has failed or changed state."""
    for _ in range(MAX_ROUNDS):
        model = await servers.get(user, target)
        if model is None:
            yield failed("server_not_found", "You have no server for this commit; launch it again.")
            return
        status = model["status"]
        if status == "running":
            url = open_url(model, target.notebook)
            yield "ready", {"progress": 100, "message": "Your server is ready.", "url": url}
            return
        if status == "failed":
            message = await failure_message(hub, user, target.server_name)
            yield failed("spawn_failed", message or UNKNOWN_FAILURE)
            return
        if status == "stopping":
            yield "progress", {"progress": 0, "message": "Stopping the server."}
            deadline = time.monotonic() + STOP_WAIT_SECONDS
            while time.monotonic() < deadline:
                await asyncio.sleep(STOP_POLL_SECONDS)
                model = await servers.get(user, target)
                if model is None or model["status"] != "stopping":
                    break
            yield "reload", {"status": model["status"] if model else "stopped"}
            return
        # starting: relay the hub's stream; it replays the spawn's events from the start
        async with contextlib.aclosing(hub.progress(user, target.server_name)) as events:
            async for event in events:
                if event.get("failed"):
                    yield failed("spawn_failed", _message(event.get("message")) or UNKNOWN_FAILURE)
                    return
                if event.get("ready"):
                    break  # read the server again: the ready event is ours, with the notebook
                progress = _progress(event.get("progress"))
                yield "progress", {"progress": progress, "message": _message(event.get("message"))}
        # the hub's stream ended: the server is ready, failed or gone; read it again
        await asyncio.sleep(0.2)
    yield failed("spawn_unknown", UNKNOWN_FAILURE)


class EventStream:
    """One text/event-stream response."""

    def __init__(self, request: web.Request):
        self.request = request
        self.response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx ingresses: pass events on at once
            },
        )

    async def open(self) -> None:
        await self.response.prepare(self.request)
        await self.response.write(f"retry: {RETRY_MILLISECONDS}\n\n".encode())

    async def send(self, event: str, data: dict[str, Any]) -> None:
        # json.dumps escapes newlines: one `data:` line per event
        await self.response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

    async def keepalive(self) -> None:
        await self.response.write(b": keepalive\n\n")


async def _pump(stream: EventStream, events: AsyncIterator[Event], keepalive: float) -> None:
    """Send `events` as they come, and a keepalive comment whenever none came for a while."""
    queue: asyncio.Queue[Event | None] = asyncio.Queue()

    async def produce() -> None:
        try:
            async for item in events:
                await queue.put(item)
                if item[0] in ("ready", "failed", "reload"):
                    return
        except GlueError as e:
            await queue.put(("failed", e.body()))
        except Exception:
            log.exception("following a launch failed")
            await queue.put(failed("internal_error", INTERNAL_FAILURE))
        finally:
            await queue.put(None)

    task = asyncio.create_task(produce())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                await stream.keepalive()
                continue
            if item is None:
                return
            await stream.send(*item)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def serve(
    request: web.Request,
    authorize: Callable[[], Awaitable[tuple[str, Target]]],
    hub: Hub,
    servers: Servers,
    *,
    keepalive: float = KEEPALIVE_SECONDS,
) -> web.StreamResponse:
    """Answer an events request: authorize (as `show` does), then follow the launch.

    A refusal (invalid path, no login, no access) is a `failed` event, not an
    HTTP error, since the browser's EventSource cannot see status codes.
    """
    stream = EventStream(request)
    await stream.open()
    try:
        try:
            user, target = await authorize()
        except GlueError as e:
            request[OUTCOME] = e.code
            await stream.send("failed", e.body())
            return stream.response
        await _pump(stream, follow(hub, servers, user, target), keepalive)
    except ConnectionResetError:
        request[OUTCOME] = "client_gone"  # the browser left; nothing to tell it
    return stream.response
