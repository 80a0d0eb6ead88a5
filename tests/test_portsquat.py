"""A squatter on a server's port: the local spawner frees the port it chose (random_port) and
only then starts the server, or the session's git component, on it; the sandbox shares the
host's network, so any user's code may take the port first. The launch must then fail
closed: nothing routed, probed or pushed to the squatter (glue.hub.listeners).

The hub gives every server one fixed port (JupyterHub's Spawner.port) and the git component
another (testing/hub_config.py): the squatter, a plain HTTP server on loopback as another
user's session would run one, takes it before the launch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from glue.hub import listeners
from testing.checks import wait_until
from testing.hub import Client, RunningHub
from testing.marks import starts_hub
from testing.net import free_port, listening_pid
from testing.worlds import local_config

PAGE = "the squatter's page"
USER = "lena"
# how many of the next ports the hub chooses for a git component are the squatted one
SQUATS = "git-port-squats"


@pytest.fixture(scope="module")
@starts_hub
def ports_hub(
    tmp_path_factory: pytest.TempPathFactory, repos: dict
) -> Iterator[tuple[RunningHub, dict[str, int]]]:
    ports = {"server": free_port(), "git": free_port()}
    workdir = tmp_path_factory.mktemp("portsquat")
    env = {
        "NOTEBOOKS_TEST_SERVER_PORT": str(ports["server"]),
        "NOTEBOOKS_TEST_GIT_PORT": str(ports["git"]),
        "NOTEBOOKS_TEST_GIT_SQUATS": str(workdir / SQUATS),
    }
    hub = RunningHub(workdir, local_config(repos["root"]), env)
    try:
        yield hub.start(), ports
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


def routes(hub: RunningHub) -> dict[str, Any]:
    pid = listening_pid(hub.proxy_api_port)
    assert pid is not None
    token = psutil.Process(pid).environ()["CONFIGPROXY_AUTH_TOKEN"]
    api = f"http://127.0.0.1:{hub.proxy_api_port}/api/routes"
    answer = requests.get(api, headers={"Authorization": f"token {token}"}, timeout=10)
    result: dict[str, Any] = answer.json()
    return result


def launch_outcome(client: Client, path: str) -> dict[str, Any]:
    """The server model once the launch is over: running or failed."""
    response = client.post(path)
    assert response.status_code in (201, 202, 502), response.text
    return wait_until(
        lambda: (m := client.get(path).json()).get("status") in ("running", "failed") and m,
        90,
        "the launch to end",
    )


def assert_fails_closed(
    hub: RunningHub, client: Client, path: str, squatter: Squatter, port: int
) -> None:
    model = launch_outcome(client, path)
    assert model["status"] == "failed", model
    message = model["failure"]["message"]
    assert f"Another process took port {port} on 127.0.0.1" in message, model
    # nothing routed to the squatter, nothing asked of it, its page never served as the user's
    assert not any(str(port) in str(r.get("target")) for r in routes(hub).values())
    user_url = f"http://{USER}.localhost:{hub.port}/user/{USER}/{model['name']}/"
    page = requests.get(user_url, timeout=30)
    assert PAGE not in page.text
    assert squatter.requests() == []
    assert squatter.process.poll() is None  # still the one listening: our side gave up


@contextlib.contextmanager
def squatted(hub: RunningHub, port: int) -> Iterator[tuple[Client, Squatter]]:
    """`port` held by a squatter while USER, with no server yet, launches; both cleaned up."""
    hub.remove_all_servers(USER)
    squatter = Squatter(hub.workdir, port)
    try:
        yield Client(hub, USER), squatter
    finally:
        squatter.stop()
        hub.remove_all_servers(USER)


@pytest.mark.timeout(300)
def test_a_squatted_server_port_fails_the_launch_closed(ports_hub, repos):
    hub, port = ports_hub[0], ports_hub[1]["server"]
    path = f"demo/hello/{repos['shas']['demo/hello'][0]}"
    with squatted(hub, port) as (client, squatter):
        assert_fails_closed(hub, client, path, squatter, port)
        # our own server was killed: nothing of the sandbox listens or runs on
        assert listening_pid(port) == squatter.process.pid
        squatter.stop()
        # the port free again, the same launch runs: the check takes the sandbox's server
        hub.remove_all_servers(USER)
        model = launch_outcome(client, path)
        assert model["status"] == "running", model


@pytest.mark.timeout(300)
def test_a_git_component_port_squatted_at_every_attempt_fails_the_launch_closed(ports_hub, repos):
    hub, port = ports_hub[0], ports_hub[1]["git"]
    path = f"demo/hello/{repos['shas']['demo/hello'][1]}"
    (hub.workdir / SQUATS).write_text(str(listeners.PORT_ATTEMPTS))
    with squatted(hub, port) as (client, squatter):
        assert_fails_closed(hub, client, path, squatter, port)
        assert hub.components() == []  # our component gone
        assert (hub.workdir / SQUATS).read_text() == "0"  # every attempt had the squatted port
        assert hub.log().count("Starting it again on another port") == listeners.PORT_ATTEMPTS - 1


@pytest.mark.timeout(300)
def test_a_squatted_git_component_port_is_given_up_for_another(ports_hub, repos):
    """A port taken between its choice and the component's bind (another launch's process,
    any session's code): the component starts again on a new port, and the launch runs,
    with nothing of the session ever sent to the squatter."""
    hub, port = ports_hub[0], ports_hub[1]["git"]
    path = f"demo/hello/{repos['shas']['demo/hello'][1]}"
    (hub.workdir / SQUATS).write_text("1")
    retries = hub.log().count("Starting it again on another port")
    with squatted(hub, port) as (client, squatter):
        model = launch_outcome(client, path)
        assert model["status"] == "running", model
        assert hub.log().count("Starting it again on another port") == retries + 1
        assert len(hub.components()) == 1
        ((pid, listen),) = (
            (p.pid, p.info["cmdline"][p.info["cmdline"].index("--listen") + 1])
            for p in psutil.process_iter(["cmdline"])
            if "glue.session.gitproxy" in (p.info["cmdline"] or [])
            and str(hub.workdir) in " ".join(p.info["cmdline"])
        )
        own = int(listen.rpartition(":")[2])
        assert own != port and listening_pid(own) == pid, "the component on a port of its own"
        assert listening_pid(port) == squatter.process.pid
        # the session's git goes through it: a push from the server's terminal would too
        assert client.get(path).json()["status"] == "running"
        assert squatter.requests() == []


@pytest.mark.parametrize(
    ("family", "address", "reaches"),
    [
        (socket.AF_INET, "127.0.0.1", True),
        (socket.AF_INET, "127.0.0.2", False),
        (socket.AF_INET6, "::1", False),
    ],
)
def test_a_listener_where_loopback_connections_land_is_an_impostor(family, address, reaches):
    """A squatter where a connection to 127.0.0.1 lands counts, in another process; one
    elsewhere on the port does not (it cannot get the route). Only loopback addresses are
    bound here: the any-addresses, which take loopback's connections too, are read as
    /proc/net/tcp{,6} spells them."""
    # 0.0.0.0, ::, ::ffff:127.0.0.1
    any_v6, mapped = "0" * 32, "0000000000000000FFFF00000100007F"
    for spelled in ("00000000", any_v6, mapped):
        assert listeners._reaches_loopback(listeners._address(spelled))
    for spelled in ("0200007F", "00000000000000000000000001000000"):  # 127.0.0.2, ::1
        assert not listeners._reaches_loopback(listeners._address(spelled))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import socket, sys, time\n"
        f"s = socket.socket({int(family)})\n"
        f"s.bind(({address!r}, {port}))\n"
        "s.listen(); print('up', flush=True); time.sleep(30)\n"
    )
    ours = subprocess.Popen(["sleep", "30"])  # the process we started, beside the squatter
    squatter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert squatter.stdout is not None and squatter.stdout.readline() == b"up\n"
        assert listeners.owner_of(port, ours.pid) is (False if reaches else None)
        assert listeners.owner_of(port, squatter.pid) is (True if reaches else None)
    finally:
        for process in (squatter, ours):
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


def _http_server(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("squatted", [1, listeners.PORT_ATTEMPTS])
def test_a_process_whose_port_was_taken_starts_again_on_another(tmp_path, squatted):
    """start_on_own_port with real processes: the squatter's port is given up for a fresh
    one (ours stopped first), until the attempts run out; then PortTaken, ours stopped."""
    port = free_port()
    squatter = Squatter(tmp_path, port)
    started: list[subprocess.Popen[bytes]] = []
    stops: list[int] = []
    given = [port] * squatted + [free_port()]

    def start(chosen: int) -> subprocess.Popen[bytes]:
        started.append(_http_server(chosen))
        return started[-1]

    async def stop() -> None:
        stops.append(started[-1].pid)
        started[-1].kill()
        started[-1].wait()

    run = listeners.start_on_own_port(
        start, stop, lambda: given.pop(0), "the test's server", seconds=30,
        log=logging.getLogger("test"),
    )
    try:
        if squatted < listeners.PORT_ATTEMPTS:
            asyncio.run(run)
            assert len(started) == squatted + 1 and stops == [p.pid for p in started[:-1]]
            assert given == []  # every port chosen was used, the last one ours
            assert listeners.owner_of(port, squatter.process.pid)
            assert listeners.owner_of(_port_of(started[-1]), started[-1].pid)
        else:
            with pytest.raises(listeners.PortTaken):
                asyncio.run(run)
            assert len(started) == listeners.PORT_ATTEMPTS
            assert len(stops) == listeners.PORT_ATTEMPTS - 1  # the last one is the caller's
        assert squatter.requests() == []
    finally:
        squatter.stop()
        for process in started:
            process.kill()
            process.wait()


def _port_of(process: subprocess.Popen[bytes]) -> int:
    return int(process.args[-1])  # type: ignore[index]
