"""Faults with real processes: upstreams that hang or vanish, the hub and the glue killed.

What the embedded default does when its processes die, and what these tests
therefore expect:

- JupyterHub starts the proxy, the glue (a managed service) and every
  single-user server in sessions of their own. SIGKILL of the jupyterhub
  process (a crash; SIGTERM would run its cleanup and stop them all) leaves
  them running: the glue keeps answering and fails closed (503) while the
  hub is away. A restarted hub finds its state in its database, kills and
  replaces the proxy (its pid file) and re-adds the routes, and polls the
  servers it knew; it also starts a second glue, which cannot bind the
  port the first one still holds and is retried every 30 s (log noise,
  nothing worse). The first glue carries on with its token, which stays
  valid: it recovers without a restart.
- The hub restarts a managed service that exits (it polls it every 30 s), so
  a killed glue comes back on its own; the glue keeps no state, so a launch
  that was in flight when it died is read back from the hub afterwards.

Every process a test leaves behind (orphans of the killed hub) is found by
its environment (the hub API port of that test's hub) and ended by its pid.
"""

from __future__ import annotations

import contextlib
import http.client
import inspect
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml
from aiohttp import web

from testing.checks import timed, wait_until
from testing.contract import assert_conforms, sse_events
from testing.gitlab import GitLabStandIn
from testing.hub import Client, RunningHub, end_processes, processes_using_hub
from testing.marks import starts_hub
from testing.metrics import samples, total
from testing.net import free_port, listening_pid
from testing.repos import make_repo, workspace_git
from testing.worlds import GitLabWorld

PREFIX = "/services/notebooks/"
MISSING_SHA = "0123456789abcdef0123456789abcdef01234567"


def base_config(repos: Path, **launch: Any) -> dict[str, Any]:
    return {
        "images": {"default": "registry.example.org/renku/default:1"},
        "profiles": [{"name": "small", "cpu": 0.5, "memory": "1G"}],
        "provider": {"kind": "local", "root": str(repos)},
        "launch": {"startTimeoutSeconds": 120, "stopTimeoutSeconds": 20, **launch},
        "metrics": {"allowedNetworks": ["127.0.0.0/8"]},
    }


def glue_get(port: int, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    url = f"http://127.0.0.1:{port}{PREFIX}{path}"
    return assert_conforms(requests.get(url, headers=headers, timeout=30, **kwargs))


def glue_metrics(port: int) -> dict:
    return samples(glue_get(port, "metrics").text)


# --- a hub that does not answer -----------------------------------------------------------------


@contextlib.contextmanager
def standalone_glue(tmp_path: Path, hub_api_url: str, hub_timeout: float) -> Iterator[int]:
    """The glue on its own (as the Helm chart runs it), pointed at `hub_api_url`."""
    config = base_config(tmp_path, hubTimeoutSeconds=hub_timeout)
    config_path = tmp_path / "notebooks.yaml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "JUPYTERHUB_API_TOKEN": "service-token-of-a-hub-that-does-not-answer",
        "JUPYTERHUB_API_URL": hub_api_url,
    }
    log = (tmp_path / "glue.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "glue", "--config", str(config_path), "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: listening_pid(port) == process.pid, 30, "the glue listens")
        yield port
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def test_a_hub_that_never_answers_is_504_within_the_timeout(tmp_path: Path) -> None:
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(512)  # connections complete in the kernel; nobody ever reads them
        url = f"http://127.0.0.1:{blackhole.getsockname()[1]}/hub/api"
        with standalone_glue(tmp_path, url, hub_timeout=1.5) as port:
            sha_path = f"demo/hello/{MISSING_SHA}"
            for call in (
                lambda: glue_get(port, "", token="some-user-token"),
                lambda: glue_get(port, sha_path, token="another-token"),
                lambda: assert_conforms(requests.post(
                    f"http://127.0.0.1:{port}{PREFIX}{sha_path}", timeout=30,
                    headers={"Authorization": "token a-third-token"})),
            ):
                response, seconds = timed(call)
                assert response.status_code == 504, response.text
                assert response.json()["error"] == "hub_timeout"
                assert 1.4 <= seconds <= 3.0, seconds
            response, seconds = timed(lambda: glue_get(port, "health"))
            assert response.status_code == 503 and seconds <= 3.0
            # many at once: each waits for its own timeout, none for the others
            with ThreadPoolExecutor(20) as pool:
                started = time.monotonic()
                answers = list(pool.map(
                    lambda i: glue_get(port, "", token=f"token-{i}"), range(20)))
                assert time.monotonic() - started <= 4.0
            assert {r.status_code for r in answers} == {504}
            page = glue_metrics(port)
            assert total(page, "notebooks_upstream_errors_total", upstream="hub",
                         error="timeout") >= 24


