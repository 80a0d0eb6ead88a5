"""What the figures share: their sizes, a running hub, keep-alive clients, percentiles, memory.

The figures reach the glue and the hub only as a user or an operator would: over
HTTP through the hub's proxy, and `python -m glue.session.clone`. What the glue asks the
hub for (a server's name and user_options) is learned from the hub after one launch
through the glue, so the direct spawns stay identical to the glue's whatever its
internals become.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from testing.checks import wait_until
from testing.hub import RunningHub
from testing.net import listening_pid
from testing.repos import make_repo

DEFAULT_IMAGE = "registry.example.org/renku/default:1"
PROJECTS = ("bench/status", "bench/launch", "bench/crowd", "bench/stop")


@dataclass(frozen=True)
class Sizes:
    """How much each figure does: `FULL` for the published figures, `SMOKE` to check the harness."""

    requests: int = 1000  # 1. status requests each way
    warmup: int = 100  # 1. requests each way before measuring
    launches: int = 20  # 2. launches each way
    crowd: int = 50  # 3. users launching at once
    rounds: int = 2  # 3. rounds each way
    commits: int = 3000  # 4. history length
    big_bytes: int = 2 << 20  # 4. the large file rewritten along the history
    clones: int = 5  # 4. clones each way
    memory_requests: int = 10_000  # 5. requests before the last memory sample
    sandbox_launches: int = 10  # 6., 9. launches each way
    stops: int = 10  # 7. stops of a clean workspace each way
    dirty_stops: int = 3  # 7. stops with changed files
    changed_bytes: int = 50_000_000  # 7. the changed files of a dirty stop (5 MB each)
    pushes: int = 3  # 8. pushes each way
    push_bytes: int = 50_000_000  # 8. the new files of a push (5 MB each)
    breakdown_launches: int = 10  # 10. launches each way
    resumes: int = 6  # 11. resumes and fresh launches each way
    resume_bytes: int = 20_000_000  # 11. files written into the paused workspace
    project_bytes: int = 50_000_000  # 11. the data set committed in the project's commit

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


FULL = Sizes()
# every figure once, in about a minute: the harness works, the numbers mean nothing
SMOKE = Sizes(requests=20, warmup=5, launches=1, crowd=2, rounds=1, commits=60,
              big_bytes=64 << 10, clones=1, memory_requests=200, sandbox_launches=1,
              stops=1, dirty_stops=1, changed_bytes=1_000_000, pushes=1, push_bytes=1_000_000,
              breakdown_launches=1, resumes=1, resume_bytes=1_000_000,
              project_bytes=1_000_000)


@dataclass
class Figure:
    """One line of the results: the glue's way, the baseline, their ratio and the target.

    `numbers` are the measured values behind the text (each positive when measured),
    `errors` the failed requests or launches among them. A figure whose target is an
    absolute difference (glue minus baseline, in seconds) sets `difference`.
    """

    number: int
    title: str
    glue: str
    baseline: str
    ratio: float
    target: str
    met: bool
    numbers: dict[str, float]
    errors: int = 0
    notes: list[str] = field(default_factory=list)
    difference: float | None = None

    @property
    def heading(self) -> str:
        return f"{self.number}. {self.title}"

    def as_json(self) -> dict[str, Any]:
        return {"number": self.number, "title": self.title, "ratio": self.ratio,
                "difference": self.difference, "met": self.met, "errors": self.errors,
                "numbers": self.numbers}

    @property
    def comparison(self) -> str:
        """`ratio 1.05`, or `difference +0.123 s (ratio 1.05)` for an absolute target."""
        if self.difference is None:
            return f"ratio {self.ratio:.2f}"
        return f"difference {self.difference:+.3f} s (ratio {self.ratio:.2f})"

    def show(self) -> str:
        mark = "met" if self.met else "MISSED"
        lines = [
            self.heading,
            f"    glue:     {self.glue}",
            f"    baseline: {self.baseline}",
            f"    result:   {self.comparison} (target {self.target}: {mark})",
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
    spawns: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def hub_pid(self) -> int:
        assert self.hub.process is not None, "the hub is not running"
        return self.hub.process.pid

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

    def path(self, project: str) -> str:
        """The glue's path for the first commit of one of the bench's projects."""
        return f"{project}/{self.shas[project][0]}"

    def spawn(self, project: str) -> tuple[str, dict[str, Any]]:
        """The server name and user_options the glue asks the hub for when launching `project`.

        Learned once per project from the hub's own model after a launch through
        the glue (which also warms the spawn path), then removed.
        """
        if project not in self.spawns:
            user = "bench-probe"
            glue = self.glue(user)
            code, _ = glue.request("POST", self.path(project))
            glue.close()
            assert code in (201, 202), code
            servers = wait_until(lambda: self.hub.hub_servers(user), 60, "the probe's server")
            ((name, server),) = servers.items()
            self.spawns[project] = name, server["user_options"]
            wait_until(lambda: self.hub.hub_servers(user)[name]["ready"], 300, "probe ready")
            self.hub.admin("DELETE", f"users/{user}/servers/{name}", json={"remove": True})
            wait_until(lambda: not self.hub.hub_servers(user), 120, "the probe's server removed")
        return self.spawns[project]


@contextlib.contextmanager
def running_bench(servers_per_user: int = 2, start_timeout: int = 600) -> Iterator[Bench]:
    """The bench's hub: the embedded default with benchmarks.spawner's subclass (figure 7)."""
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
            # the glue's metrics straight from loopback (figure 10 reads its launch phases)
            "metrics": {"allowedNetworks": ["127.0.0.0/8"]},
        }
        (workdir / "hub").mkdir()
        checkout = str(Path(__file__).resolve().parents[1])  # the hub imports benchmarks.spawner
        path = os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")]))
        hub = RunningHub(workdir / "hub", config, extra_env={
            "NOTEBOOKS_TEST_SPAWNER_CLASS": "benchmarks.spawner.BenchSpawner",
            "PYTHONPATH": path,
        })
        try:
            hub.start()
            yield Bench(hub, shas, workdir, config)
        finally:
            hub.stop()
