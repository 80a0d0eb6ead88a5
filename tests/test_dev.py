"""The README's first command: the embedded default starts, launches the demo, and stops cleanly.

Every test records the processes below `python -m glue.embedded` while it runs and,
whatever happens, ends them (SIGINT, then SIGTERM, then SIGKILL), so a broken
stop, or SIGINT ignored as under nohup, never leaves a stack running. "Nothing
left" is then checked by those process ids and by the ports the stack listened on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from glue.embedded.dev import STOP_SIGNALS, descendants, stop_in_order
from testing import CHECKOUT
from testing.marks import starts_hub
from testing.net import free_port

BANNER_URL = re.compile(r"(http://localhost:\d+/services/notebooks/\S+\.ipynb)")
TOKEN_LINE = re.compile(r"export TOKEN=(\w+)")
PORTS_LINE = re.compile(r"Internal ports on 127\.0\.0\.1 \(chosen free\): (.*)")


class Dev:
    """One `python -m glue.embedded` (as `make dev` runs it), its output in a file, its
    processes remembered."""

    def __init__(
        self,
        tmp: Path,
        *,
        ignore_sigint: bool = False,
        ignore_sighup: bool = False,
        terminal: bool = False,
        **env: str,
    ):
        self.tmp = tmp
        self.port = int(env.pop("NOTEBOOKS_PORT", free_port()))
        self.log_path = tmp / "dev.log"
        self.seen: dict[int, float] = {}  # pid -> create time, so a reused pid is not ours
        environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NOTEBOOKS_", "GITLAB_"))},
            "NOTEBOOKS_PORT": str(self.port),
            "NOTEBOOKS_STATE": str(tmp / "state"),
            "NOTEBOOKS_REPOS": str(tmp / "repos"),
            **env,
        }
        self._log = self.log_path.open("w+")
        # with `terminal`, a pseudo-terminal is its controlling terminal, as in a terminal
        # window, and what it prints is copied to the log
        self._terminal: int | None = None
        self._closing = threading.Event()
        output: Any = self._log
        if terminal:
            self._terminal, output = pty.openpty()

        def prepare() -> None:
            if ignore_sigint:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            if ignore_sighup:
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
            if terminal:
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(
            [sys.executable, "-m", "glue.embedded"],
            cwd=CHECKOUT,
            env=environ,
            stdin=output if terminal else None,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=prepare if ignore_sigint or ignore_sighup or terminal else None,
        )
        self._copier: threading.Thread | None = None
        if self._terminal is not None:
            os.close(output)
            self._copier = threading.Thread(target=self._copy, args=(self._terminal,))
            self._copier.start()
        self.remember()

    def _copy(self, terminal: int) -> None:
        while not self._closing.is_set():
            if not select.select([terminal], [], [], 0.2)[0]:
                continue
            try:
                data = os.read(terminal, 65536)
            except OSError:  # EIO: nothing has the terminal open any more
                return
            if not data:
                return
            self._log.write(data.decode(errors="replace"))
            self._log.flush()

    def close_terminal(self) -> None:
        """As when its terminal window is closed: the pseudo-terminal's master side goes."""
        if self._terminal is not None:
            self._closing.set()
            if self._copier is not None:
                self._copier.join(10)
            os.close(self._terminal)
            self._terminal = None

    def remember(self) -> list[int]:
        """Note every process now below the dev command (it is their reaper when the hub dies)."""
        pids = [self.process.pid, *descendants(self.process.pid)]
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                self.seen.setdefault(pid, psutil.Process(pid).create_time())
        return pids

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.remember()
            if match := pattern.search(self.log()):
                return match
            assert self.process.poll() is None, self.log()[-3000:]
            time.sleep(0.2)
        raise AssertionError(f"no {pattern.pattern!r}:\n{self.log()[-3000:]}")

    def wait_for_banner(self) -> tuple[str, str, list[int]]:
        launch_url = self.wait_for(BANNER_URL)[1]
        token = self.wait_for(TOKEN_LINE)[1]
        ports = [int(p) for p in re.findall(r"\d+", self.wait_for(PORTS_LINE)[1])]
        return launch_url, token, ports

    def alive(self) -> list[int]:
        """The remembered processes still running (zombies are gone for our purpose)."""
        alive = []
        for pid, created in self.seen.items():
            try:
                process = psutil.Process(pid)
                if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    def interrupt(self, timeout: float = 90) -> int | None:
        """Ctrl-C, as a terminal sends it; the exit status, or None if it did not end."""
        self.remember()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def end(self) -> None:
        """Make sure: SIGTERM, then SIGKILL to the command and all it started."""
        self.close_terminal()
        self.remember()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 20
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
        if self.process.poll() is None:
            self.process.wait(10)
        self._log.close()


