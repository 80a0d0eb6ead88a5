"""Pausing ("hibernating") a session and resuming it exactly as it was, in the embedded
default: a real hub, real sandboxed servers, real git (the local provider's bare repository).

A pause ends the server's processes and keeps its whole workspace (ignored files, untracked
files, a virtual environment inside it) and the hub's named server; the resume reopens that
workspace without a clone and without an autosave restore; the delete of a paused server
autosaves it first and then leaves nothing. The culler pauses an idle server and later
removes a paused one kept too long, with its autosave. Bad transitions are 4xx.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from testing.checks import wait_until
from testing.hub import Client, RunningHub
from testing.kernels import run_in_kernel
from testing.marks import starts_hub
from testing.repos import git, make_repo

PROJECT = "demo/other"
CULLED = "renku/paused"
# bytes no text encoding round-trips: ignored, untracked and in the virtual environment
IGNORED = bytes(range(256)) * 40
UNTRACKED = "unsaved notes \u2713\n".encode()
IN_VENV = b"VALUE = 42\n"

WRITE = f"""
import subprocess, sys
open('.gitignore', 'w').write('*.ckpt\\n.venv/\\n')
open('model.ckpt', 'wb').write({IGNORED!r})
open('notes.txt', 'wb').write({UNTRACKED!r})
subprocess.run([sys.executable, '-m', 'venv', '--without-pip', '.venv'], check=True)
open('.venv/mine.py', 'wb').write({IN_VENV!r})
"""


def patch(client: Client, path: str, **body: Any) -> Any:
    return client.request("PATCH", path, json=body)


def running_in(workspace: Path) -> list[int]:
    """The host's processes of a session: those working in its workspace or naming it (the
    sandbox's pid namespace hides the kernel's own pids from the host)."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cwd, args = process.info["cwd"] or "", " ".join(process.info["cmdline"] or [])
        if cwd.startswith(str(workspace)) or str(workspace) in args:
            found.append(process.pid)
    return found


def launched(
    hub: RunningHub, repos: dict, user: str, sha: str
) -> tuple[Client, str, Path, dict[str, Any]]:
    """`user`'s fresh server of PROJECT at `sha`, running: the user's client, the launch
    path, the project's bare repository and the server's model."""
    path, bare = f"{PROJECT}/{sha}", repos["root"] / f"{PROJECT}.git"
    hub.remove_all_servers(user)
    client = Client(hub, user)
    assert client.post(path).status_code in (201, 202)
    return client, path, bare, client.wait_running(path, timeout=90)


def assert_kept(workspace: Path) -> None:
    assert (workspace / "model.ckpt").read_bytes() == IGNORED
    assert (workspace / "notes.txt").read_bytes() == UNTRACKED
    assert (workspace / ".venv" / "mine.py").read_bytes() == IN_VENV
    assert (workspace / ".venv" / "pyvenv.cfg").exists()


def test_a_paused_server_resumes_with_its_whole_workspace_and_its_delete_autosaves_first(
    hub: RunningHub, repos: dict
) -> None:
    user, sha = "hibernia", repos["shas"][PROJECT][1]
    client, path, bare, server = launched(hub, repos, user, sha)
    assert "clone" in server["phases"], server  # the first start clones
    run_in_kernel(hub, client, server, WRITE)
    workspace = hub.workspaces / user / server["name"]
    assert running_in(workspace)

    # the list offers Pause beside Stop, and warns that kernels do not survive it
    page = client.get("", headers={"Accept": "text/html"}).text
    assert f'aria-label="Pause {PROJECT} at {sha[:7]}"' in page, page
    assert "kernels do not survive a pause" in page, page

    response = patch(client, path, state="hibernated")
    assert response.status_code == 200, response.text
    paused = response.json()
    assert paused["status"] == "hibernated" and paused["hibernated_at"], paused
    assert paused["disk_bytes"] > len(IGNORED), paused
    wait_until(lambda: not running_in(workspace), 20, "the server's processes ended")
    assert not [c for c in hub.components() if f"-{server['name']}/" in c]
    # the hub keeps the named server, stopped
    kept = hub.hub_servers(user)[server["name"]]
    assert kept["ready"] is False and kept["pending"] is None
    assert client.get(path).json()["status"] == "hibernated"
    listing = client.get("").json()["servers"]
    assert [s["status"] for s in listing if s["name"] == server["name"]] == ["hibernated"]
    page = client.get(path, headers={"Accept": "text/html"}).text
    assert "paused" in page.lower() and "Resume" in page and "Delete" in page, page

    # bad transitions: a second pause, a state that is none, a field that is none
    assert patch(client, path, state="hibernated").json()["error"] == "already_hibernated"
    bad = patch(client, path, state="sleeping")
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_state")
    bad = patch(client, path, state="running", profile="large")
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_field")

    response = patch(client, path, state="running")
    assert response.status_code in (201, 202), response.text
    resumed = client.wait_running(path, timeout=90)
    assert "clone" not in resumed["phases"], resumed  # no clone step ran
    assert resumed["restored_from"] is None and resumed["hibernated_at"] is None
    assert resumed["profile"] == server["profile"] and resumed["image"] == server["image"]
    assert_kept(workspace)
    assert run_in_kernel(hub, client, resumed, "print(open('.venv/mine.py').read())") == (
        "VALUE = 42\n\n"
    )
    # resuming a server that runs is refused
    again = patch(client, path, state="running")
    assert (again.status_code, again.json()["error"]) == (409, "not_hibernated")

    # paused again; a POST of the launch resumes it too, with its own profile whatever the
    # POST asks for
    assert patch(client, path, state="hibernated").status_code == 200
    assert client.post(path, json={"profile": "large"}).status_code in (201, 202)
    resumed = client.wait_running(path, timeout=90)
    assert resumed["profile"] == server["profile"] == "small", resumed
    assert "clone" not in resumed["phases"] and resumed["restored_from"] is None, resumed
    assert_kept(workspace)

    # paused again, then deleted: its autosave first, then nothing on disk or in the hub
    assert patch(client, path, state="hibernated").status_code == 200
    response = client.delete(path)
    assert response.status_code == 204, response.text
    branch = f"notebooks/autosave/{user}/{sha}"
    assert git(bare, "show", f"{branch}:notes.txt") == UNTRACKED.decode().rstrip("\n")
    assert server["name"] not in hub.hub_servers(user)
    assert not workspace.exists() and not (workspace.parent / f".{workspace.name}.ext4").exists()
    assert client.get(path).status_code == 404
    git(bare, "update-ref", "-d", f"refs/heads/{branch}")


