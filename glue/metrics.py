"""What the glue tells operators: Prometheus metrics, and the API description.

`setup(app, ...)` adds two endpoints to a built app:

- `<prefix>metrics`: Prometheus text (OpenMetrics when asked for), readable
  with a hub token whose scopes include `read:metrics`, or from the networks
  in `metrics.allowedNetworks` when no proxy relayed the request;
- `<prefix>openapi.json`: `glue/openapi.yaml` with this glue's prefix,
  cookie name and launch options filled in; no login needed.

The metrics live in this module's own registry (one glue per process):

- `notebooks_launches_total{outcome}`: launch requests by outcome, `started`
  (201), `starting` (202), `existing` (200) or the error code;
- `notebooks_launch_duration_seconds{result}`: how long a launch request
  took, `accepted` / `refused` (4xx) / `failed` (5xx);
- `notebooks_stops_total{outcome}`;
- `notebooks_requests_total{route, status}` and
  `notebooks_request_duration_seconds{route}`: every request;
- `notebooks_upstream_request_duration_seconds{upstream, method}` and
  `notebooks_upstream_errors_total{upstream, error}`: calls to the hub and
  to GitLab (`glue.hub.Hub.request`, `glue.gitlab.GitLabProvider._get`
  report them through `observe_upstream`);
- `notebooks_access_cache_hits_total`, `notebooks_access_cache_misses_total`;
- the process' own (`process_resident_memory_bytes`, ...).

Launch and stop outcomes are read where they happen: the middleware gives
each request a box in a context variable, and `Servers.start` / `stop`
(wrapped here, not changed) write their outcome into it, so a form post
answered with a 303 still counts as `started` or `existing`.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import ipaddress
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web
from cachetools import TTLCache
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .errors import Forbidden, GlueError, Unauthorized

if TYPE_CHECKING:
    from .access import Access
    from .config import Config
    from .hub import Hub
    from .servers import Servers

log = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.yaml"
METRICS_SCOPE = "read:metrics"
TOKEN_CACHE_SECONDS = 60
TOKEN_CACHE_MAX = 256
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MISSING = object()
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# launches take from a few milliseconds (refused) to the hub's slow-spawn timeout and more
LAUNCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30, 60)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

LAUNCHES = Counter(
    "notebooks_launches",
    "Launch requests by outcome: started, starting, existing, or the error code.",
    ["outcome"],
    registry=REGISTRY,
)
LAUNCH_SECONDS = Histogram(
    "notebooks_launch_duration_seconds",
    "Duration of launch requests: accepted (2xx/3xx), refused (4xx) or failed (5xx).",
    ["result"],
    buckets=LAUNCH_BUCKETS,
    registry=REGISTRY,
)
STOPS = Counter(
    "notebooks_stops",
    "Stop requests by outcome: stopped, stopping, or the error code.",
    ["outcome"],
    registry=REGISTRY,
)
REQUESTS = Counter(
    "notebooks_requests",
    "HTTP requests by route (the handler) and status.",
    ["route", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "notebooks_request_duration_seconds",
    "Duration of HTTP requests by route (event streams, which last a launch, excluded).",
    ["route"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_SECONDS = Histogram(
    "notebooks_upstream_request_duration_seconds",
    "Duration of calls to the hub API and the git provider, retries included.",
    ["upstream", "method"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "notebooks_upstream_errors",
    "Failed calls to the hub and the git provider: unavailable, timeout, server_error, "
    "rate_limited, invalid_response.",
    ["upstream", "error"],
    registry=REGISTRY,
)

LAUNCH_OUTCOMES = {200: "existing", 201: "started", 202: "starting"}
STOP_OUTCOMES = {202: "stopping", 204: "stopped"}
# aiohttp's own refusals, raised before or around our handlers
HTTP_OUTCOMES = {
    404: "no_route",
    405: "method_not_allowed",
    413: "payload_too_large",
}

# the launch or stop of the request being handled, written by the wrapped Servers methods
_action: ContextVar[dict[str, str] | None] = ContextVar("notebooks_action", default=None)


def observe_upstream(upstream: str, method: str, seconds: float, error: str | None) -> None:
    """Record one call to the hub or the git provider (`error`: None when it answered)."""
    UPSTREAM_SECONDS.labels(upstream, method).observe(seconds)
    if error:
        UPSTREAM_ERRORS.labels(upstream, error).inc()


class _AccessCacheCollector(Collector):
    """Hits and misses of the access caches (`Access.hits` / `.misses`) of this process."""

    def __init__(self) -> None:
        self.caches: weakref.WeakSet[Access] = weakref.WeakSet()

    def collect(self) -> Iterator[CounterMetricFamily]:
        caches = list(self.caches)
        hits = CounterMetricFamily(
            "notebooks_access_cache_hits", "Access decisions answered from the cache."
        )
        hits.add_metric([], sum(c.hits for c in caches))
        misses = CounterMetricFamily(
            "notebooks_access_cache_misses", "Access decisions asked of the git provider."
        )
        misses.add_metric([], sum(c.misses for c in caches))
        yield hits
        yield misses


ACCESS_CACHES = _AccessCacheCollector()
REGISTRY.register(ACCESS_CACHES)


# --- who may read the metrics -----------------------------------------------------


class MetricsGate:
    """A hub token with `read:metrics`, or a direct request from an allowed network."""

    def __init__(self, hub: Hub, networks: Iterable[str]):
        self.hub = hub
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._decisions: TTLCache[str, bool | None] = TTLCache(TOKEN_CACHE_MAX, TOKEN_CACHE_SECONDS)

    def from_allowed_network(self, request: web.Request) -> bool:
        if not self.networks or "X-Forwarded-For" in request.headers:
            return False
        try:
            address = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return False  # a unix socket or no peer: not a network we know
        return any(address in network for network in self.networks)

    async def check(self, request: web.Request) -> None:
        if self.from_allowed_network(request):
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() not in ("token", "bearer") or not token:
            raise Unauthorized(
                "Send `Authorization: token <hub token>` with a token that has the "
                f"{METRICS_SCOPE} scope.",
                code="not_logged_in",
            )
        allowed = await self._allowed(token)
        if allowed is None:
            raise Unauthorized("The hub does not know this token.", code="not_logged_in")
        if not allowed:
            raise Forbidden(f"Reading metrics needs the {METRICS_SCOPE} scope.")

    async def _allowed(self, token: str) -> bool | None:
        """Whether the token has the scope; None when the hub does not know it."""
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._decisions.get(key, MISSING)
        if cached is not MISSING:
            return cached
        model = await self.hub.token_model(token)  # a service's token (Prometheus) counts too
        allowed = None if model is None else METRICS_SCOPE in model.get("scopes", [])
        self._decisions[key] = allowed
        return allowed


# --- the API description ----------------------------------------------------------


@cache
def _openapi_source() -> dict[str, Any]:
    return yaml.safe_load(OPENAPI_PATH.read_text())


def openapi_document(config: Config, prefix: str) -> dict[str, Any]:
    """`openapi.yaml` as this glue serves it: its prefix, cookie and launch options."""
    from .launch import body_schema

    document = copy.deepcopy(_openapi_source())
    document["servers"] = [
        {"url": prefix.rstrip("/"), "description": "this service, on the hub's origin"}
    ]
    schemes = document["components"]["securitySchemes"]
    schemes["session"]["name"] = f"{config['service']['name']}-session"
    schemas = document["components"]["schemas"]
    options = body_schema(config)
    documented = schemas["LaunchOptions"]["properties"]
    for name, prop in options["properties"].items():
        prop.setdefault("description", documented.get(name, {}).get("description", ""))
    schemas["LaunchOptions"] = {**schemas["LaunchOptions"], **options}
    schemas["LaunchForm"]["properties"]["profile"] = options["properties"]["profile"]
    return document


# --- counting requests, launches and stops -----------------------------------------


def _route_name(request: web.Request) -> str:
    route = request.match_info.route
    if route.resource is None:
        return "unmatched"
    if route.resource.name == "static":
        return "static"
    return getattr(route.handler, "__name__", "other")


def _result(status: int) -> str:
    return "failed" if status >= 500 else "refused" if status >= 400 else "accepted"


def _instrument(servers: Servers) -> None:
    """Let `Servers.start` / `stop` report their outcome to the request's box."""
    servers.start = _reporting(servers.start, "launch", LAUNCH_OUTCOMES)  # type: ignore[method-assign]
    servers.stop = _reporting(servers.stop, "stop", STOP_OUTCOMES)  # type: ignore[method-assign]


