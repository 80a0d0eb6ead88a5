"""Nothing of a repository runs when a server or kernel starts; nobody reaches another's kernel.

A hostile commit holds every file a Python, Jupyter or IPython start might read from
its working directory; each leaves a `TRACE-<name>` file in the workspace if it
runs. It is launched through the real hub, its kernel runs cells, and the
workspace must hold no trace while the user's own `import mymodule` still works.
Two users' servers then check that one user's kernel cannot subscribe to the
other's: the kernels listen on unix sockets in private homes, not on loopback TCP.
"""

from __future__ import annotations

import json
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
from tests.hubtools import RunningHub, make_repo
from tests.test_sandbox import hostile_repo, launch, run_in_kernel
from tests.test_security import single_user_processes

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="per-user ids need the hub to run as root (as make dev does here)"
)

# each writes TRACE-<name> beside itself when run (Python names the workspace in __file__)
TRACE = (
    "import os as _os\n"
    "open(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), 'TRACE-{name}'), 'w')"
    ".write('ran')\n"
)
# a uuid.py that then hands over to the real one, so an old server keeps running and shows it
UUID_PASS_THROUGH = """
import importlib, os, sys
_here = os.path.dirname(os.path.abspath(__file__))
_saved = sys.path[:]
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _here]
del sys.modules['uuid']
_real = importlib.import_module('uuid')
sys.path[:] = _saved
sys.modules['uuid'] = _real
globals().update({k: v for k, v in vars(_real).items() if not k.startswith('__')})
"""
# an ipykernel_launcher.py that then starts the real kernel
LAUNCHER_PASS_THROUGH = """
import sys
if __name__ == '__main__':
    del sys.path[0]
    from ipykernel import kernelapp
    kernelapp.launch_new_instance()
"""
GLUE_PASS_THROUGH = """
__path__.append(_os.path.join(_os.environ["PYTHONPATH"].split(":")[0], "glue"))
"""
# jupyter's JSON config: a server reading it would hide the README; a kernel, run the line
HIDE_README = {"ContentsManager": {"hide_globs": ["README*"]}}
EXEC_LINE = {"InteractiveShellApp": {"exec_lines": ["open('TRACE-json-config', 'w')"]}}
CODE_FILES = (
    "jupyter_server_config",
    "jupyter_notebook_config",
    "jupyter_lab_config",
    "jupyter_config",
    "ipython_config",
    "ipython_kernel_config",
    "sitecustomize",
    "usercustomize",
    "jedi",  # what IPython's completer imports at the first Tab
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


def hostile_start_files() -> dict[str, str]:
    files = {f"{name}.py": TRACE.format(name=name) for name in CODE_FILES}
    files["uuid.py"] = TRACE.format(name="uuid") + UUID_PASS_THROUGH
    # found by `python -m ipykernel_launcher` in the kernel's working directory
    files["ipykernel_launcher.py"] = TRACE.format(name="ipykernel_launcher") + LAUNCHER_PASS_THROUGH
    files["profile_default/ipython_kernel_config.py"] = TRACE.format(name="profile-config")
    files["profile_default/startup/00-start.py"] = TRACE.format(name="profile-startup")
    # found by the launch's own steps (`python -m glue.session.gitsession` in the workspace)
    # before the real package, whose modules it then hands on to
    files["glue/__init__.py"] = TRACE.format(name="glue-package") + GLUE_PASS_THROUGH
    files["trick.pth"] = TRACE.format(name="pth").replace("\n", ";") + "\n"
    for name in ("jupyter_server_config", "jupyter_notebook_config", "jupyter_lab_config"):
        files[f"{name}.json"] = json.dumps(HIDE_README)
    for name in ("ipython_kernel_config", "ipython_config", "jupyter_config"):
        files[f"{name}.json"] = json.dumps(EXEC_LINE)
    files["README.md"] = "a hostile project\n"
    files["mymodule.py"] = "VALUE = 42\n"
    files["script.py"] = "import mymodule\nprint(mymodule.VALUE)\n"
    return files


@pytest.fixture(scope="module")
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


def traces(workspace: Path) -> list[str]:
    return sorted(path.name for path in workspace.rglob("TRACE-*"))


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