def test_a_resume_refused_leaves_the_server_paused_with_its_work(
    hub: RunningHub, repos: dict
) -> None:
    """The resume is refused (the project is gone meanwhile): the server is paused as
    before, with its workspace, and resumes once the project is back. (A resume that fails
    in the hub: tests/test_portsquat.py.)"""
    user = "unresumed"
    client, path, bare, server = launched(hub, repos, user, repos["shas"][PROJECT][0])
    workspace = hub.workspaces / user / server["name"]
    (workspace / "notes.txt").write_bytes(UNTRACKED)  # the user's unsaved work
    assert patch(client, path, state="hibernated").status_code == 200
    moved = bare.with_name("moved-away.git")
    bare.rename(moved)
    try:
        response = patch(client, path, state="running")
        assert (response.status_code, response.json()["error"]) == (404, "project_not_found")
        # the list shows it while its project is gone (its status page is that 404)
        listed = [m for m in client.get("").json()["servers"] if m["name"] == server["name"]]
        assert [m["status"] for m in listed] == ["hibernated"], listed
        kept = hub.hub_servers(user)[server["name"]]
        assert kept["ready"] is False and kept["pending"] is None
    finally:
        moved.rename(bare)
    assert patch(client, path, state="running").status_code in (201, 202)
    resumed = client.wait_running(path, timeout=90)
    assert resumed["name"] == server["name"] and "clone" not in resumed["phases"], resumed
    assert (workspace / "notes.txt").read_bytes() == UNTRACKED
    assert client.delete(path).status_code in (202, 204)


def test_bad_transitions_are_4xx(hub: RunningHub, repos: dict) -> None:
    user, sha = "hibernia2", repos["shas"][PROJECT][2]
    path = f"{PROJECT}/{sha}"
    hub.remove_all_servers(user)
    client = Client(hub, user)
    missing = patch(client, path, state="hibernated")
    assert (missing.status_code, missing.json()["error"]) == (404, "server_not_found")
    missing = patch(client, path, state="running")
    assert (missing.status_code, missing.json()["error"]) == (404, "server_not_found")
    assert client.request("PATCH", path, data="{").json()["error"] in (
        "invalid_json", "unsupported_media_type"
    )
    assert patch(client, path).json()["error"] == "invalid_state"
    assert client.post(path).status_code == 202  # starting: the clone alone takes longer
    starting = patch(client, path, state="hibernated")
    assert (starting.status_code, starting.json()["error"]) == (409, "server_starting")
    client.wait_running(path, timeout=90)
    hub.remove_all_servers(user)


# --- the culler, and a hub restart, on a hub of their own ---------------------------------


@pytest.fixture(scope="module")
@starts_hub
def culled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("hibernate-repos")
    shas = make_repo(root, CULLED, versions=2)
    config = {
        "images": {"default": "registry.example.org/renku/default:1"},
        "profiles": [{"name": "small", "cpu": 0.5, "memory": "1G"}],
        "provider": {"kind": "local", "root": str(root)},
        # one running server per user (a paused one does not count), one paused one
        "launch": {"startTimeoutSeconds": 240, "serversPerUser": 1, "hibernatedPerUser": 1},
        "culling": {
            "idleSeconds": 15,
            "everySeconds": 10,
            "warningSeconds": 3600,
            "hibernatedKeepSeconds": 75,
        },
    }
    hub = RunningHub(tmp_path_factory.mktemp("hibernate-hub"), config)
    try:
        yield {"hub": hub.start(), "shas": shas, "bare": root / f"{CULLED}.git"}
    finally:
        hub.stop()


