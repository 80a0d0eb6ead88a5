"""A launch's phases in the hub: each timed where it happens, observed into the hub's
Prometheus registry (JupyterHub's `/hub/metrics`), and kept with the server for the glue.

The spawners time their own phases (`CommitSpawnerMixin.phase`); the proxy's route,
added by the hub after the spawner's start, is timed by `TimedProxy`, the hub's proxy
class (`c.JupyterHub.proxy_class`, set by glue.hub.setup.configure).
"""

from __future__ import annotations

import time
from typing import Any

import prometheus_client
from jupyterhub.proxy import ConfigurableHTTPProxy

from glue.core import contracts
from glue.core.metrics import launch_phase_histogram
from glue.hub import internals

# the same `notebooks_launch_phase_seconds{phase}` as the glue's, in the hub's registry
HUB_PHASE_SECONDS = launch_phase_histogram(prometheus_client.REGISTRY)


def observe(phase: str, seconds: float) -> None:
    HUB_PHASE_SECONDS.labels(phase).observe(seconds)


def record(spawner: Any, phase: str, seconds: float) -> None:
    """One phase of this server's launch, into the histogram and the server's `phases`
    (contracts.PHASES, in its user_options), which the glue shows."""
    observe(phase, seconds)
    recorded = spawner.user_options.get(contracts.PHASES)
    phases = dict(recorded) if isinstance(recorded, dict) else {}
    phases[phase] = round(seconds, 6)
    internals.set_user_options(spawner, {**spawner.user_options, contracts.PHASES: phases})


class TimedProxy(ConfigurableHTTPProxy):
    """configurable-http-proxy, with a launch's route addition timed as its `proxy_route`."""

    async def add_user(self, user: Any, server_name: str = "", client: Any = None) -> None:
        spawner = internals.loaded_spawners(user).get(server_name)
        launching = spawner is not None and internals.adding_route_of_spawn(spawner)
        started = time.monotonic()
        await super().add_user(user, server_name, client)
        if launching:
            # committed with the hub's next write (its activity updates, the stop)
            record(spawner, contracts.PHASE_PROXY_ROUTE, time.monotonic() - started)
