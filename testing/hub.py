"""A running JupyterHub with the glue, as the tests, the benchmarks and the worlds use it.

`RunningHub` starts the embedded default's own `values/jupyterhub_config.py`
(through testing/hub_config.py, which adds only an admin service for test set-up)
with a real configurable-http-proxy and real single-user servers, on free
loopback ports, and stops every process it started. `Client` is the glue's API as
one user sees it; the log helpers read what the glue asked of the hub.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import psutil
import requests
import yaml

from testing import CHECKOUT, hubfork
from testing.marks import check_may_start
from testing.net import free_port, listening_pid

# the tests' hub config: this checkout's, whichever checkout's code the hub runs
HUB_CONFIG = Path(__file__).with_name("hub_config.py")


def processes_using_hub(hub_api_port: int) -> list[psutil.Process]:
    """The processes (glue, servers, clones) that talk to the hub API on this port."""
    marker = f"127.0.0.1:{hub_api_port}/hub/api"
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if any(marker in value for value in process.environ().values()):
                found.append(process)
    return found


def end_processes(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=10)


@dataclass
class RunningHub:
    """A JupyterHub + proxy + glue started from a notebooks config dict."""

    workdir: Path
    config: dict[str, Any]
    extra_env: dict[str, str] = field(default_factory=dict)
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    # the code the hub runs: this checkout, or another one beside it (benchmarks.figures)
    checkout: Path = CHECKOUT
    # the Python (and so the environment: JupyterHub, the servers' packages) the hub runs
    # with, and with it its servers (the local spawner runs them with the hub's interpreter)
    python: str = sys.executable
    process: subprocess.Popen[bytes] | hubfork.ForkedHub | None = None

    def __post_init__(self) -> None:
        self.port = free_port()
        self.glue_port = free_port()
        self.hub_port = free_port()  # the hub's own API, which its servers call
        # a port the caller fixed (a hub restarted with the same ports), else a fresh one
        self.proxy_api_port = int(self.extra_env.get("NOTEBOOKS_PROXY_API_PORT") or free_port())
        # the embedded default's public origin: users' servers on <user>.localhost
        self.url = f"http://localhost:{self.port}"
        self.prefix = f"{self.url}/services/notebooks/"
        self.log_path = self.workdir / "hub.log"
        self.tokens: dict[str, str] = {}

    def absolute(self, url: str) -> str:
        """A URL of the hub's models as a client opens it: the hub gives users' servers a
        whole URL on their own domain (`http://<user>.localhost:<port>/user/...`), and a
        path on the hub's origin where all share one."""
        return urljoin(self.url + "/", url)

    @property
    def workspaces(self) -> Path:
        return self.workdir / "workspaces"

    def start(self) -> RunningHub:
        check_may_start("a hub")
        config = {**self.config}
        config["service"] = {
            **config.get("service", {}),
            "url": f"http://127.0.0.1:{self.glue_port}",
        }
        config["spawner"] = {
            **config.get("spawner", {}),
            "kind": "local",
            "workspaceRoot": str(self.workspaces),
        }
        config_path = self.workdir / "notebooks.yaml"
        config_path.write_text(yaml.safe_dump(config))
        env = {
            **os.environ,
            "NOTEBOOKS_CONFIG": str(config_path),
            "NOTEBOOKS_STATE": str(self.workdir / "state"),
            "NOTEBOOKS_PORT": str(self.port),
            "NOTEBOOKS_HUB_PORT": str(self.hub_port),
            "NOTEBOOKS_PROXY_API_PORT": str(self.proxy_api_port),
            "NOTEBOOKS_TEST_ADMIN_TOKEN": self.admin_token,
            **self.extra_env,
        }
        # the embedded default's hub config of the checkout whose code runs
        env["NOTEBOOKS_TEST_VALUES"] = str(self.checkout / "values" / "jupyterhub_config.py")
        if self.checkout != CHECKOUT:  # its `glue` before the one installed from this checkout
            paths = [str(self.checkout), env.get("PYTHONPATH")]
            env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
        self._log = self.log_path.open("ab")
        argv = ["-f", str(HUB_CONFIG)]
        if hubfork.ENABLED and (self.python, self.checkout) == (sys.executable, CHECKOUT):
            # this Python, this checkout: forked from one that has imported JupyterHub
            self.process = hubfork.start(argv, env, self.workdir, self._log)
        else:
            self.process = subprocess.Popen(
                [self.python, "-m", "jupyterhub", *argv],
                cwd=self.workdir,
                env=env,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"hub exited {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if requests.get(self.prefix + "health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"hub not ready in {timeout} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # anything left in its session
        self.process.wait()
        self._log.close()
        self.process = None

    def kill(self, *, with_its_group: bool = False) -> None:
        """SIGKILL the jupyterhub process, as a crash would; with its group, as a container's
        end. Its servers and their git components run on (their own sessions)."""
        assert self.process is not None
        if with_its_group:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()
        self.process = None

    def proxy_api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A request to the proxy's REST API (`/api/routes...`), with the proxy's own token
        (in its environment), as the hub makes them."""
        pid = listening_pid(self.proxy_api_port)
        assert pid is not None, "the proxy's API does not listen"
        token = psutil.Process(pid).environ()["CONFIGPROXY_AUTH_TOKEN"]
        return requests.request(
            method,
            f"http://127.0.0.1:{self.proxy_api_port}/api/{path}",
            headers={"Authorization": f"token {token}"},
            timeout=10,
            **kwargs,
        )

    def routes(self) -> dict[str, Any]:
        """The proxy's routing table."""
        answer = self.proxy_api("GET", "routes")
        answer.raise_for_status()
        table: dict[str, Any] = answer.json()
        return table

    def server_port(self, user: str, name: str) -> int:
        """The loopback port the proxy sends the requests of `user`'s server `name` to."""
        (target,) = [
            r["target"]
            for r in self.routes().values()
            if (r.get("user"), r.get("server_name")) == (user, name)
        ]
        return int(target.rstrip("/").rpartition(":")[2])

    def components(self) -> list[str]:
        """The `--secret-file` of every session git component (glue.session.gitproxy) running with
        this hub's state: one per running server, its session directory's."""
        found = []
        for process in psutil.process_iter(["cmdline"]):
            args = process.info["cmdline"] or []
            if "glue.session.gitproxy" in args and "--secret-file" in args:
                secret = args[args.index("--secret-file") + 1]
                if secret.startswith(str(self.workdir)):
                    found.append(secret)
        return found

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- hub API as the test's admin service -----------------------------------

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"token {self.admin_token}"}
        return requests.request(
            method, f"{self.url}/hub/api/{path}", headers=headers, timeout=30, **kwargs
        )

    def token_for(self, user: str) -> str:
        """A hub API token for `user`, creating the user on first use."""
        if user not in self.tokens:
            response = self.admin("POST", f"users/{user}")
            assert response.status_code in (201, 409), response.text
            response = self.admin("POST", f"users/{user}/tokens", json={"note": "tests"})
            assert response.status_code == 201, response.text
            self.tokens[user] = response.json()["token"]
        return self.tokens[user]

    def hub_servers(self, user: str) -> dict[str, Any]:
        """The user's named servers as the hub has them, stopped ones included."""
        response = self.admin("GET", f"users/{user}", params={"include_stopped_servers": "1"})
        if response.status_code == 404:
            return {}  # no such user yet
        response.raise_for_status()
        return {name: s for name, s in response.json()["servers"].items() if name}

    def everyones_servers(self) -> dict[str, dict[str, Any]]:
        """Every user's named servers, as hub_servers has them, in one request per 200 users:
        a crowd's wait asked for each user in turn, fifty requests a round, of the hub
        that was starting fifty servers."""
        found: dict[str, dict[str, Any]] = {}
        while True:
            params = {"include_stopped_servers": "1", "offset": str(len(found)), "limit": "200"}
            response = self.admin("GET", "users", params=params)
            response.raise_for_status()
            page = response.json()
            for user in page:
                found[user["name"]] = {n: s for n, s in user.get("servers", {}).items() if n}
            if len(page) < 200:
                return found

    def wait_failed(self, user: str, name: str, timeout: float = 30) -> None:
        """Until the hub has given up on the server: neither ready nor pending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.hub_servers(user).get(name)
            if server and not server["ready"] and not server["pending"]:
                return
            time.sleep(0.2)
        raise AssertionError(f"{name} did not fail in {timeout} s: {self.hub_servers(user)}")

    def remove_all_servers(self, user: str) -> None:
        """Stop and remove every server of `user`, asking again while one is left (the hub
        refuses to stop a server whose start or stop is still going on)."""
        deadline = time.monotonic() + 30
        while (left := self.hub_servers(user)) and time.monotonic() < deadline:
            for name in left:
                self.admin("DELETE", f"users/{user}/servers/{name}", json={"remove": True})
            time.sleep(0.3)


class Client:
    """The glue's API as one user sees it, with their hub token."""

    def __init__(self, hub: RunningHub, user: str):
        self.hub = hub
        self.user = user
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {hub.token_for(user)}"

    def url(self, path: str) -> str:
        return self.hub.prefix + path.lstrip("/")

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        kwargs.setdefault("allow_redirects", False)
        return self.session.request(method, self.url(path), **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def wait_running(self, path: str, timeout: float = 60) -> dict[str, Any]:
        """The server's model once the glue says it runs. While it starts, this follows the
        launch's event stream, as the launch page does: one request the glue answers as the
        spawn goes on, where asking every 0.3 s cost the proxy, the glue and the hub about
        10 ms of CPU each time, in a suite bound by its CPU."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.get(path).json()
            if model.get("status") == "running":
                return model
            assert model.get("status") in ("starting", None), model
            # None: not launched yet (by another thread of the test)
            if model.get("status") == "starting" and self.follow_launch(path, deadline) == "ready":
                continue
            time.sleep(0.3)
        raise AssertionError(f"{path} not running after {timeout} s")

    def follow_launch(self, path: str, deadline: float) -> str | None:
        """The last event of the launch's event stream (`ready`, `failed`, `reload`), read
        until it ends or `deadline`; None if it ended without one."""
        last = None
        with contextlib.suppress(requests.RequestException):
            left = max(1.0, deadline - time.monotonic())
            with self.get(f"-/events/{path}", stream=True, timeout=(10, left)) as response:
                for line in response.iter_lines(decode_unicode=True):
                    if line.startswith("event: "):
                        last = line.removeprefix("event: ")
                        if last != "progress":
                            break
                    if time.monotonic() > deadline:
                        break
        return last


# --- what the glue asked of the hub, read from the hub's own request log --------------------

HUB_REQUEST = re.compile(
    r"\] \d{3} (?P<method>[A-Z]+) (?P<path>\S*/hub/api\S*) \((?P<who>[^@)]*)@"
)


def hub_calls_by_glue(log: str, service: str = "notebooks") -> list[str]:
    """The hub API requests in a piece of the hub's log that the glue made: those with its
    service token, and identity lookups (`GET .../api/user`) with a caller's token."""
    calls = []
    for match in HUB_REQUEST.finditer(log):
        path = match["path"].split("?", 1)[0]
        if match["who"] == service or (match["method"] == "GET" and path.endswith("/api/user")):
            calls.append(f"{match['method']} {path}")
    return calls


def log_mark(hub: RunningHub, settle: float = 0.3) -> int:
    """Where the hub's log ends, once the lines of requests answered just before had time to
    land (the hub writes a request's line after sending its answer)."""
    time.sleep(settle)
    return len(hub.log())


def log_since(hub: RunningHub, mark: int, settle: float = 0.3) -> str:
    """The hub's log after `mark` characters, once the last request's line had time to land."""
    time.sleep(settle)
    return hub.log()[mark:]


def raw_request(
    hub: RunningHub, client: Client, method: str, path: str
) -> tuple[int, dict[str, Any]]:
    """Send the path exactly as written, straight to the glue.

    requests, and the proxy in front of the glue, resolve `%2E%2E` segments
    themselves; the glue must refuse them even when nothing before it did.
    """
    connection = http.client.HTTPConnection("127.0.0.1", hub.glue_port, timeout=30)
    token = str(client.session.headers["Authorization"])
    connection.request(method, f"/services/notebooks/{path}", headers={"Authorization": token})
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    return response.status, body
