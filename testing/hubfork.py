"""Hubs started from one Python that has already imported JupyterHub: a fork server.

Every test hub is `python -m jupyterhub -f testing/hub_config.py`, and about half of a
hub's start is importing `jupyterhub.app` (1 to 1.5 s of CPU on 2 cores), the same every
time. The suite starts dozens of hubs, on two cores it shares with everything else. So each
test process keeps one fork server (this module, run as `python -m testing.hubfork`) that
imports `jupyterhub.app` once and forks a hub for each start. The fork then does what the
interpreter would have done for `python -m jupyterhub`, in the order it would: a session of
its own, the hub's log as its stdout and stderr, its working directory and environment, its
argv, and JupyterHub's `__main__`. From there on it is the same JupyterHub, configured by
the same file, and nothing of the glue is imported before its config asks for it (the
glue reads its environment as it is imported).

Two things differ from an exec'd hub, and no test reads either of the hub process itself:
its /proc cmdline is the fork server's, and its /proc environ is the fork server's start
environment (a process's os.environ never shows there). Its children (the proxy, the glue,
the servers) are exec'd by JupyterHub from its real environment, as before.

`ForkedHub` is what `RunningHub.process` holds instead of a Popen: the fork server reaps its
hubs and writes each exit status where `poll` and `wait` read it. `NOTEBOOKS_TEST_HUB_FORK=0`
starts every hub with exec, as `RunningHub` does for a hub of another checkout or Python.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import runpy
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

from testing import CHECKOUT

ENABLED = os.environ.get("NOTEBOOKS_TEST_HUB_FORK", "1") != "0"
MAX_MESSAGE = 1 << 20  # a start's argv, environment and working directory, as JSON
REAP_SECONDS = 0.05


class ForkedHub:
    """A hub forked by the fork server, as much of `subprocess.Popen` as RunningHub and the
    tests use: its pid, `poll`, `wait`, `send_signal`, `returncode`."""

    def __init__(self, pid: int, statuses: Path):
        self.pid = pid
        self._status = statuses / str(pid)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self._status.exists():
            self.returncode = int(self._status.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"hub {self.pid}", timeout or 0)
            time.sleep(REAP_SECONDS)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # an ended hub's pid may be another process's by now
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


class ForkServer:
    """This test process's fork server: started at its first hub, ended with the process."""

    _lock = threading.Lock()
    _running: ForkServer | None = None

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.statuses = Path(tempfile.mkdtemp(prefix="hubfork-"))
        self.socket = ours
        self.process = subprocess.Popen(
            [sys.executable, "-m", "testing.hubfork", str(theirs.fileno()), str(self.statuses)],
            cwd=CHECKOUT,  # where `-m testing.hubfork` finds this package, whatever our cwd
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        atexit.register(self.close)

    @classmethod
    def get(cls) -> ForkServer:
        with cls._lock:
            if cls._running is None or cls._running.process.poll() is not None:
                cls._running = cls()
            return cls._running

    def start(self, argv: list[str], env: dict[str, str], cwd: Path, log: IO[bytes]) -> ForkedHub:
        """`python -m jupyterhub <argv>` in `cwd` with `env`, writing to `log`, in a session
        of its own (Popen's start_new_session)."""
        request = json.dumps({"argv": argv, "env": env, "cwd": str(cwd)}).encode()
        with self._lock:
            socket.send_fds(self.socket, [request], [log.fileno()])
            answer = self.socket.recv(MAX_MESSAGE)
        if not answer:
            raise RuntimeError(f"the hub fork server ended (exit {self.process.wait()})")
        return ForkedHub(json.loads(answer)["pid"], self.statuses)

    def close(self) -> None:
        self.socket.close()  # the server ends at the end of its socket
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        shutil.rmtree(self.statuses, ignore_errors=True)


def start(argv: list[str], env: dict[str, str], cwd: Path, log: IO[bytes]) -> ForkedHub:
    return ForkServer.get().start(argv, env, cwd, log)


# --- the fork server's own process --------------------------------------------------------


def run_hub(request: dict[str, Any], log_fd: int, server: socket.socket) -> None:
    """In the fork: become `python -m jupyterhub` as an exec would have made it; never
    returns."""
    code: int | str | None = 1
    try:
        os.setsid()
        server.close()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(null)
        os.close(log_fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["jupyterhub", *request["argv"]]
        sys.path[0] = request["cwd"]  # `python -m`'s first entry: its working directory
        random.seed()  # not the fork server's sequence, the same in every hub
        try:
            runpy.run_module("jupyterhub", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as end:
            code = end.code
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def reap(statuses: Path) -> None:
    """Write the exit status of each hub that ended (Popen's returncode: -N for signal N)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        done = statuses / f"{pid}.tmp"
        done.write_text(str(os.waitstatus_to_exitcode(status)))
        done.rename(statuses / str(pid))


def serve(server: socket.socket, statuses: Path) -> None:
    # the imports each hub would repeat: JupyterHub, and aiohttp, which the local spawner's
    # modules import (nothing of the glue itself: it reads the hub's environment)
    import aiohttp  # noqa: F401
    import jupyterhub.app  # noqa: F401

    while True:
        readable, _, _ = select.select([server], [], [], REAP_SECONDS)
        reap(statuses)
        if not readable:
            continue
        message, fds, _, _ = socket.recv_fds(server, MAX_MESSAGE, 1)
        if not message:
            return  # the test process closed its end
        request = json.loads(message)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_hub(request, fds[0], server)
        os.close(fds[0])
        server.send(json.dumps({"pid": pid}).encode())


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])), Path(sys.argv[2]))
