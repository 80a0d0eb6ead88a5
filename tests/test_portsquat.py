"""Squatters on a server's ports. Every session shares the machine's network and runs code
we do not trust; the proxy routes a user's URL, on that user's own origin, to a server's
port, and the session pushes its work, with its secret, to its git component's. So the
local spawner binds both ports itself and holds them, the processes serve on the sockets
they inherit, and the hub closes its copies only once the server is stopped and its route
gone (glue.hub.listeners): no other process can take either port, before the server
listens, while it runs, or after it dies unnoticed.

A hub whose every server has one fixed port (JupyterHub's Spawner.port, testing/hub_config.py)
shows the one way left to lose: a squatter there first fails the launch closed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from glue.core import ports
from glue.core.contracts import LISTEN_FD_ENV
from glue.hub import listeners
from testing.checks import wait_until
from testing.hub import Client, RunningHub
from testing.kernels import single_user_processes
from testing.marks import starts_hub
from testing.net import free_port, listening_pid
from testing.worlds import local_config

PAGE = "the squatter's page"
USER = "squat-lena"
RUNNER = "mira"  # the running server whose ports a squatter tries, on the shared hub


@pytest.fixture(scope="module")
@starts_hub
def fixed_port_hub(
    tmp_path_factory: pytest.TempPathFactory, repos: dict
) -> Iterator[tuple[RunningHub, int]]:
    port = free_port()
    env = {"NOTEBOOKS_TEST_SERVER_PORT": str(port)}
    hub = RunningHub(tmp_path_factory.mktemp("portsquat"), local_config(repos["root"]), env)
    try:
        yield hub.start(), port
    finally:
        hub.stop()


class Squatter:
    """`python -m http.server` on 127.0.0.1:port, serving PAGE; its log lists every request."""

    def __init__(self, workdir: Path, port: int):
        root = workdir / "squatter"
        root.mkdir(exist_ok=True)
        (root / "index.html").write_text(PAGE)
        self.log = workdir / "squatter.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
            cwd=root,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: listening_pid(port) == self.process.pid, 10, "the squatter to listen")

    def requests(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if '"GET ' in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def launch_outcome(client: Client, path: str) -> dict[str, Any]:
    """The server model once the launch is over: running or failed."""
    response = client.post(path)
    assert response.status_code in (201, 202, 502), response.text
    return wait_until(
        lambda: (m := client.get(path).json()).get("status") in ("running", "failed") and m,
        90,
        "the launch to end",
    )


def binds(port: int) -> bool:
    """Whether another process can take `port` on loopback, as a squatter would try: with
    SO_REUSEADDR, then also SO_REUSEPORT (this test runs as the hub's user, root)."""
    code = (
        "import socket, sys\n"
        "for options in ((socket.SO_REUSEADDR,), (socket.SO_REUSEADDR, socket.SO_REUSEPORT)):\n"
        "    s = socket.socket()\n"
        "    for o in options: s.setsockopt(socket.SOL_SOCKET, o, 1)\n"
        "    try:\n"
        f"        s.bind(('127.0.0.1', {port})); s.listen(); sys.exit(0)\n"
        "    except OSError: s.close()\n"
        "sys.exit(1)\n"
    )
    return subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0


def server_processes(hub: RunningHub, user: str) -> list[psutil.Process]:
    """The notebook server processes of `user` on `hub` (in their sandboxes, seen from the
    host): other workers' hubs run servers of users of the same name at the same time."""
    api = f"http://127.0.0.1:{hub.hub_port}/"
    found = []
    for process in single_user_processes():
        with contextlib.suppress(psutil.Error):
            env = process.environ()
            on_hub = env.get("JUPYTERHUB_API_URL", "").startswith(api)
            if on_hub and env.get("JUPYTERHUB_USER") == user:
                found.append(process)
    return found


def component_port(hub: RunningHub, user: str = USER) -> int | None:
    """The port `user`'s (one) running git component on this hub serves on, if any."""
    found = [
        args[args.index("--listen") + 1]
        for process in psutil.process_iter(["cmdline"])
        if "glue.session.gitproxy" in (args := process.info["cmdline"] or [])
        and str(hub.workdir) in " ".join(args)
        and args[args.index("--user") + 1] == user
    ]
    assert len(found) <= 1, found
    return int(found[0].rpartition(":")[2]) if found else None


@pytest.mark.timeout(300)
def test_a_squatted_fixed_port_fails_the_launch_closed(fixed_port_hub, repos):
    hub, port = fixed_port_hub
    path = f"demo/hello/{repos['shas']['demo/hello'][0]}"
    hub.remove_all_servers(USER)
    squatter = Squatter(hub.workdir, port)
    client = Client(hub, USER)
    try:
        model = launch_outcome(client, path)
        assert model["status"] == "failed", model
        assert f"Another process holds port {port} on 127.0.0.1" in model["failure"]["message"]
        # nothing routed to the squatter, nothing asked of it, its page never served
        assert not any(str(port) in str(r.get("target")) for r in hub.routes().values())
        user_url = f"http://{USER}.localhost:{hub.port}/user/{USER}/{model['name']}/"
        assert PAGE not in requests.get(user_url, timeout=30).text
        assert squatter.requests() == []
        assert listening_pid(port) == squatter.process.pid
        assert server_processes(hub, USER) == []  # nothing of ours started
        squatter.stop()
        # the port free again, the same launch runs there
        hub.remove_all_servers(USER)
        model = launch_outcome(client, path)
        assert model["status"] == "running", model
        assert hub.server_port(USER, model["name"]) == port
    finally:
        squatter.stop()
        hub.remove_all_servers(USER)


@pytest.mark.timeout(300)
def test_a_resume_that_fails_in_the_hub_leaves_the_server_paused_with_its_work(
    fixed_port_hub, repos
):
    """A paused server whose port is squatted when it resumes: the hub's start fails (as
    any failure of the server's start would), and the server stays paused with its
    workspace; once the port is free, it resumes as it was."""
    hub, port = fixed_port_hub
    user, path = "resumer", f"demo/hello/{repos['shas']['demo/hello'][1]}"
    hub.remove_all_servers(user)
    client = Client(hub, user)
    squatter = None
    try:
        model = launch_outcome(client, path)
        assert model["status"] == "running", model
        workspace = hub.workspaces / user / model["name"]
        (workspace / "notes.txt").write_text("unsaved\n")
        pause = client.request("PATCH", path, json={"state": "hibernated"})
        assert pause.status_code == 200, pause.text
        squatter = Squatter(hub.workdir, port)
        mark = len(hub.log())
        resume = client.request("PATCH", path, json={"state": "running"})
        assert resume.status_code in (201, 202, 502), resume.text
        paused = wait_until(
            lambda: (m := client.get(path).json())["status"] not in ("starting", "running")
            and m,
            60,
            "the resume to fail",
        )
        assert paused["status"] == "hibernated", paused
        assert f"{user}:{model['name']}: Another process holds port" in hub.log()[mark:]
        assert squatter.requests() == []
        squatter.stop()
        resume = client.request("PATCH", path, json={"state": "running"})
        assert resume.status_code in (201, 202), resume.text
        resumed = client.wait_running(path, timeout=90)
        assert resumed["name"] == model["name"] and "clone" not in resumed["phases"]
        assert (workspace / "notes.txt").read_text() == "unsaved\n"
    finally:
        if squatter is not None:
            squatter.stop()
        hub.remove_all_servers(user)


@pytest.mark.timeout(300)
def test_a_servers_ports_cannot_be_taken_while_it_runs_nor_after_it_dies(hub, repos):
    """The server's port and its component's are held by the hub from before the launch
    until the server is stopped: a squatter cannot bind either while the server runs, nor
    once its processes are killed and the hub has not noticed yet (its route still there).
    Once the hub stopped the server (its poll), both are free again: nothing leaks."""
    path = f"demo/hello/{repos['shas']['demo/hello'][0]}"
    client = Client(hub, RUNNER)
    hub.remove_all_servers(RUNNER)
    try:
        model = launch_outcome(client, path)
        assert model["status"] == "running", model
        server, git = hub.server_port(RUNNER, model["name"]), component_port(hub, RUNNER)
        assert git is not None and not binds(server) and not binds(git)
        # the server's own processes and its component killed: the hub has not polled yet
        running = server_processes(hub, RUNNER)
        assert running, "the server's processes are found on this hub"
        for process in running:
            process.send_signal(signal.SIGKILL)
        wait_until(lambda: server_processes(hub, RUNNER) == [], 10, "the server's processes gone")
        assert hub.server_port(RUNNER, model["name"]) == server  # still routed there...
        assert not binds(server)  # ...and still ours: the user's requests reach no one
        for process in psutil.process_iter(["cmdline"]):
            args = process.info["cmdline"] or []
            if "glue.session.gitproxy" in args and args[args.index("--user") + 1] == RUNNER:
                process.kill()
        wait_until(lambda: component_port(hub, RUNNER) is None, 10, "the component gone")
        assert not binds(git)
        # the hub's poll stops it (the glue says it failed): both ports free again
        wait_until(lambda: client.get(path).json()["status"] == "failed", 60, "the hub's poll")
        wait_until(lambda: binds(server) and binds(git), 30, "the ports freed")
        assert not any(f"/user/{RUNNER}/" in path for path in hub.routes())
    finally:
        hub.remove_all_servers(RUNNER)


def test_a_held_port_is_free_for_no_one_else_and_a_taken_one_is_refused():
    held = listeners.hold()
    try:
        port = held.getsockname()[1]
        assert not binds(port)
        with pytest.raises(listeners.PortTaken, match=f"holds port {port} "):
            listeners.hold(port)
    finally:
        held.close()
    assert binds(port)


def test_a_restarted_hub_takes_back_only_the_listener_it_passed():
    """take_back: from a process that inherited a held socket (LISTEN_FD_ENV), a copy of
    that listener, and only when it still listens on the port asked for; nothing from a
    process that was passed none."""
    held = listeners.hold()
    port = held.getsockname()[1]
    env = {**os.environ, LISTEN_FD_ENV: str(held.fileno())}
    keeper = subprocess.Popen(["sleep", "60"], env=env, pass_fds=(held.fileno(),))
    stranger = subprocess.Popen(["sleep", "60"])
    held.close()  # only the keeper holds it now
    try:
        # Popen returns once the exec began; the kernel shows the new environment a moment
        # later (CI read an empty one under load), and a hub restarts long after its servers.
        for process in (keeper, stranger):
            environ = Path(f"/proc/{process.pid}/environ")
            wait_until(environ.read_bytes, 10, "sleep's environment shown")
        assert listeners.take_back([stranger.pid], port) is None
        assert listeners.take_back([keeper.pid], port + 1) is None  # not that port
        copy = listeners.take_back([stranger.pid, keeper.pid], port)
        assert copy is not None and copy.getsockname() == ("127.0.0.1", port)
        keeper.kill()
        keeper.wait()
        assert not binds(port)  # the copy holds it once the keeper is gone
        copy.close()
        assert binds(port)
    finally:
        for process in (keeper, stranger):
            process.kill()
            process.wait()


def test_ports_are_chosen_outside_the_ephemeral_range_and_never_twice(monkeypatch):
    """Fifty servers at once were given one another's freed ports by bind(0): a chosen port
    is outside the range bind(0) and outgoing connections draw from, free, and not one this
    process handed out before."""
    low, high = ports.ephemeral_range()
    chosen = [ports.reserve() for _ in range(300)]
    assert len(set(chosen)) == len(chosen)
    assert all(ports.LOWEST <= p <= ports.HIGHEST and not low <= p <= high for p in chosen)
    # a pool of two ports, one of them held: only the other is ever chosen, and only once
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        held.listen()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            spare = probe.getsockname()[1]
        two = [range(taken, taken + 1), range(spare, spare + 1)]
        monkeypatch.setattr(ports, "pool", lambda: two)
        assert ports.reserve() == spare
        with pytest.raises(OSError, match="No free port"):
            ports.reserve()


def test_two_processes_never_claim_the_same_port(tmp_path, monkeypatch):
    """Two hubs side by side (or a test's hubs) draw from one pool: a port one of our
    processes claimed is never drawn by another. A pool of twenty ports, ten drawn in
    another process and ten here: all twenty, none twice (with claims of one process
    only, the two draws would overlap but for a chance of 1 in 184756)."""
    base = next(
        b for b in range(20000, 30000, 20) if all(ports.free(p) for p in range(b, b + 20))
    )
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(ports, "REGISTRY", tmp_path / ports.REGISTRY.name)
    monkeypatch.setattr(ports, "_handed_out", {})  # not those this test process drew before
    monkeypatch.setattr(ports, "pool", lambda: [range(base, base + 20)])
    code = (
        "from glue.core import ports\n"
        f"ports.pool = lambda: [range({base}, {base + 20})]\n"
        "print(*[ports.reserve() for _ in range(10)])\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    theirs = {int(p) for p in other.stdout.split()}
    ours = {ports.reserve() for _ in range(10)}
    assert len(theirs) == len(ours) == 10 and not theirs & ours
    assert theirs | ours == set(range(base, base + 20))
    assert sorted(int(c.name) for c in ports.REGISTRY.iterdir()) == list(range(base, base + 20))
    with pytest.raises(OSError, match="No free port"):
        ports.reserve()