@pytest.fixture
@starts_hub
def dev_runs() -> Iterator[list[Dev]]:
    runs: list[Dev] = []
    yield runs
    for run in runs:
        run.end()


def start(runs: list[Dev], tmp: Path, **kwargs) -> Dev:
    tmp.mkdir(parents=True, exist_ok=True)
    run = Dev(tmp, **kwargs)
    runs.append(run)
    return run


def port_open(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    except requests.ConnectionError:
        return False
    return True


def assert_nothing_left(run: Dev, ports: list[int], *, own_port: bool = True) -> None:
    deadline = time.monotonic() + 10
    while run.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: " ".join(psutil.Process(pid).cmdline())[:120] for pid in run.alive()}
    assert left == {}, f"processes left behind: {left}"
    ports = [run.port, *ports] if own_port else ports
    assert [p for p in ports if port_open(p)] == [], "ports still answering"


def launch_and_wait(launch_url: str, token: str) -> dict:
    headers = {"Authorization": f"token {token}"}
    api_url = launch_url.rsplit("/", 1)[0]  # without the notebook
    response = requests.post(api_url, headers=headers, timeout=60)
    assert response.status_code in (201, 202), response.text
    deadline = time.monotonic() + 90
    while (model := requests.get(api_url, headers=headers, timeout=30).json())["status"] != (
        "running"
    ):
        assert time.monotonic() < deadline, model
        time.sleep(0.3)
    return model


def test_embedded_default_end_to_end_and_a_clean_restart(tmp_path, dev_runs):
    first = start(dev_runs, tmp_path / "a")
    launch_url, token, ports = first.wait_for_banner()
    assert launch_url.startswith(f"http://localhost:{first.port}/services/notebooks/demo/")
    model = launch_and_wait(launch_url, token)
    headers = {"Authorization": f"token {token}"}
    base = f"http://localhost:{first.port}"
    # the demo user's server, on its own origin
    assert model["url"].startswith(f"http://demo.localhost:{first.port}/user/demo/")
    readme = requests.get(f"{model['url']}api/contents/README.md", headers=headers, timeout=30)
    assert "Version 1." in readme.json()["content"]
    # the demo notebook opens unmodified: JupyterLab has no cell ids to add to it
    notebook = requests.get(
        f"{model['url']}api/contents/hello.ipynb", headers=headers, timeout=30
    ).json()["content"]
    assert all("id" in cell for cell in notebook["cells"]) and notebook["nbformat_minor"] == 5
    run_readme_session(first.port, tmp_path / "a" / "repos", token)
    first.remember()
    assert first.interrupt() == 0, first.log()[-2000:]
    assert_nothing_left(first, ports)
    # the same state again: no failed ghosts, the earlier demo token refused
    second = start(dev_runs, tmp_path / "a", NOTEBOOKS_PORT=str(first.port))
    _, new_token, ports = second.wait_for_banner()
    assert new_token != token
    listing = requests.get(
        f"{base}/services/notebooks/", headers={"Authorization": f"token {new_token}"}, timeout=30
    )
    assert listing.json() == {"servers": []}
    old = requests.get(f"{base}/services/notebooks/", headers=headers, timeout=30)
    assert old.status_code == 401
    assert second.interrupt() == 0
    assert_nothing_left(second, ports)


def run_readme_session(port: int, repos: Path, token: str) -> None:
    """The README's curl session, as written, after pasting the printed `export TOKEN=` line
    (only the port and the repositories' folder are this test's own)."""
    text = (CHECKOUT / "README.rst").read_text()
    block = text[text.index("A session with the embedded default") :]
    lines = []
    for line in block.splitlines()[2:]:
        if line and not line.startswith("    "):
            break
        lines.append(line.removeprefix("    "))
    commands = [line[2:] for line in lines if line.startswith("$ ")]
    assert commands[0].startswith("export TOKEN="), commands
    script = "\n".join([f"export TOKEN={token}", *commands[1:]])
    script = script.replace("localhost:8000", f"localhost:{port}")
    script = script.replace(".dev/repos", str(repos))
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace("\n", "\necho '---'\n")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=CHECKOUT,
    )
    assert result.returncode == 0, result.stderr
    answers = [part.strip() for part in result.stdout.split("---")]
    shown = [line for line in lines if line and not line.startswith("$ ")]
    # each answer shown in the README starts as shown (names and shas are this run's own)
    assert len(answers) == len(commands), answers
    for expected in shown:
        head = expected[: expected.index(":") + 1] if ":" in expected else expected
        assert any(answer.startswith(head) for answer in answers), (expected, answers)


