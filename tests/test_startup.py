"""Nothing of a repository runs when a server or kernel starts; nobody reaches another's kernel.

A hostile commit holds every file a Python, Jupyter or IPython start might read from
its working directory; each leaves a `TRACE-<name>` file in the workspace if it
runs. It is launched through the real hub, its kernel runs cells, and the
workspace must hold no trace while the user's own `import mymodule` still works.
Two users' servers then check that one user's kernel cannot subscribe to the
other's: the kernels listen on unix sockets in private homes, not on loopback TCP.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from glue.hub.sandbox import Sandbox
from glue.session import kernel
from testing.hub import RunningHub
from testing.kernels import (
    hostile_repo,
    hostile_start_files,
    launch,
    run_in_kernel,
    single_user_processes,
    traces,
)
from testing.marks import starts_hub
from testing.repos import make_repo

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="per-user ids need the hub to run as root (as make dev does here)"
)

# what a Tab asks of the kernel (IPython imports jedi for it)
COMPLETE = """
from IPython import get_ipython
from IPython.core.completer import provisionalcompleter
try:
    with provisionalcompleter():
        print(len(list(get_ipython().Completer.completions('impo', 4))) > 0)
except Exception as e:
    print(type(e).__name__)
"""
SCRIPT = """
import os, subprocess, sys
ran = subprocess.run([sys.executable, "script.py"], capture_output=True, text=True)
print(os.environ.get("PYTHONSAFEPATH"), ran.stdout.strip() or ran.stderr)
"""
TRANSPORT = """
import json
from ipykernel.connect import get_connection_info
print(json.loads(get_connection_info())['transport'])
"""




@pytest.fixture(scope="module")
@starts_hub
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One hub for every test here: anyone may launch any project."""
    root = tmp_path_factory.mktemp("startup-repos")
    shas = {
        "evil/start": hostile_repo(root, "evil/start", hostile_start_files()),
        "demo/plain": make_repo(root, "demo/plain", versions=1)[0],
    }
    config = {
        "images": {"default": "registry.example.org/renku/default:1"},
        "profiles": [{"name": "small", "cpu": 1, "memory": "1G", "default": True}],
        "provider": {"kind": "local", "root": str(root)},
        "launch": {"serversPerUser": 2, "startTimeoutSeconds": 90},
    }
    hub = RunningHub(tmp_path_factory.mktemp("startup-hub"), config)
    try:
        yield {"hub": hub.start(), "shas": shas, "root": root}
    finally:
        hub.stop()




def test_nothing_of_the_repository_runs_at_server_or_kernel_start(setup):
    hub: RunningHub = setup["hub"]
    alice, server = launch(setup, "alice", "evil/start")
    workspace = hub.workspaces / "alice" / server["name"]
    assert (workspace / "uuid.py").is_file()
    seen = {"server start": traces(workspace)}
    listing = alice.session.get(f"{hub.absolute(server['url'])}api/contents/", timeout=30).json()
    assert "README.md" in {entry["name"] for entry in listing["content"]}  # no JSON config read
    # a first cell in a new kernel, then Tab completion (IPython imports jedi for it)
    assert run_in_kernel(hub, alice, server, "print(6 * 7)").strip() == "42"
    seen["kernel start and a first cell"] = traces(workspace)
    try:
        completed = run_in_kernel(hub, alice, server, COMPLETE).strip()
    except AssertionError as e:  # the cell's error: a jedi.py of the workspace breaks it
        completed = str(e)[-200:]
    seen["a completion"] = traces(workspace)
    assert seen == {"server start": [], "kernel start and a first cell": [], "a completion": []}
    assert completed == "True"
    # the user's own imports: the notebook's directory is on sys.path once the kernel is up
    assert run_in_kernel(hub, alice, server, "import mymodule; print(mymodule.VALUE)") == "42\n"
    where = (
        "import os, sys; print(sys.path.index(''), sys.path.index(os.path.dirname(os.__file__)))"
    )
    workspace_index, stdlib_index = run_in_kernel(hub, alice, server, where).split()
    assert int(workspace_index) > int(stdlib_index), "the workspace goes after the standard library"
    # the user's own scripts, run from a cell (or a terminal), keep their directory on sys.path
    assert run_in_kernel(hub, alice, server, SCRIPT).strip() == "None 42"
    # `import uuid` in a cell is the user's act: it finds the standard library's
    assert str(workspace) not in run_in_kernel(
        hub, alice, server, "import uuid; print(uuid.__file__)"
    )
    assert traces(workspace) == []


# in bob's kernel: every listening loopback port and every kernel socket path of the machine,
# subscribed to for a few seconds; what alice's kernel prints meanwhile must not show
EAVESDROP = """
import socket, time, zmq
marker = {marker!r}
ports = set()
for table in ('/proc/net/tcp', '/proc/net/tcp6'):
    try:
        lines = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        fields = line.split()
        if fields[3] == '0A':  # LISTEN
            ports.add(int(fields[1].split(':')[1], 16))
paths = set()
for line in open('/proc/net/unix').read().splitlines()[1:]:
    fields = line.split()
    if len(fields) > 7 and 'ipc' in fields[7]:
        paths.add(fields[7])
context = zmq.Context()
sockets = []
for port in ports:
    s = context.socket(zmq.SUB); s.setsockopt(zmq.LINGER, 0); s.setsockopt(zmq.SUBSCRIBE, b'')
    s.connect(f'tcp://127.0.0.1:{{port}}'); sockets.append(s)
for path in paths:
    s = context.socket(zmq.SUB); s.setsockopt(zmq.LINGER, 0); s.setsockopt(zmq.SUBSCRIBE, b'')
    s.connect(f'ipc://{{path}}'); sockets.append(s)
poller = zmq.Poller()
for s in sockets:
    poller.register(s, zmq.POLLIN)
heard = False
deadline = time.monotonic() + {seconds}
while time.monotonic() < deadline and not heard:
    for s, _ in poller.poll(200):
        frames = s.recv_multipart()
        heard = heard or any(marker.encode() in frame for frame in frames)
print(len(ports), len(paths), heard)
"""


