"""What the figures share: a running hub, keep-alive HTTP clients, percentiles, process memory."""

from __future__ import annotations

import contextlib
import http.client
import json
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from tests.hubtools import RunningHub, listening_pid, make_repo

DEFAULT_IMAGE = "registry.example.org/renku/default:1"
PROJECTS = ("bench/status", "bench/launch", "bench/crowd")


@dataclass
class Figure:
    """One line of the results: the glue's way, the baseline, their ratio and the target."""

    title: str
    glue: str
    baseline: str
    ratio: float
    target: str
    met: bool
    notes: list[str] = field(default_factory=list)

    def show(self) -> str:
        mark = "met" if self.met else "MISSED"
        lines = [
            f"{self.title}",
            f"    glue:     {self.glue}",
            f"    baseline: {self.baseline}",
            f"    ratio:    {self.ratio:.2f} (target {self.target}: {mark})",
        ]
        lines += [f"    {note}" for note in self.notes]
        return "\n".join(lines)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


class KeepAlive:
    """One persistent HTTP/1.1 connection, as a browser or a script keeps to a server."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.base = parts.path
        self.headers = headers or {}
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        sent = {**self.headers, **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                self.connection.request(method, self.base + path, body=data, headers=sent)
                response = self.connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> tuple[int, Any]:
        status, body = self.request("GET", path)
        return status, json.loads(body) if body else None

    def close(self) -> None:
        self.connection.close()


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / (1 << 20)


@dataclass
class Bench:
    """A running hub with a glue and the repositories the figures use."""

    hub: RunningHub
    shas: dict[str, list[str]]
    workdir: Path
    config: dict[str, Any]

    @property
    def glue_pid(self) -> int:
        pid = listening_pid(self.hub.glue_port)
        if pid is None:
            raise RuntimeError(f"nothing listens on {self.hub.glue_port}")
        return pid

    def glue(self, user: str) -> KeepAlive:
        """The glue as `user` sees it, through the hub's proxy."""
        return KeepAlive(self.hub.prefix, {"Authorization": f"token {self.hub.token_for(user)}"})

    def hub_api(self, user: str | None = None) -> KeepAlive:
        """The hub's REST API through the same proxy, as `user` (or the test admin service)."""
        token = self.hub.token_for(user) if user else self.hub.admin_token
        return KeepAlive(f"{self.hub.url}/hub/api/", {"Authorization": f"token {token}"})


@contextlib.contextmanager
def running_bench(servers_per_user: int = 2, start_timeout: int = 600) -> Iterator[Bench]:
    with tempfile.TemporaryDirectory(prefix="renku-bench-") as tmp:
        workdir = Path(tmp)
        repos = workdir / "repos"
        shas = {project: make_repo(repos, project) for project in PROJECTS}
        config = {
            "images": {"default": DEFAULT_IMAGE},
            "profiles": [{"name": "small", "cpu": 0.5, "memory": "1G"}],
            "provider": {"kind": "local", "root": str(repos)},
            "launch": {
                "serversPerUser": servers_per_user,
                "startTimeoutSeconds": start_timeout,
                "stopTimeoutSeconds": 60,
            },
        }
        (workdir / "hub").mkdir()
        hub = RunningHub(workdir / "hub", config)
        try:
            hub.start()
            yield Bench(hub, shas, workdir, config)
        finally:
            hub.stop()