def test_two_instances_side_by_side(tmp_path, dev_runs):
    runs = [start(dev_runs, tmp_path / name) for name in ("one", "two")]
    banners = [run.wait_for_banner() for run in runs]
    for launch_url, token, _ in banners:
        launch_and_wait(launch_url, token)
    for run, (_, _, ports) in zip(runs, banners, strict=True):
        assert run.interrupt() == 0, run.log()[-2000:]
        assert_nothing_left(run, ports)


def test_ctrl_c_works_when_sigint_was_ignored(tmp_path, dev_runs):
    """Started with SIGINT ignored (nohup, some CI runners): Ctrl-C still stops everything."""
    run = start(dev_runs, tmp_path, ignore_sigint=True)
    _, _, ports = run.wait_for_banner()
    assert run.interrupt() == 0, run.log()[-2000:]
    assert_nothing_left(run, ports)


def listening_ports(run: Dev) -> list[int]:
    """The TCP ports that the processes of `run` listen on now (hub, proxy, glue, servers)."""
    ports = set()
    for pid in run.remember():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    ports.add(conn.laddr.port)
    return sorted(ports)


def started_with_a_server(runs: list[Dev], tmp: Path) -> tuple[Dev, list[int]]:
    """A run with the demo launched and running; the ports its processes listen on."""
    run = start(runs, tmp)
    launch_url, token, ports = run.wait_for_banner()
    launch_and_wait(launch_url, token)
    held = listening_ports(run)
    assert set(ports) <= set(held) and len(held) > len(ports) + 1, (ports, held)
    return run, held


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_sighup_and_sigterm_stop_everything_as_ctrl_c_does(tmp_path, dev_runs, sig):
    """The terminal closed (SIGHUP) or a supervisor's SIGTERM, with a server running: the
    stop in order of Ctrl-C, even when the signal comes again while it stops (a terminal,
    `make` and supervisors repeat it), at once or later."""
    run, held = started_with_a_server(dev_runs, tmp_path)
    run.process.send_signal(sig)
    burst = time.monotonic() + 0.5
    while time.monotonic() < burst and run.process.poll() is None:  # again and again at once:
        run.process.send_signal(sig)  # none may cut the stop short
        time.sleep(0.0005)
    deadline = time.monotonic() + 30
    while "Stopping servers" not in run.log() and run.process.poll() is None:
        assert time.monotonic() < deadline, run.log()[-2000:]
        time.sleep(0.05)
    if run.process.poll() is None:
        run.process.send_signal(sig)
    assert run.process.wait(90) == 0, run.log()[-2000:]
    assert "Stopping servers, hub, proxy and glue" in run.log()
    assert_nothing_left(run, held)


def test_closing_its_terminal_stops_everything(tmp_path, dev_runs):
    """`make dev` in a terminal window that is closed: the kernel hangs up (SIGHUP) and the
    terminal is gone for what it prints (EIO); the same stop as Ctrl-C, nothing left."""
    run = start(dev_runs, tmp_path, terminal=True)
    _, _, ports = run.wait_for_banner()
    held = listening_ports(run)
    run.close_terminal()
    assert run.process.wait(90) == 0
    assert_nothing_left(run, [*ports, *held])


def test_under_nohup_sighup_changes_nothing(tmp_path, dev_runs):
    """`nohup make dev` is meant to outlive its terminal: SIGHUP ignored stays ignored."""
    run = start(dev_runs, tmp_path, ignore_sighup=True)
    launch_url, _, ports = run.wait_for_banner()
    run.process.send_signal(signal.SIGHUP)
    time.sleep(2)
    assert run.process.poll() is None, run.log()[-2000:]
    health = launch_url.split("/services/notebooks/")[0] + "/services/notebooks/health"
    assert requests.get(health, timeout=30).status_code == 200
    assert run.interrupt() == 0, run.log()[-2000:]
    assert_nothing_left(run, ports)


def test_a_killed_dev_command_takes_everything_with_it(tmp_path, dev_runs):
    """`make dev` killed outright (SIGKILL: no stop of its own): the hub gets SIGTERM from
    the kernel and stops its server, the proxy and its services, within a bounded time."""
    run, held = started_with_a_server(dev_runs, tmp_path)
    run.process.kill()
    run.process.wait(10)
    deadline = time.monotonic() + 60
    while run.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_nothing_left(run, held)


