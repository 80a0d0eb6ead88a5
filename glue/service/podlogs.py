"""The logs of one server on Kubernetes: its pod's clone step and notebook container, as tails.

The glue reads them from the Kubernetes API (`GET /api/v1/namespaces/{ns}/pods/
{name}/log?container=...&tailLines=N`) with its pod's service-account token, which
the chart binds to a Role allowing `get` on `pods/log` in its namespace and
nothing else. The glue image has no Kubernetes client: this is one aiohttp call
per container.

Which pod is the server's is KubeSpawner's decision (its `pod_name`, from the
pod name template the hub was given): the spawner records it in the server's
user_options (`contracts.POD_NAME`), where the glue reads it with the rest of the server.

Any failure of the API fails closed (502/503/504 with a sentence); a pod that
is gone is a 404. Every line is scrubbed (`logs.scrub`) before it leaves. A
glue outside a pod (no service account) still starts: it warns, and every logs
request is a 503 that says why.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp

from glue.core import metrics
from glue.core.config import ConfigError
from glue.core.contracts import CLONE_CONTAINER, NOTEBOOK_CONTAINER
from glue.core.errors import NotFound, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from glue.core.serverlogs import MAX_LINE_CHARS, scrub

log = logging.getLogger(__name__)

# the containers whose logs a user sees, in the order they run (glue.hub.podspec names them so)
CONTAINERS = (CLONE_CONTAINER, NOTEBOOK_CONTAINER)
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TIMEOUT_SECONDS = 10.0
# a log larger than this per container is cut (lines * MAX_LINE_CHARS bounds it anyway)
LIMIT_BYTES = 4 * 1024 * 1024


def header(container: str) -> str:
    """The line that opens a container's part of the answer."""
    return f"===== {container} ====="


@dataclass(frozen=True)
class Cluster:
    """Where the API is and how the glue authenticates: the pod's service account."""

    api_url: str
    namespace: str
    token_file: Path
    ca_file: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str], account: Path = SERVICE_ACCOUNT) -> Cluster:
        """The in-cluster API (`KUBERNETES_SERVICE_HOST`/`PORT`), as every pod sees it."""
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        namespace_file = account / "namespace"
        if not host or not port or not namespace_file.is_file():
            raise ConfigError(
                "spawner.kind is kubernetes, but the glue does not run in a pod with a "
                f"service-account token ({account}, KUBERNETES_SERVICE_HOST), with which it "
                "reads servers' logs from the Kubernetes API. The Helm chart mounts it."
            )
        host = f"[{host}]" if ":" in host else host
        return cls(
            api_url=f"https://{host}:{port}",
            namespace=namespace_file.read_text().strip(),
            token_file=account / "token",
            ca_file=account / "ca.crt",
        )


class PodLogs:
    """Read the tails of a server pod's containers."""

    def __init__(
        self, cluster: Cluster | None, timeout: float = TIMEOUT_SECONDS, why_none: str = ""
    ):
        self.cluster = cluster
        self._why_none = why_none
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _where(self) -> Cluster:
        if self.cluster is None:
            raise UpstreamUnavailable(
                f"Server logs cannot be read here: {self._why_none}",
                code="kubernetes_unavailable",
            )
        return self.cluster

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ca = self._where().ca_file
            # the cluster's own CA, never the system's: the API server's certificate is its
            context = ssl.create_default_context(cafile=str(ca)) if ca else True
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def tail(self, pod: str, lines: int, secret: str | None) -> list[str]:
        """Each container's last `lines` lines after a header line, scrubbed; the containers
        are asked at once."""
        texts = await asyncio.gather(*(self._read(pod, c, lines) for c in CONTAINERS))
        out: list[str] = []
        for container, text in zip(CONTAINERS, texts, strict=True):
            out.append(header(container))
            out.extend(scrub(line, secret)[:MAX_LINE_CHARS] for line in text.splitlines())
        return out

    def _token(self, cluster: Cluster) -> str:
        """Read every time: the kubelet rotates the projected token in place."""
        try:
            return cluster.token_file.read_text().strip()
        except OSError:
            raise UpstreamUnavailable(
                "The glue has no Kubernetes service-account token to read logs with.",
                code="kubernetes_unavailable",
            ) from None

    async def _read(self, pod: str, container: str, lines: int) -> str:
        """One container's tail; "" while it has not started (the API's 400 then)."""
        cluster = self._where()
        url = (
            f"{cluster.api_url}/api/v1/namespaces/{quote(cluster.namespace, safe='')}"
            f"/pods/{quote(pod, safe='')}/log"
        )
        params = {"container": container, "tailLines": str(lines), "limitBytes": str(LIMIT_BYTES)}
        # the log comes as text/plain, but the API server first negotiates among its
        # serializers (for a failure's Status): `text/plain` alone is a 406 (client-go's way)
        headers = {
            "Authorization": f"Bearer {self._token(cluster)}",
            "Accept": "application/json, */*",
        }
        started, error = time.monotonic(), None
        try:
            async with self.session.get(
                url, params=params, headers=headers, timeout=self._timeout
            ) as response:
                body = await response.text(errors="replace")
                status = response.status
            if status >= 500:
                error = "server_error"
        except aiohttp.ClientError:
            error = "unavailable"
            raise UpstreamUnavailable(
                "The Kubernetes API is not reachable right now; try again in a moment.",
                code="kubernetes_unavailable",
            ) from None
        except TimeoutError:
            error = "timeout"
            raise UpstreamTimeout(
                "The Kubernetes API did not answer in time; try again in a moment.",
                code="kubernetes_timeout",
            ) from None
        finally:
            metrics.observe_upstream("kubernetes", "GET", time.monotonic() - started, error)
        if status == 200:
            return body
        if status == 404:
            raise NotFound(
                "Your server's pod is gone, and its log with it.", code="pod_not_found"
            )
        if status == 400:  # "container ... is waiting to start": nothing logged yet
            return ""
        if status in (401, 403):
            raise UpstreamError(
                f"Kubernetes refused to show the pod's log ({status}): the glue's service "
                "account needs the chart's Role (get on pods/log in its namespace).",
                code="kubernetes_forbidden",
            )
        raise UpstreamError(
            f"Kubernetes answered {status} ({_reason(body)}) when asked for the pod's log.",
            code="kubernetes_error",
        )


def _reason(body: str) -> str:
    """The `reason` of a Kubernetes Status object, or the status' lack of one."""
    try:
        status = json.loads(body)
    except ValueError:
        return "no reason given"
    reason = status.get("reason") if isinstance(status, dict) else None
    return str(reason)[:80] if reason else "no reason given"


def from_config(
    kind: str, env: Mapping[str, str] = os.environ, account: Path = SERVICE_ACCOUNT
) -> PodLogs | None:
    """The pod-log reader when the servers are KubeSpawner pods (`spawner.kind`), else None
    (the local spawner's log files)."""
    if kind != "kubernetes":
        return None
    try:
        return PodLogs(Cluster.from_env(env, account))
    except ConfigError as e:
        log.warning("%s", e)
        return PodLogs(None, why_none=str(e))