def test_a_hub_that_refuses_connections_is_503(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    with standalone_glue(tmp_path, f"http://127.0.0.1:{closed}/hub/api", hub_timeout=5) as port:
        response, seconds = timed(lambda: glue_get(port, "", token="some-user-token"))
        assert response.status_code == 503 and response.json()["error"] == "hub_unavailable"
        assert seconds <= 4.0  # three quick retries, not the timeout
        page = glue_metrics(port)
        assert total(page, "notebooks_upstream_errors_total", upstream="hub",
                     error="unavailable") >= 1


# aiohttp's run_app closes a connection idle this long (75 s); the glue keeps them
# (glue.service.app)
AIOHTTP_IDLE_SECONDS = inspect.signature(web.run_app).parameters["keepalive_timeout"].default


def closed_by_the_peer(sock: socket.socket) -> bool:
    """Whether the other end has closed the connection (an end of file waits to be read)."""
    timeout = sock.gettimeout()
    sock.settimeout(0)  # look, do not wait
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except ConnectionResetError:
        return True
    finally:
        sock.settimeout(timeout)


@pytest.mark.hub  # it waits past aiohttp's 75 s: not in `make test-fast`
def test_an_idle_connection_of_the_proxy_stays_open(tmp_path: Path) -> None:
    """The proxy keeps its connections to the glue alive and reuses them, with no idle limit
    of its own: one that the glue closed just as the proxy sent a request on it was that
    user's 503 (seen with fifty users at once, whose second requests came 75 s after their
    first). An idle connection stays open past aiohttp's limit, and serves the next request."""
    closed = free_port()
    with standalone_glue(tmp_path, f"http://127.0.0.1:{closed}/hub/api", hub_timeout=5) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def served() -> bool:
            connection.request("GET", f"{PREFIX}openapi.json")
            response = connection.getresponse()
            response.read()
            return response.status == 200 and not response.will_close

        try:
            assert served()
            sock = connection.sock
            assert sock is not None
            time.sleep(AIOHTTP_IDLE_SECONDS + 5)
            assert not closed_by_the_peer(sock), "the glue closed it"
            assert served() and connection.sock is sock  # on the same connection
        finally:
            connection.close()


# --- GitLab down or slow --------------------------------------------------------------------------


@pytest.fixture(scope="module")
@starts_hub
def gitlab_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabWorld]:
    """GitLab with two projects of `dev`, logged in; the glue caches for a minute."""
    root = tmp_path_factory.mktemp("faults-gitlab-repos")
    shas = make_repo(root, "renku/demo")
    make_repo(root, "renku/other")
    standin = GitLabStandIn()
    standin.add_user("dev")
    standin.add_project("renku/demo", repo=root / "renku/demo.git", members={"dev": 30})
    standin.add_project("renku/other", repo=root / "renku/other.git", members={"dev": 30})
    config = {**base_config(root), "provider": {"timeoutSeconds": 2, "cacheSeconds": 60}}
    with GitLabWorld.running(tmp_path_factory.mktemp("faults-gitlab-hub"), standin, config,
                             root=root, shas=shas) as world:
        world.login("dev")
        yield world


