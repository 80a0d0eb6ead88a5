"""Follow a launch live: the hub's spawn progress, relayed to the browser as server-sent events.

The launch page opens an EventSource on `<prefix>-/events/<namespace>/<project>/<sha>`.
EventSource cannot read HTTP status codes, so every outcome, errors included,
is an event on a 200 stream:

    event: progress   {"progress": 0-100, "message": "...", "phases": {...}}
    event: ready      {"progress": 100, "message": "...", "url": "/user/.../lab/tree/...",
                       "phases": {...}}
    event: failed     {"error": "<code>", "message": "<a sentence for people>"}
    event: reload     {"status": "..."}   (the server changed state: render the page again)
    event: image      {"status": "present|none", "message": "..."}   (`?wait=image`: the
                      commit's image was being built and the wait is over: launch now)

and `: keepalive` comments keep proxies from closing a quiet stream. Only the
plain `message` of a hub event is relayed, never its `html_message`. `phases`
({phase: seconds}, glue.core.contracts.LAUNCH_PHASES) are the launch's phases
recorded so far, as they happened: a progress event carries those the spawner
had recorded when it said it, the ready event those of the whole launch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from glue.core import contracts, launch
from glue.core.errors import GlueError
from glue.core.target import Target
from glue.service.accesslog import OUTCOME
from glue.service.failures import Failure
from glue.service.render import open_url
from glue.service.servers import ServerModel, Servers, UserView, phases_of

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]

KEEPALIVE_SECONDS = 10.0
RETRY_MILLISECONDS = 3000
STOP_WAIT_SECONDS = 120.0
# how often the relay reads the server again when the hub's stream ends without an outcome
MAX_ROUNDS = 5
# after the hub's stream ends, how long (and how often) the relay reads a server the hub still
# calls starting before it follows the hub's stream again
STREAM_END_SECONDS = 0.2
STREAM_END_POLL_SECONDS = 0.02
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


def spawn_failed(failure: Failure) -> Event:
    """A failed spawn: what happened, why (`reason`), what to do and the log's last lines."""
    return "failed", {
        "error": "spawn_failed",
        "message": failure.message,
        "reason": failure.reason,
        "next_step": failure.next_step,
        "log": list(failure.log),
    }


async def follow(
    servers: Servers,
    user: str,
    target: Target,
    model: ServerModel | None,
    secret: str | None = None,
) -> AsyncIterator[Event]:
    """The events of one server's launch until it is ready, has failed or changed state.

    `model` is the server as the request's authorize step read it: the first
    round needs no read of its own. `secret` (the caller's git token) is scrubbed
    from any log lines sent.
    """
    seen: list[str] = []  # the launch's messages: the scheduler's events explain a timeout
    for round_ in range(MAX_ROUNDS):
        if round_:
            model = await _after_stream(servers, user, target)
        if model is None:
            yield failed("server_not_found", "You have no server for this commit; launch it again.")
            return
        status = model["status"]
        if status == "running":
            url = open_url(model, target.notebook)
            yield "ready", {
                "progress": 100,
                "message": "Your server is ready.",
                "url": url,
                "phases": model.get("phases") or {},
            }
            return
        if status == "failed":
            reason = await servers.failure(user, target)
            yield spawn_failed(await servers.explain(user, target, reason, seen, secret))
            return
        if status == "stopping":
            yield "progress", {"progress": 0, "message": "Stopping the server."}
            model = await servers.wait_stopped(user, target, STOP_WAIT_SECONDS)
            yield "reload", {"status": model["status"] if model else "stopped"}
            return
        # starting: relay the hub's stream; it replays the spawn's events from the start
        async with contextlib.aclosing(servers.progress(user, target)) as events:
            async for event in events:
                if event.get("failed"):
                    failure = await servers.explain(
                        user, target, event.get("message"), seen, secret
                    )
                    yield spawn_failed(failure)
                    return
                if event.get("ready"):
                    break  # read the server again: the ready event is ours, with the notebook
                progress = _progress(event.get("progress"))
                message = _message(event.get("message"))
                seen.append(message)
                said: dict[str, Any] = {"progress": progress, "message": message}
                phases = phases_of(event.get(contracts.PHASES))
                if phases:
                    said["phases"] = phases
                yield "progress", said
        # the hub's stream ended: the server is ready, failed or gone; the next round reads it
    yield failed("spawn_unknown", UNKNOWN_FAILURE)


