"""Every request's end, decided once: its answer, its outcome, its log line and its count.

One middleware turns whatever a handler did (a response, a GlueError, a
login redirect, aiohttp's own 404/405/413, a crash) into the answer and an
outcome (`ok` or a stable error code), then writes the access log line and
counts `notebooks_requests_total` from that same outcome, so the log and
the metrics can never disagree. Handlers that answer 200 but still failed
(an event stream that refused) write the outcome under `OUTCOME`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from glue.core import metrics
from glue.core.errors import GlueError, LoginRequired, NotFound, PayloadTooLarge

log = logging.getLogger("glue")
RenderError = Callable[[web.Request, GlueError], web.Response]
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

REQUEST_ID = web.RequestKey("request_id", str)
USER = web.RequestKey("user", str)
OUTCOME = web.RequestKey("outcome", str)


def route_name(request: web.Request) -> str:
    """The handler's name: a bounded label, unlike paths."""
    route = request.match_info.route
    if route.resource is None:
        return "unmatched"
    return getattr(route.handler, "__name__", "other")


def middleware(
    render_error: RenderError, login_redirect: Callable[[web.Request], web.Response]
) -> Middleware:
    """The app's only middleware; `render_error` answers errors as JSON or a page."""

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        sent_id = request.headers.get("X-Request-Id", "")
        request[REQUEST_ID] = sent_id if REQUEST_ID_RE.match(sent_id) else uuid.uuid4().hex[:16]
        started = time.monotonic()
        response: web.StreamResponse | None = None
        status, outcome = 500, "internal_error"
        try:
            response, outcome = await handler(request), "ok"
        except GlueError as e:
            response, outcome = render_error(request, e), e.code
        except LoginRequired:
            response, outcome = login_redirect(request), "login"
        except web.HTTPRequestEntityTooLarge:
            error: GlueError = PayloadTooLarge("The request body is too large.")
            response, outcome = render_error(request, error), error.code
        except web.HTTPNotFound:
            error = NotFound("There is nothing at this address.", code="no_route")
            response, outcome = render_error(request, error), error.code
        except web.HTTPMethodNotAllowed as e:
            error = GlueError(
                f"{request.method} is not allowed here.", code="method_not_allowed", status=405
            )
            response, outcome = render_error(request, error), error.code
            response.headers["Allow"] = ", ".join(sorted(e.allowed_methods))
        except web.HTTPException as e:  # our redirects (302/303) and aiohttp's own answers
            status, outcome = e.status, "ok" if e.status < 400 else f"http_{e.status}"
            raise
        except asyncio.CancelledError:
            status, outcome = 499, "client_gone"
            raise
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.path)
            response = render_error(request, GlueError("Something went wrong on our side."))
        finally:
            if response is not None:
                status = response.status
                if outcome == "ok":
                    outcome = request.get(OUTCOME, "ok")
                streamed = response.prepared  # an event stream: it lasts the launch, not timed
            else:
                streamed = False
            _record(request, status, outcome, time.monotonic() - started, timed=not streamed)
        return response

    return handle


def _record(
    request: web.Request, status: int, outcome: str, seconds: float, *, timed: bool
) -> None:
    """The log line and the counters of one request, from one outcome (the user's name and
    path are escaped where every record is: glue.core.logsafe)."""
    route = route_name(request)
    metrics.REQUESTS.labels(route, str(status), outcome).inc()
    if timed:
        metrics.REQUEST_SECONDS.labels(route).observe(seconds)
    log.info(
        "request id=%s user=%s action=%s %s status=%s outcome=%s duration_ms=%.1f",
        request[REQUEST_ID],
        request.get(USER, "-"),
        request.method,
        request.path,
        status,
        outcome,
        seconds * 1000,
    )


async def send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer names its log line, event streams (sent before the handler returns) too."""
    if REQUEST_ID in request:
        response.headers["X-Request-Id"] = request[REQUEST_ID]