def test_the_culler_pauses_an_idle_server_and_later_removes_it_with_its_autosave(culled):
    hub, sha, bare = culled["hub"], culled["shas"][0], culled["bare"]
    # dora comes after a whole page of the hub's users (200): the culler's sweep of paused
    # servers reads every page
    fillers = {"usernames": [f"filler{i:03d}" for i in range(200)]}
    assert hub.admin("POST", "users", json=fillers).status_code == 201
    client = Client(hub, "dora")
    path = f"{CULLED}/{sha}"
    assert client.post(path).status_code in (201, 202)
    server = client.wait_running(path, timeout=250)
    run_in_kernel(hub, client, server, "open('idle.txt', 'w').write('kept\\n')")
    workspace = hub.workspaces / "dora" / server["name"]
    wait_until(
        lambda: client.get(path).json().get("status") == "hibernated", 90, "the culler paused it"
    )
    paused_at = datetime.fromisoformat(client.get(path).json()["hibernated_at"]).timestamp()
    # a hub restart keeps the paused server, and the workspace is where it was
    hub.stop()
    hub.start()
    assert client.get(path).json()["status"] == "hibernated"
    # the limit of servers counts running ones: another commit launches beside the paused one
    other = f"{CULLED}/{culled['shas'][1]}"
    response = client.post(other)
    assert response.status_code in (201, 202), response.text
    client.wait_running(other, timeout=250)
    response = client.request("PATCH", other, json={"state": "hibernated"})
    assert (response.status_code, response.json()["error"]) == (409, "too_many_paused")
    response = client.request("PATCH", path, json={"state": "running"})
    assert (response.status_code, response.json()["error"]) == (429, "too_many_servers")
    # the other one left idle: at the limit of paused servers the culler cannot pause it, so
    # it stops and removes it, autosaving it first
    other_name = hub.hub_servers("dora").keys() - {server["name"]}
    (other_workspace,) = [hub.workspaces / "dora" / name for name in other_name]
    (other_workspace / "late.txt").write_text("saved by the culler\n")
    wait_until(lambda: client.get(other).status_code == 404, 120, "the culler stopped the other")
    late = git(bare, "show", f"notebooks/autosave/dora/{culled['shas'][1]}:late.txt")
    assert late == "saved by the culler"
    assert (workspace.parent / f".{workspace.name}.ext4").exists() or (
        workspace / "idle.txt"
    ).exists()
    wait_until(lambda: client.get(path).status_code == 404, 150, "the culler removed it")
    # not before its keep time (hibernatedKeepSeconds)
    assert time.time() - paused_at >= 75
    assert git(bare, "show", f"{'notebooks/autosave/dora/'}{sha}:idle.txt") == "kept"
    assert not workspace.exists()
    assert server["name"] not in hub.hub_servers("dora")


# --- the steps' own decision, on a workspace without a hub ---------------------------------


def test_the_clone_and_session_steps_reopen_a_marked_workspace_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both steps (the local spawner's and the pod's init containers) skip their work on a
    workspace whose mark names the launched commit: a source or remote that cannot be
    reached proves that nothing was fetched or restored."""
    import json

    from glue.session import clone, gitsession, workspace

    sha = make_repo(tmp_path / "repos", "a/b", versions=2)[1]
    ws = tmp_path / "ws"
    clone.clone(f"file://{tmp_path / 'repos' / 'a' / 'b.git'}", sha, ws)
    (ws / "unsaved.bin").write_bytes(IGNORED)
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "--allow-empty", "-m", "x")
    gone = f"file://{tmp_path / 'nowhere.git'}"
    args = ["--source", gone, "--commit", sha, "--dest", str(ws)]
    assert clone.main(args) == 1  # not marked: a clone is attempted (and fails here)
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    session = ["--workspace", str(ws), "--origin", "http://127.0.0.1:9/a/b.git",
               "--secret-file", str(secret), "--name", "U", "--email", "u@x",
               "--remote", gone, "--branch", f"notebooks/autosave/u/{sha}", "--launched", sha]
    workspace.mark_opened(ws, sha)
    capsys.readouterr()
    assert clone.main(args) == 0
    assert "kept as it is" in capsys.readouterr().out
    assert gitsession.main(session) == 0
    assert json.loads(capsys.readouterr().out)["reopened"] is True
    assert (ws / "unsaved.bin").read_bytes() == IGNORED
    assert git(ws, "log", "-1", "--format=%s") == "x"  # the user's commit on top, kept
    assert workspace.opened(ws, sha) and not workspace.opened(ws, "0" * 40)