async def _after_stream(servers: Servers, user: str, target: Target) -> ServerModel | None:
    """The server once the hub's progress stream ended: read at once, then every
    STREAM_END_POLL_SECONDS for up to STREAM_END_SECONDS while the hub still calls it
    starting (it marks a server ready a moment after its stream's last event). A fixed wait
    of the whole 0.2 s before one read delayed every ready page by as much."""
    deadline = asyncio.get_running_loop().time() + STREAM_END_SECONDS
    while True:
        model = await servers.get(user, target)
        if model is None or model["status"] != "starting":
            return model
        if asyncio.get_running_loop().time() >= deadline:
            return model
        await asyncio.sleep(STREAM_END_POLL_SECONDS)


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


async def _pump(
    stream: EventStream, events: AsyncIterator[Event], keepalive: float
) -> Event | None:
    """Send `events` as they come, and a keepalive comment whenever none came for a while;
    returns the last event sent."""
    queue: asyncio.Queue[Event | None] = asyncio.Queue()

    async def produce() -> None:
        try:
            async for item in events:
                await queue.put(item)
                if item[0] in ("ready", "failed", "reload", "image"):
                    return
        except GlueError as e:
            await queue.put(failed(e.code, e.message))
        except Exception:
            log.exception("following a launch failed")
            await queue.put(failed("internal_error", INTERNAL_FAILURE))
        finally:
            await queue.put(None)

    task = asyncio.create_task(produce())
    last = None
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), keepalive)
            except TimeoutError:
                await stream.keepalive()
                continue
            if item is None:
                return last
            await stream.send(*item)
            last = item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def serve(
    request: web.Request,
    servers: Servers,
    user: str,
    target: Target,
    model: ServerModel | None,
    *,
    keepalive: float = KEEPALIVE_SECONDS,
    secret: str | None = None,
) -> web.StreamResponse:
    """Answer an authorized events request: follow the launch until it ends."""
    return await _serve(request, follow(servers, user, target, model, secret), keepalive)


async def wait_for_image(
    servers: Servers, view: UserView, target: Target, poll: float
) -> AsyncIterator[Event]:
    """While GitLab CI builds the commit's image: a progress event whenever the pipeline's
    status changes, then `image` once it exists (or will not come), `failed` if the build
    failed. The page launches on `image`: the decision stays with the POST."""
    said = ""
    while True:
        status, pipeline = await servers.image_status(view, target)
        if status == launch.BUILDING:
            message = f"GitLab CI is building the image for this commit (pipeline {pipeline})."
            if message != said:
                yield "progress", {"progress": 0, "message": message}
                said = message
            await asyncio.sleep(poll)
            continue
        if status == launch.FAILED:
            yield failed(
                "image_build_failed",
                "GitLab CI failed to build the image for this commit. Fix the build, or "
                "launch with the default image instead.",
            )
            return
        ready = status == launch.PRESENT
        message = "The image is ready." if ready else "The pipeline ended without an image."
        yield "image", {"status": status, "message": message}
        return


async def serve_image_wait(
    request: web.Request,
    servers: Servers,
    view: UserView,
    target: Target,
    poll: float,
    *,
    keepalive: float = KEEPALIVE_SECONDS,
) -> web.StreamResponse:
    """Answer an authorized events request for a commit whose image is being built."""
    return await _serve(request, wait_for_image(servers, view, target, poll), keepalive)


async def _serve(
    request: web.Request, events: AsyncIterator[Event], keepalive: float
) -> web.StreamResponse:
    stream = EventStream(request)
    try:
        await stream.open()
        last = await _pump(stream, events, keepalive)
        if last and last[0] == "failed":
            request[OUTCOME] = str(last[1]["error"])  # a 200 stream, but the launch failed
    except ConnectionResetError:
        request[OUTCOME] = "client_gone"  # the browser left; nothing to tell it
    return stream.response


async def refuse(request: web.Request, error: GlueError) -> web.StreamResponse:
    """A refusal (invalid path, no login, no access) as a `failed` event on a 200 stream:
    the browser's EventSource cannot see status codes."""
    request[OUTCOME] = error.code
    stream = EventStream(request)
    try:
        await stream.open()
        await stream.send(*failed(error.code, error.message))
    except ConnectionResetError:
        request[OUTCOME] = "client_gone"
    return stream.response