def _reporting(action: Any, kind: str, outcomes: dict[int, str]) -> Any:
    """Wrap a Servers action so the request's box records its kind and outcome."""

    async def report(user: str, arg: Any) -> tuple[int, Any]:
        box = _action.get()
        if box is not None:
            box["kind"] = kind
        status, model = await action(user, arg)
        if box is not None:
            box["outcome"] = outcomes.get(status, str(status))
        return status, model

    return report


def _middleware(launch_handler: Any, stop_handler: Any, login_required: type) -> Any:
    """Innermost: sees our handlers' errors before the error middleware renders them."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        box: dict[str, str] = {}
        reset = _action.set(box)
        status, outcome, streamed = 500, "internal_error", False
        try:
            response = await handler(request)
            status, outcome, streamed = response.status, "ok", response.prepared
            return response
        except GlueError as e:
            status, outcome = e.status, e.code
            raise
        except web.HTTPException as e:
            status = e.status
            outcome = "ok" if status < 400 else HTTP_OUTCOMES.get(status, f"http_{status}")
            raise
        except asyncio.CancelledError:
            status, outcome = 499, "client_gone"
            raise
        except login_required:  # the routes' redirect to the hub's login
            status, outcome = 302, "login"
            raise
        finally:
            _action.reset(reset)
            elapsed = time.monotonic() - started
            route = _route_name(request)
            REQUESTS.labels(route, str(status)).inc()
            if not streamed:
                REQUEST_SECONDS.labels(route).observe(elapsed)
            handler_of_route = request.match_info.route.handler
            kind = box.get("kind")
            if kind is None and request.method == "POST" and handler_of_route == launch_handler:
                kind = "launch"
            elif kind is None and handler_of_route == stop_handler:
                kind = "stop"
            if kind == "launch":
                LAUNCHES.labels(box.get("outcome") if outcome == "ok" else outcome).inc()
                LAUNCH_SECONDS.labels(_result(status)).observe(elapsed)
            elif kind == "stop":
                STOPS.labels(box.get("outcome") if outcome == "ok" else outcome).inc()

    return middleware


# --- wiring -------------------------------------------------------------------------


def setup(
    app: web.Application,
    config: Config,
    prefix: str,
    *,
    hub: Hub,
    access: Access,
    servers: Servers,
    launch_handler: Handler,
    stop_handler: Handler,
) -> None:
    """Add `<prefix>metrics` and `<prefix>openapi.json`, and count what the app does.

    `launch_handler` / `stop_handler` are the routes' POST and DELETE handlers
    of launch URLs: a request they answer before `Servers` acts still counts.
    """
    from .routes import LoginRequired  # not at the top: routes -> hub -> metrics

    gate = MetricsGate(hub, config["metrics"]["allowedNetworks"])
    document = json.dumps(openapi_document(config, prefix)).encode()
    ACCESS_CACHES.caches.add(access)
    _instrument(servers)

    async def metrics(request: web.Request) -> web.Response:
        await gate.check(request)
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        # the whole content type: Prometheus reads the format's version parameter
        headers = {"Content-Type": content_type, "Cache-Control": "no-store"}
        return web.Response(body=encoder(REGISTRY), headers=headers)

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    app.router.add_get(prefix + "metrics", metrics)
    app.router.add_get(prefix + "openapi.json", openapi)
    app.middlewares.append(_middleware(launch_handler, stop_handler, LoginRequired))
