"""The glue's Prometheus instruments: a leaf that imports nothing of the package.

Each instrument is counted where its event happens, as BinderHub's builder
does: `servers.py` counts launches and stops, `access.py` cache hits and
misses, `hub.py` and `gitlabapi.py` their upstream calls (`observe_upstream`),
and the request middleware (`accesslog.py`) every request once, with the
same outcome it writes into the access log.

- `notebooks_requests_total{route, status, outcome}` and
  `notebooks_request_duration_seconds{route}`: every request (event streams,
  which last a launch, are counted but not timed);
- `notebooks_launches_total{outcome}` and
  `notebooks_launch_duration_seconds{result}`: launches the glue acted on,
  `started` (201), `starting` (202), `existing` (200) or the error code that
  ended them; a request refused before it names a launch (a bad path or body,
  no login) is counted only as a request;
- `notebooks_launch_phase_seconds{phase}`: each phase of a launch
  (`contracts.LAUNCH_PHASES`), observed where it happens: the glue's own two
  (`checks`, `spawn_call`) here, the spawner's and the proxy's in the hub's
  registry (JupyterHub's `/hub/metrics`, glue.hub.phases), with the same name;
- `notebooks_stops_total{outcome}`;
- `notebooks_upstream_request_duration_seconds{upstream, method}` and
  `notebooks_upstream_errors_total{upstream, error}`: calls to the hub and
  to GitLab;
- `notebooks_access_cache_hits_total`, `notebooks_access_cache_misses_total`;
- the process' own (`process_resident_memory_bytes`, ...).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# launches take from a few milliseconds (refused) to the hub's slow-spawn timeout and more
LAUNCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30, 60)
# a phase takes from a millisecond (the proxy's route) to a pod's image pull
PHASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 120)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REQUESTS = Counter(
    "notebooks_requests",
    "HTTP requests by route (the handler), status and outcome (ok or the error code).",
    ["route", "status", "outcome"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "notebooks_request_duration_seconds",
    "Duration of HTTP requests by route (event streams, which last a launch, excluded).",
    ["route"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)
LAUNCHES = Counter(
    "notebooks_launches",
    "Launches by outcome: started, starting, existing, or the error code.",
    ["outcome"],
    registry=REGISTRY,
)
LAUNCH_SECONDS = Histogram(
    "notebooks_launch_duration_seconds",
    "Duration of launches: accepted (2xx), refused (4xx) or failed (5xx).",
    ["result"],
    buckets=LAUNCH_BUCKETS,
    registry=REGISTRY,
)


def launch_phase_histogram(registry: CollectorRegistry) -> Histogram:
    """The per-phase histogram of launches, in `registry`: the glue's below, the hub's in
    glue.hub.phases (one name, so a dashboard sums both)."""
    return Histogram(
        "notebooks_launch_phase_seconds",
        "Duration of each phase of a launch, observed where it happens (glue.core.contracts"
        ".LAUNCH_PHASES).",
        ["phase"],
        buckets=PHASE_BUCKETS,
        registry=registry,
    )


LAUNCH_PHASE_SECONDS = launch_phase_histogram(REGISTRY)
STOPS = Counter(
    "notebooks_stops",
    "Stops by outcome: stopped, stopping, or the error code.",
    ["outcome"],
    registry=REGISTRY,
)
UPSTREAM_SECONDS = Histogram(
    "notebooks_upstream_request_duration_seconds",
    "Duration of calls to the hub API, the git provider and the Kubernetes API, retries included.",
    ["upstream", "method"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "notebooks_upstream_errors",
    "Failed calls to the hub, the git provider and the Kubernetes API: unavailable, timeout, "
    "server_error, "
    "rate_limited, invalid_response.",
    ["upstream", "error"],
    registry=REGISTRY,
)
ACCESS_CACHE_HITS = Counter(
    "notebooks_access_cache_hits",
    "Access decisions answered from the cache.",
    registry=REGISTRY,
)
ACCESS_CACHE_MISSES = Counter(
    "notebooks_access_cache_misses",
    "Access decisions asked of the git provider.",
    registry=REGISTRY,
)


def result(status: int) -> str:
    """The launch histogram's label for an HTTP status."""
    return "failed" if status >= 500 else "refused" if status >= 400 else "accepted"


def observe_upstream(upstream: str, method: str, seconds: float, error: str | None) -> None:
    """Record one call to the hub or the git provider (`error`: None when it answered)."""
    UPSTREAM_SECONDS.labels(upstream, method).observe(seconds)
    if error:
        UPSTREAM_ERRORS.labels(upstream, error).inc()


def exposition(accept: str) -> tuple[bytes, str]:
    """The registry as text, in the format the scraper asked for, and its whole content type
    (Prometheus reads the format's version parameter)."""
    encoder, content_type = choose_encoder(accept)
    return encoder(REGISTRY), content_type