def test_gitlab_down_or_slow_fails_closed_and_the_rest_is_served(gitlab_world: GitLabWorld) -> None:
    hub, standin, thread = gitlab_world.hub, gitlab_world.gitlab, gitlab_world.thread
    dev = Client(hub, "dev")
    missing = f"renku/demo/{MISSING_SHA}"
    port = int(standin.url.rsplit(":", 1)[1])

    def launch(path: str = missing) -> requests.Response:
        return assert_conforms(dev.post(path))

    # GitLab up: the launch check reaches it (the commit does not exist), the status is cached
    assert launch().json()["error"] == "commit_not_found"
    assert assert_conforms(dev.get(missing)).json()["error"] == "server_not_found"

    def still_served() -> None:
        assert assert_conforms(dev.get("")).status_code == 200
        assert assert_conforms(dev.get("user")).status_code == 200
        assert assert_conforms(requests.get(hub.prefix + "health", timeout=10)).status_code == 200
        # a status read reuses the access decision GitLab gave a moment ago
        assert assert_conforms(dev.get(missing)).json()["error"] == "server_not_found"

    before = glue_metrics(hub.glue_port)
    down = True
    try:
        thread.run(standin.stop())  # down: connections refused
        response, seconds = timed(launch)
        assert (response.status_code, response.json()["error"]) == (503, "gitlab_unavailable")
        assert seconds < 2
        # a project whose access is not cached cannot be shown either: fail closed
        cold = assert_conforms(dev.get(f"renku/other/{MISSING_SHA}"))
        assert (cold.status_code, cold.json()["error"]) == (503, "gitlab_unavailable")
        still_served()
        thread.run(standin.start(port=port))
        down = False

        standin.delay = 5.0  # slow: longer than provider.timeoutSeconds (2)
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(timed, launch)
            time.sleep(0.3)
            response, seconds = timed(lambda: assert_conforms(dev.get("")))
            assert response.status_code == 200 and seconds < 1.5  # not held up by the launch
            response, seconds = slow.result()
        assert (response.status_code, response.json()["error"]) == (504, "gitlab_timeout")
        assert 1.9 <= seconds <= 4.0
        still_served()
        standin.delay = 0

        for status, answer in ((500, (502, "gitlab_error")), (429, (503, "gitlab_unavailable"))):
            standin.fail_status = status
            response = launch()
            assert (response.status_code, response.json()["error"]) == answer
        standin.fail_status = None
    finally:
        standin.delay, standin.fail_status = 0, None
        if down:
            thread.run(standin.start(port=port))
    # back: the same launch reaches GitLab again, without restarting anything
    assert launch().json()["error"] == "commit_not_found"
    assert hub.hub_servers("dev") == {}
    after = glue_metrics(hub.glue_port)

    def errors(error: str) -> float:
        return total(after, "notebooks_upstream_errors_total", upstream="gitlab", error=error) - (
            total(before, "notebooks_upstream_errors_total", upstream="gitlab", error=error)
        )

    assert errors("unavailable") >= 2 and errors("timeout") >= 1
    assert errors("server_error") >= 1 and errors("rate_limited") >= 1


# --- the hub killed during launches ---------------------------------------------------------------


