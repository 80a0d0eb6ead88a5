"""The access log: one line per request, and the id that names it in the answer.

Handlers deeper down write who asked (`USER`) and how it ended (`OUTCOME`,
an error code) into the request under these keys; the middleware writes the line.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("glue")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

REQUEST_ID = web.RequestKey("request_id", str)
USER = web.RequestKey("user", str)
OUTCOME = web.RequestKey("outcome", str)


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request: id, user, action, outcome, duration; never a query string or token."""
    sent_id = request.headers.get("X-Request-Id", "")
    request[REQUEST_ID] = sent_id if REQUEST_ID_RE.match(sent_id) else uuid.uuid4().hex[:16]
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        log.info(
            "request id=%s user=%s action=%s %s status=%s outcome=%s duration_ms=%.1f",
            request[REQUEST_ID],
            request.get(USER, "-"),
            request.method,
            request.path,
            status,
            request.get(OUTCOME, "ok" if status < 400 else "error"),
            (time.monotonic() - started) * 1000,
        )


async def send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer names its log line, event streams (sent before the handler returns) too."""
    if REQUEST_ID in request:
        response.headers["X-Request-Id"] = request[REQUEST_ID]
