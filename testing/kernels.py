"""Inside a running server: code run in a kernel as a notebook cell runs it, launches of
hostile repositories, and the single-user processes on this machine.

The sandbox, start-up, autosave and kube-kernel tests all act from inside a server the same way.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psutil
import websocket

from testing.hub import Client, RunningHub
from testing.repos import git


def hostile_repo(root: Path, full_path: str, build: dict[str, Any]) -> str:
    """A bare repository whose one commit holds `build`: path -> text, or ("link", target)."""
    work = root / ".work" / full_path
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    for path, content in build.items():
        file = work / path
        file.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            file.symlink_to(content[1])
        else:
            file.write_text(content)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "hostile")
    bare = root / f"{full_path}.git"
    git(root, "clone", "-q", "--bare", str(work), str(bare))
    return git(bare, "rev-parse", "HEAD")


def launch(
    setup: dict[str, Any], user: str, project: str, profile: str = "small"
) -> tuple[Client, dict[str, Any]]:
    hub: RunningHub = setup["hub"]
    hub.remove_all_servers(user)
    client = Client(hub, user)
    response = client.post(f"{project}/{setup['shas'][project]}", json={"profile": profile})
    assert response.status_code in (201, 202), response.text
    return client, client.wait_running(f"{project}/{setup['shas'][project]}", timeout=90)


class KernelDied(Exception):
    """The kernel ended while running the cell (the server restarts it)."""


def run_in_kernel(hub: RunningHub, client: Client, server: dict[str, Any], code: str) -> str:
    """Execute `code` in a new kernel of the server, as a notebook cell would; its stdout."""
    api = f"{hub.absolute(server['url'])}api/kernels"
    kernel = client.session.post(api, json={"name": "python3"}, timeout=60)
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    channels = f"{api.replace('http', 'ws', 1)}/{kernel_id}/channels"
    token = client.session.headers["Authorization"]
    assert isinstance(token, str)
    connection = websocket.create_connection(channels, header=[f"Authorization: {token}"])
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "msg_type": "execute_request",
        "username": client.user,
        "session": uuid.uuid4().hex,
        "version": "5.3",
        "date": "",
    }
    content = {
        "code": code,
        "silent": False,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    connection.send(
        json.dumps(
            {
                "header": header,
                "parent_header": {},
                "metadata": {},
                "content": content,
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    output: list[str] = []
    try:
        connection.settimeout(60)
        while True:
            message = json.loads(connection.recv())
            kind = message["msg_type"]
            state = message["content"].get("execution_state") if kind == "status" else None
            if state in ("restarting", "dead"):
                raise KernelDied(state)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if kind == "stream":
                output.append(message["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(message["content"]["traceback"]))
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                return "".join(output)
    finally:
        connection.close()
        client.session.delete(f"{api}/{kernel_id}", timeout=30)


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


def traces(workspace: Path) -> list[str]:
    return sorted(path.name for path in workspace.rglob("TRACE-*"))


def single_user_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        # the embedded default's entry point (JupyterHub's, on a held socket), or JupyterHub's
        if "glue.session.serverapp" in command or "jupyterhub.singleuser" in command:
            found.append(process)
    return found