def wait_for_process(run: Dev, text: str, timeout: float = 60) -> int:
    """The first process below the dev command whose command line holds `text`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in run.remember():
            with contextlib.suppress(psutil.NoSuchProcess):
                if text in " ".join(psutil.Process(pid).cmdline()):
                    return pid
        assert run.process.poll() is None, run.log()[-2000:]
        time.sleep(0.05)
    raise AssertionError(f"never saw {text}: {run.log()[-2000:]}")


@pytest.mark.parametrize("text", ["-m jupyterhub", "configurable-http-proxy", "-m glue --config"])
def test_ctrl_c_during_start_up_leaves_nothing(tmp_path, dev_runs, text):
    """Ctrl-C once the hub, then the proxy, then the glue is running, before the banner."""
    run = start(dev_runs, tmp_path)
    wait_for_process(run, text)
    assert run.interrupt() is not None
    assert_nothing_left(run, [])


@pytest.mark.parametrize("text", ["configurable-http-proxy", "-m glue --config"])
def test_a_dev_command_killed_during_start_up_leaves_nothing(tmp_path, dev_runs, text):
    """Killed (SIGKILL) once the hub has started the proxy, then the glue, before the hub
    handles SIGTERM: the hub still stops in order, once it can."""
    run = start(dev_runs, tmp_path)
    wait_for_process(run, text)
    run.process.kill()
    run.process.wait(10)
    deadline = time.monotonic() + 60
    while run.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_nothing_left(run, [])


def test_a_hub_killed_at_start_up_leaves_nothing_and_one_line(tmp_path, dev_runs):
    run = start(dev_runs, tmp_path)
    hub = wait_for_process(run, "-m jupyterhub")
    wait_for_process(run, "configurable-http-proxy")
    os.kill(hub, signal.SIGKILL)
    assert run.process.wait(60) == 1
    last = run.log().strip().splitlines()[-1]
    assert last.startswith("renku-notebooks: JupyterHub exited with status -9"), last
    assert_nothing_left(run, [])


def test_failures_before_the_hub_starts_are_one_line(tmp_path, dev_runs):
    bad_config = tmp_path / "my.yaml"
    bad_config.write_text("profiles: not-a-list\n")
    with Listener() as busy_port:
        cases = {
            "port": ({"NOTEBOOKS_PORT": str(busy_port)}, f"Port {busy_port}"),
            "config": ({"NOTEBOOKS_CONFIG": str(bad_config)}, str(bad_config)),
            "listen": ({"NOTEBOOKS_LISTEN": "0.0.0.0"}, "needs GitLab login"),
        }
        for name, (env, cause) in cases.items():
            run = start(dev_runs, tmp_path / name, **env)
            assert run.process.wait(60) == 1, run.log()
            lines = run.log().strip().splitlines()
            # one line naming the cause (a config's errors follow it, indented), no traceback
            assert lines[0].startswith("renku-notebooks: "), lines
            assert all(line.startswith("  at ") for line in lines[1:]), lines
            assert cause in lines[0], lines
            assert_nothing_left(run, [], own_port=name != "port")


def test_every_entry_point_answers_help_without_starting_anything():
    commands = (
        ["-m", "glue.embedded"],
        ["-m", "glue.embedded.dev"],
        ["-m", "glue"],
        ["-m", "glue.session.clone"],
        ["-m", "glue.session.gitsession"],
        ["-m", "glue.session.gitproxy"],
        ["-m", "glue.session.autosavecontrol"],
        ["-m", "glue.core.config"],
        ["-m", "glue.tools.chartschema"],
        ["-m", "glue.tools.typegen"],
        ["-m", "glue.tools.configdocs"],
    )

    def run(command: list[str], cwd: Path | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *command, "--help"], capture_output=True, text=True, timeout=30,
            cwd=cwd,
        )

    # side by side: each is a Python start-up that imports its stack, nothing to wait for
    with ThreadPoolExecutor(len(commands) + 1) as pool:
        runs = [pool.submit(run, command, CHECKOUT) for command in commands]
        elsewhere = pool.submit(run, ["-m", "glue.embedded"], None)  # from any directory
        for command, done in zip(commands, runs, strict=True):
            result = done.result()
            assert result.returncode == 0 and result.stdout.startswith("usage:"), (command, result)
        result = elsewhere.result()
    assert "NOTEBOOKS_PORT" in result.stdout and "NOTEBOOKS_CONFIG" in result.stdout


class Listener:
    """A port with a listener on it, as another program would hold it."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return self.sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_the_first_stop_signal_ignores_the_ones_that_follow():
    """The handler main() installs: from the first stop signal on, every stop signal is
    ignored, so a repeated one can never land between the interrupt and the stop's start
    (a CI run saw a SIGHUP there cut the stop short: exit -2)."""
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        with pytest.raises(KeyboardInterrupt):
            stop_in_order(signal.SIGHUP, None)
        now = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        assert now == dict.fromkeys(STOP_SIGNALS, signal.SIG_IGN)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