def test_one_users_kernel_cannot_subscribe_to_anothers(setup):
    hub: RunningHub = setup["hub"]
    alice, alice_server = launch(setup, "alice", "demo/plain")
    bob, bob_server = launch(setup, "bob", "demo/plain")
    marker = "alice-secret-output"
    talk = f"import time\nfor i in range(60):\n    print('{marker}', flush=True); time.sleep(0.25)"
    said: list[str] = []
    speaker = threading.Thread(
        target=lambda: said.append(run_in_kernel(hub, alice, alice_server, talk)), daemon=True
    )
    speaker.start()
    time.sleep(3)  # alice's kernel is up and printing
    ports, paths, heard = run_in_kernel(
        hub, bob, bob_server, EAVESDROP.format(marker=marker, seconds=6)
    ).split()
    speaker.join(60)
    assert said and marker in said[0], "alice's kernel works through the server's API"
    assert heard == "False", f"bob read alice's output ({ports} ports, {paths} sockets tried)"
    assert int(ports) > 0  # the servers still listen on loopback: only kernels do not
    # alice's kernel still works
    assert run_in_kernel(hub, alice, alice_server, "print(6 * 7)").strip() == "42"


def reachable_by_others(path: str) -> bool:
    """Whether another user may run `path` (every directory on its way passable by others):
    a kernel of an unsandboxed server runs the interpreter by its name, as the server's uid."""
    real = Path(os.path.realpath(path))
    return all(os.stat(parent).st_mode & 0o001 for parent in real.parents)


@pytest.fixture(scope="module")
@starts_hub
def plain() -> Iterator[dict[str, Any]]:
    """A hub with `spawner.sandbox: false` and the hostile project."""
    # unsandboxed, the per-user ids reach the repositories and their workspaces through the
    # host's directories: a directory of our own they may pass (pytest's are 0700)
    top = Path(tempfile.mkdtemp(prefix="renku-plain-"))
    try:
        top.chmod(0o711)
        (top / "repos").mkdir()
        (top / "hub").mkdir()
        shas = {"evil/start": hostile_repo(top / "repos", "evil/start", hostile_start_files())}
        config = {
            "images": {"default": "registry.example.org/renku/default:1"},
            "profiles": [{"name": "small", "cpu": 1, "memory": "1G", "default": True}],
            "provider": {"kind": "local", "root": str(top / "repos")},
            "launch": {"serversPerUser": 2, "startTimeoutSeconds": 90},
            "spawner": {"sandbox": False},
        }
        hub = RunningHub(top / "hub", config).start()
        try:
            yield {"hub": hub, "shas": shas}
        finally:
            hub.stop()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_without_the_sandbox_nothing_runs_at_server_start(plain: dict[str, Any]) -> None:
    """`spawner.sandbox: false`: the same protections without bubblewrap; the kernels'
    sockets go in the server's own 0700 home."""
    hub: RunningHub = plain["hub"]
    _, server = launch(plain, "carol", "evil/start")
    workspace = hub.workspaces / "carol" / server["name"]
    assert (workspace / "uuid.py").is_file() and traces(workspace) == []
    [process] = [
        p
        for p in single_user_processes()
        if str(hub.workdir) in p.environ().get("JUPYTERHUB_ROOT_DIR", "")
    ]
    assert "--KernelManager.transport=ipc" in process.cmdline()
    runtime = Path(process.environ()["JUPYTER_RUNTIME_DIR"])
    home = Path(process.environ()["HOME"])
    assert runtime.parent == home and home.stat().st_mode & 0o777 == 0o700
    assert home.stat().st_uid == process.uids().real != 0


@pytest.mark.skipif(
    not reachable_by_others(sys.executable),
    reason="this machine's interpreter is in a directory other users cannot pass (/root)",
)
def test_without_the_sandbox_kernels_start_on_unix_sockets(plain: dict[str, Any]) -> None:
    hub: RunningHub = plain["hub"]
    carol, server = launch(plain, "carol", "evil/start")
    workspace = hub.workspaces / "carol" / server["name"]
    assert run_in_kernel(hub, carol, server, "import mymodule; print(mymodule.VALUE)") == "42\n"
    assert run_in_kernel(hub, carol, server, TRANSPORT).strip() == "ipc"
    assert traces(workspace) == []


def test_kernel_sockets_fit_in_every_home(tmp_path: Path) -> None:
    """A unix socket's path holds 107 bytes: the longest server name and user id still fit,
    in both ways to run; a runtime directory that leaves no room fails the launch clearly."""
    workspace = tmp_path / ("u" * 200) / ("s" * 30)
    for isolated in (True, False):
        home = Sandbox(uid=3_999_999, workspace=workspace, isolated=isolated).home
        socket = kernel.runtime_dir(home) / f"kernel-{uuid.uuid4()}-ipc-5"
        assert len(os.fsencode(socket)) <= kernel.SOCKET_PATH_MAX, socket
    with pytest.raises(kernel.SocketPathTooLong):
        kernel.runtime_dir(Path("/" + "h" * 80))