@pytest.fixture
@starts_hub
def restartable(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A hub whose internal ports stay the same across restarts (the glue keeps its API URL)."""
    repos = tmp_path / "repos"
    shas = make_repo(repos, "demo/hello")
    hub_port = free_port()
    env = {"NOTEBOOKS_HUB_PORT": str(hub_port), "NOTEBOOKS_PROXY_API_PORT": str(free_port())}
    (tmp_path / "hub").mkdir()
    hub = RunningHub(tmp_path / "hub", base_config(repos, serversPerUser=2), extra_env=env)
    try:
        yield {"hub": hub.start(), "shas": shas, "hub_port": hub_port}
    finally:
        leftovers = processes_using_hub(hub_port)
        hub.stop()
        end_processes([p for p in leftovers if p.is_running()])


def test_hub_killed_during_launches(restartable: dict[str, Any]) -> None:
    hub, shas = restartable["hub"], restartable["shas"]
    users = {name: Client(hub, name) for name in ("early", "racer1", "racer2", "late")}
    glue = listening_pid(hub.glue_port)
    # one server runs before the crash
    early = f"demo/hello/{shas[0]}"
    assert users["early"].post(early).status_code in (201, 202)
    users["early"].wait_running(early)
    # two launches are in flight when the hub dies
    racing = f"demo/hello/{shas[1]}"
    with ThreadPoolExecutor(2) as pool:
        posts = [pool.submit(users[n].post, racing) for n in ("racer1", "racer2")]
        wait_until(lambda: hub.hub_servers("racer1") or hub.hub_servers("racer2"), 10,
                 "a racing launch reached the hub", every=0.02)
        hub.kill()
        for post in posts:
            with contextlib.suppress(requests.RequestException):
                assert_conforms(post.result())  # answered before the crash, or a 503

    # the hub is down: the glue answers, fails closed, with its documented errors
    for name, path in (("early", ""), ("late", ""), ("early", early)):
        response, seconds = timed(lambda n=name, p=path: glue_get(hub.glue_port, p,
                                                                  hub.tokens[n]))
        assert (response.status_code, response.json()["error"]) == (503, "hub_unavailable")
        assert seconds < 5
    response = assert_conforms(requests.post(
        f"http://127.0.0.1:{hub.glue_port}{PREFIX}{racing}", timeout=30,
        headers={"Authorization": f"token {hub.tokens['late']}"}))
    assert (response.status_code, response.json()["error"]) == (503, "hub_unavailable")
    assert glue_get(hub.glue_port, "health").status_code == 503

    hub.start()  # the same database, ports and cookie secret
    assert listening_pid(hub.glue_port) == glue, "the glue was restarted"
    assert assert_conforms(users["late"].get("")).status_code == 200

    # the server that ran before the crash still runs, reachable through the new proxy
    model = assert_conforms(users["early"].get(early)).json()
    assert model["status"] == "running"
    lab = users["early"].session.get(f"{hub.absolute(model['url'])}api/status", timeout=30)
    assert lab.status_code == 200
    # the new hub holds its ports again, taken back from its processes at its first poll:
    # should the server die unnoticed now, no other process could take them
    assert hub.process is not None
    held = {
        c.laddr.port
        for c in psutil.Process(hub.process.pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }
    early_name = model["name"]
    assert f"early:{early_name}: holding 2 of its ports again" in hub.log()
    assert hub.server_port("early", early_name) in held
    # the launches the crash interrupted: launching again ends with exactly one server each
    for name in ("racer1", "racer2", "late"):
        response = assert_conforms(users[name].post(racing))
        assert response.status_code in (200, 201, 202), (name, response.text)
    for name in ("racer1", "racer2", "late"):
        model = users[name].wait_running(racing, timeout=90)
        assert list(hub.hub_servers(name)) == [model["name"]], name
    assert list(hub.hub_servers("early")) == [users["early"].get(early).json()["name"]]
    assert "unexpected error in" not in hub.log()
    # one git component per running server: none that an interrupted launch left running
    assert len(hub.components()) == 4, hub.components()
    # the stop of a server the killed hub started ends its component too (the new hub
    # holds no handle of it)
    assert users["early"].delete(early).status_code == 204
    wait_until(lambda: len(hub.components()) == 3, 30, "the early server's component ended")


# --- the glue killed mid-launch, and fifty users at once ------------------------------------------


@pytest.fixture(scope="module")
@starts_hub
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    repos = tmp_path_factory.mktemp("faults-busy-repos")
    shas = make_repo(repos, "demo/hello")
    hub = RunningHub(tmp_path_factory.mktemp("faults-busy-hub"),
                     base_config(repos, serversPerUser=2, startTimeoutSeconds=300))
    try:
        yield {"hub": hub.start(), "shas": shas}
    finally:
        hub.stop()


@pytest.mark.timeout(900)
def test_fifty_users_launch_at_once(busy: dict[str, Any]) -> None:
    hub, shas = busy["hub"], busy["shas"]
    path = f"demo/hello/{shas[0]}"
    clients = [Client(hub, f"crowd{i:02d}") for i in range(50)]
    with ThreadPoolExecutor(50) as pool:
        first = list(pool.map(lambda c: assert_conforms(c.post(path)), clients))
    assert {r.status_code for r in first} <= {201, 202}, [r.text for r in first][:3]
    names = {c.user: r.json()["name"] for c, r in zip(clients, first, strict=True)}

    waiting: list[str] = []

    def all_running() -> bool:  # each user's own server, not merely none that is not ready
        servers = hub.everyones_servers()
        waiting[:] = [
            c.user for c in clients
            if not servers.get(c.user, {}).get(names[c.user], {}).get("ready")
        ]
        return not waiting

    try:
        wait_until(all_running, 300, "fifty servers running", every=2)
    except AssertionError:
        errors = [line for line in hub.log().splitlines() if line.startswith("[E ")]
        raise AssertionError(f"not running: {waiting}; the hub's errors: {errors[:5]}") from None
    with ThreadPoolExecutor(50) as pool:
        again = list(pool.map(lambda c: assert_conforms(c.post(path)), clients))
    assert {r.status_code for r in again} == {200}
    for client in clients:
        assert list(hub.hub_servers(client.user)) == [names[client.user]], client.user
        assert client.get(path).json()["status"] == "running"
    assert " status=5" not in "".join(
        line for line in hub.log().splitlines() if " INFO glue request " in line)
    with ThreadPoolExecutor(10) as pool:
        stopped = list(pool.map(lambda c: assert_conforms(c.delete(path)), clients))
    assert {r.status_code for r in stopped} <= {202, 204}


def test_glue_killed_mid_launch(busy: dict[str, Any]) -> None:
    hub, shas = busy["hub"], busy["shas"]
    user = Client(hub, "interrupted")
    path = f"demo/hello/{shas[1]}"
    glue = listening_pid(hub.glue_port)
    assert glue is not None
    answers: list[Any] = []
    thread = threading.Thread(
        target=lambda: answers.append(_post_catching(user, path)), daemon=True)
    thread.start()
    # kill the glue the moment the hub has the launch, while the glue awaits the hub's answer
    wait_until(lambda: hub.hub_servers("interrupted"), 10, "the launch reached the hub", every=0.01)
    os.kill(glue, signal.SIGKILL)
    thread.join(30)
    assert answers and not (
        isinstance(answers[0], requests.Response) and answers[0].status_code in (200, 201, 202)
    ), "the glue answered before it was killed: the test did not interrupt anything"

    # the hub notices its service died and starts it again (it polls every 30 s)
    wait_until(lambda: listening_pid(hub.glue_port) not in (None, glue), 90, "a new glue", every=1)
    wait_until(lambda: _healthy(hub), 30, "the new glue answers")
    model = user.wait_running(path, timeout=120)
    assert model["status"] == "running"
    assert list(hub.hub_servers("interrupted")) == [model["name"]]
    again = assert_conforms(user.post(path))
    assert again.status_code == 200 and again.json()["name"] == model["name"]
    events = sse_events(assert_conforms(user.get(f"-/events/{path}")).text)
    assert events[-1]["event"] == "ready"


def _post_catching(client: Client, path: str) -> Any:
    try:
        return client.post(path)
    except requests.RequestException as e:
        return e


def _healthy(hub: RunningHub) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(hub.prefix + "health", timeout=5).status_code == 200
    return False


def big_repo(root: Path, full_path: str, megabytes: int = 150) -> str:
    """A bare repository whose one commit holds incompressible data: its clone takes a while.
    Stored and sent without compression (zlib's level 0), which would not shrink it: the
    clone's time is the data's copy, without 5 s of CPU to compress it for nothing at each
    end (a 150 MB clone takes 1.8 s on a quiet machine, and 2.4 s of CPU instead of 5.5)."""
    work = root / ".work" / full_path
    work.mkdir(parents=True)
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.org",
           "-c", "core.compression=0"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=work, check=True)
    with (work / "data.bin").open("wb") as out:
        for _ in range(megabytes):
            out.write(os.urandom(1 << 20))
    subprocess.run([*git, "add", "."], cwd=work, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "big"], cwd=work, check=True)
    bare = root / f"{full_path}.git"
    subprocess.run([*git, "clone", "-q", "--bare", str(work), str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "config", "core.compression", "0"], check=True)
    return subprocess.check_output(["git", "-C", str(bare), "rev-parse", "HEAD"], text=True).strip()


def test_hub_killed_mid_clone(restartable: dict[str, Any], tmp_path: Path) -> None:
    """The hub and its clone step die together (one process group, as in one container)."""
    hub = restartable["hub"]
    sha = big_repo(tmp_path / "repos", "demo/big")
    user = Client(hub, "cloner")
    path = f"demo/big/{sha}"
    mark = len(hub.log())
    assert assert_conforms(user.post(path)).status_code in (201, 202)
    wait_until(lambda: "cloner:big-" in hub.log()[mark:] and "Cloning demo/big" in hub.log()[mark:],
             30, "the clone started", every=0.05)
    time.sleep(0.3)
    assert "Cloned in" not in hub.log()[mark:], "the clone finished before the crash"
    hub.kill(with_its_group=True)  # the hub and the clone it runs
    hub.start()
    # the interrupted launch is not running; launching again must put the commit in place
    model = assert_conforms(user.get(path)).json()
    assert model["status"] in ("failed", "starting"), model
    if model["status"] == "failed":
        assert assert_conforms(user.post(path)).status_code in (201, 202)
    model = user.wait_running(path, timeout=120)
    workspace = hub.workspaces / "cloner" / model["name"]
    assert workspace_git(workspace, "rev-parse", "HEAD") == sha
    assert list(hub.hub_servers("cloner")) == [model["name"]]
