"""The sandbox of the embedded default, tried as an attacker would: from inside a server.

Code runs in a real server's kernel (through the server's kernel API, as a
user would run a cell), and hostile repositories are launched through the real
hub; what the host must keep is then checked on the host.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from glue.core.config import validate
from glue.embedded import dev
from glue.hub import disk, sandbox
from glue.hub.sandbox import Sandbox
from testing.checks import assert_hidden, wait_until
from testing.hub import Client, RunningHub, end_processes, processes_using_hub
from testing.kernels import KernelDied, hostile_repo, launch, run_in_kernel
from testing.marks import starts_hub
from testing.net import free_port, listening_pid
from testing.repos import git, make_repo

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="per-user ids need the hub to run as root (as make dev does here)"
)

# read in alice's kernel: what the host must keep from her
PROBE = """
import json, os
def attempt(call):
    try:
        return repr(call())[:300]
    except Exception as e:
        return "refused: " + type(e).__name__
paths = json.loads({paths!r})
print(json.dumps({{
    "uid": os.getuid(),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "environ": dict(os.environ),
    "read": {{n: attempt(lambda p=p: open(p, "rb").read()) for n, p in paths["read"].items()}},
    "list": {{n: attempt(lambda p=p: os.listdir(p)) for n, p in paths["list"].items()}},
    "write": {{n: attempt(lambda p=p: open(p, "w").write("x")) for n, p in paths["write"].items()}},
}}))
"""




@pytest.fixture(scope="module")
@starts_hub
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A hub of its own, so that any project may be launched by anyone."""
    root = tmp_path_factory.mktemp("sandbox-repos")
    workdir = tmp_path_factory.mktemp("sandbox-hub")
    canary = workdir / "canary.txt"
    canary.write_text("the host's own file\n")
    shas = {"demo/plain": make_repo(root, "demo/plain", versions=1)[0]}
    shas["evil/links"] = hostile_repo(
        root,
        "evil/links",
        {
            "data": ("link", "/"),
            # from <workdir>/workspaces/<user>/<server> up to the hub's state
            "up.ipynb": ("link", "../../../state/jupyterhub_cookie_secret"),
            "canary.txt": ("link", str(canary)),
            "up": ("link", "../../.."),
        },
    )
    # a repository that asks for a submodule, a filter and (in its own config) hooks
    shas["evil/other"] = make_repo(root, "evil/other", versions=1)[0]
    shas["evil/clone"] = hostile_submodule_repo(root, shas["evil/other"])
    config = {
        "images": {"default": "registry.example.org/renku/default:1"},
        "profiles": [
            {"name": "small", "cpu": 1, "memory": "1G", "default": True},
            {"name": "tiny", "cpu": 0.5, "memory": "300M"},
            {"name": "cramped", "cpu": 0.5, "memory": "500M", "disk": "64M"},
        ],
        "provider": {"kind": "local", "root": str(root)},
        "launch": {"serversPerUser": 2, "startTimeoutSeconds": 90},
    }
    # internal ports that stay across a hub restart (the glue keeps its API URL)
    hub_port = free_port()
    env = {"NOTEBOOKS_HUB_PORT": str(hub_port), "NOTEBOOKS_PROXY_API_PORT": str(free_port())}
    hub = RunningHub(workdir, config, extra_env=env)
    try:
        yield {"hub": hub.start(), "shas": shas, "canary": canary, "root": root}
    finally:
        leftovers = processes_using_hub(hub_port)  # the glue of a hub killed and restarted
        hub.stop()
        end_processes([p for p in leftovers if p.is_running()])


def hostile_submodule_repo(root: Path, other_sha: str) -> str:
    """`sub` is a submodule of evil/other; every file asks for the `evil` filter; the
    bare repository's own config and hooks would write `pwned` files if git ran them."""
    other = root / "evil" / "other.git"
    hostile_repo(
        root,
        "evil/clone",
        {
            ".gitattributes": "* filter=evil\n",
            ".gitmodules": f'[submodule "sub"]\n\tpath = sub\n\turl = {other.as_uri()}\n',
            "README.md": "hello\n",
        },
    )
    work = root / ".work" / "evil" / "clone"
    git(work, "update-index", "--add", "--cacheinfo", f"160000,{other_sha},sub")
    git(work, "commit", "-q", "-m", "submodule")
    bare = root / "evil" / "clone.git"
    git(bare, "fetch", "-q", str(work), "main:main")
    pwn = "sh -c 'echo pwned > pwned-$0.txt; cat' "
    git(bare, "config", "filter.evil.smudge", pwn + "filter")
    git(bare, "config", "filter.evil.required", "true")
    git(bare, "config", "core.fsmonitor", pwn + "fsmonitor")
    for hook in ("post-checkout", "post-merge", "pre-upload-pack", "post-update"):
        script = bare / "hooks" / hook
        script.write_text(f"#!/bin/sh\necho pwned > {root}/pwned-{hook}.txt\n")
        script.chmod(0o755)
    return git(bare, "rev-parse", "main")








def contents(
    hub: RunningHub,
    client: Client,
    server: dict[str, Any],
    path: str,
    method: str = "GET",
    **kwargs: Any,
) -> requests.Response:
    url = f"{hub.absolute(server['url'])}api/contents/{path}"
    return client.session.request(method, url, timeout=30, **kwargs)


def test_a_server_sees_nothing_of_the_hub_other_users_or_other_processes(setup):
    hub: RunningHub = setup["hub"]
    alice, alice_server = launch(setup, "alice", "demo/plain")
    bob, bob_server = launch(setup, "bob", "demo/plain")
    state = hub.workdir / "state"
    bob_workspace = hub.workspaces / "bob" / bob_server["name"]
    glue = listening_pid(hub.glue_port)
    assert glue and (bob_workspace / "README.md").is_file()
    paths = {
        "read": {
            "cookie secret": str(state / "jupyterhub_cookie_secret"),
            "hub database": str(state / "jupyterhub.sqlite"),
            "bob's readme": str(bob_workspace / "README.md"),
            "glue environ": f"/proc/{glue}/environ",
            "hub environ": f"/proc/{hub.process.pid}/environ",
            "shadow": "/etc/shadow",
        },
        "list": {"bob's workspace": str(bob_workspace), "state": str(state)},
        "write": {
            "state": str(state / "planted"),
            "system": "/usr/planted",
            "python": str(Path(os.__file__).parent / "planted.py"),
            "bob's workspace": str(bob_workspace / "planted"),
        },
    }
    seen = json.loads(
        run_in_kernel(hub, alice, alice_server, PROBE.format(paths=json.dumps(paths)))
    )
    for kind in ("read", "list", "write"):
        for name, result in seen[kind].items():
            assert result.startswith("refused"), f"alice could {kind} {name}: {result}"
    assert not (state / "planted").exists() and not (bob_workspace / "planted").exists()
    # her own processes only (the sandbox's init, the server, the kernel), none of the host's
    assert max(seen["pids"]) < 100 and glue not in seen["pids"], seen["pids"]
    assert_hidden(hub.admin_token, json.dumps(seen["environ"]), "alice's kernel environment")
    bob_seen = json.loads(
        run_in_kernel(
            hub, bob, bob_server, PROBE.format(paths='{"read": {}, "list": {}, "write": {}}')
        )
    )
    assert 0 not in (seen["uid"], bob_seen["uid"])
    assert seen["uid"] != bob_seen["uid"]
    # what alice writes in her workspace is hers, on the host too
    run_in_kernel(hub, alice, alice_server, "open('mine.txt', 'w').write('x')")
    alice_workspace = hub.workspaces / "alice" / alice_server["name"]
    assert (alice_workspace / "mine.txt").stat().st_uid == seen["uid"]


def test_symlinks_in_a_repository_resolve_inside_the_sandbox(setup):
    hub: RunningHub = setup["hub"]
    alice, server = launch(setup, "alice", "evil/links")
    secret = (hub.workdir / "state" / "jupyterhub_cookie_secret").read_bytes().hex()
    root = contents(hub, alice, server, "data")
    assert root.status_code == 200, root.text
    names = {entry["name"] for entry in root.json()["content"]}
    assert "usr" in names and "srv" not in names and "boot" not in names, names
    for path in (
        "up.ipynb",
        f"data{hub.workdir}/state/jupyterhub_cookie_secret",
        "up/state/jupyterhub_cookie_secret",
        "data/etc/shadow",
    ):
        response = contents(hub, alice, server, path, params={"format": "base64"})
        assert response.status_code != 200 or "base64" not in response.text, response.text
        assert_hidden(secret, response.content.hex(), f"contents of {path}")
    # writing through a symlink changes nothing outside the sandbox's writable places
    before = setup["canary"].read_text()
    for path in ("canary.txt", "up/state/planted.txt"):
        contents(
            hub,
            alice,
            server,
            path,
            "PUT",
            json={"type": "file", "format": "text", "content": "overwritten"},
        )
    assert setup["canary"].read_text() == before
    assert not (hub.workdir / "state" / "planted.txt").exists()


def test_cloning_a_hostile_repository_runs_nothing_and_fetches_no_submodule(setup):
    hub: RunningHub = setup["hub"]
    alice, server = launch(setup, "alice", "evil/clone")
    workspace = hub.workspaces / "alice" / server["name"]
    assert (workspace / "README.md").read_text() == "hello\n"  # checked out, unfiltered
    assert (workspace / ".gitattributes").is_file()
    assert (workspace / "sub").is_dir() and not any((workspace / "sub").iterdir())
    listing = contents(hub, alice, server, "sub").json()
    assert listing["content"] == []
    planted = [*workspace.rglob("pwned*"), *setup["root"].rglob("pwned*")]
    assert planted == [], planted


def test_sandbox_command_names_no_host_path_it_may_write_but_the_workspace(tmp_path):
    """The one writable host directory is the workspace; the rest is read-only or in memory."""
    sandbox = Sandbox(uid=3_000_001, workspace=tmp_path / "ws")
    command = sandbox.command(["true"], readable=[tmp_path / "repo.git"])
    writable = [command[i + 1] for i, arg in enumerate(command) if arg == "--bind"]
    assert writable == [str(tmp_path / "ws")]
    sandbox.prepare()
    assert (tmp_path / "ws").stat().st_uid == 3_000_001
    result = subprocess.run(
        sandbox.command(["sh", "-c", "id -u; touch /usr/x 2>/dev/null || echo ro"]),
        env=sandbox.environment(os.environ),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["3000001", "ro"]


def test_without_the_sandbox_a_command_still_runs_as_the_users_id_in_its_workspace(tmp_path):
    """`spawner.sandbox: false` (benchmarks, single-user machines) drops bubblewrap only."""
    plain = Sandbox(uid=3_000_002, workspace=tmp_path / "ws", isolated=False)
    plain.prepare()
    command = plain.command(["sh", "-c", 'id -u; pwd; echo "$HOME"'])
    assert sandbox.BWRAP not in command
    result = subprocess.run(
        command, env=plain.environment(os.environ), capture_output=True, text=True, check=True
    )
    uid, cwd, home = result.stdout.split()
    assert (uid, cwd) == ("3000002", str(tmp_path / "ws"))
    assert Path(home).stat().st_uid == 3_000_002 and Path(home) != Path(sandbox.HOME)
    plain.release()
    assert not Path(home).exists()


@pytest.mark.skipif(sandbox.limits_unavailable() is not None, reason="no cgroups to enforce with")
def test_a_notebook_past_its_profiles_memory_is_stopped_and_nothing_else(setup):
    hub: RunningHub = setup["hub"]
    alice, server = launch(setup, "alice", "demo/plain", profile="tiny")
    uid = int(run_in_kernel(hub, alice, server, "import os; print(os.getuid())"))
    grow = "chunks = [bytearray(50 * 2**20) for _ in range(40)]\nprint('survived')"
    with pytest.raises(KernelDied):
        run_in_kernel(hub, alice, server, grow)
    # the server lives on, its next kernel works, and the kernel never held more than its limit
    path = f"demo/plain/{setup['shas']['demo/plain']}"
    assert alice.get(path).json()["status"] == "running"
    assert run_in_kernel(hub, alice, server, "print(6 * 7)").strip() == "42"
    workspace = hub.workspaces / "alice" / server["name"]
    name = Sandbox(uid=uid, workspace=workspace, memory=1).cgroup_name
    group = sandbox._own_cgroup("memory") / sandbox.CGROUP_GROUP / name
    oom = dict(line.split() for line in (group / "memory.oom_control").read_text().splitlines())
    assert int(oom["oom_kill"]) > 0  # the kernel's OOM killer ended it, inside this cgroup
    assert int((group / "memory.max_usage_in_bytes").read_text()) <= 300 * 10**6
    # the hub's next poll tells the glue, whose answer and list page say why the kernel died
    model = wait_until(
        lambda: (m := alice.get(path).json())["memory"]["oom_kills"] and m, 60, "the kill counted"
    )
    assert model["memory"] == {
        "limit": "300M", "oom_kills": int(oom["oom_kill"]), "server_killed": False
    }
    assert model["status"] == "running" and model["failure"] is None
    page = alice.get("", headers={"Accept": "text/html"})
    assert "Out of memory" in page.text and "the profile&#39;s 300M" in page.text, page.text


@pytest.mark.skipif(sandbox.limits_unavailable() is not None, reason="no cgroups to enforce with")
def test_a_server_killed_for_its_memory_fails_with_that_reason(setup):
    """The kernel makes its server the OOM killer's first choice (raising a process's
    oom_score_adj needs no privilege), then grows past the profile: the server dies."""
    hub: RunningHub = setup["hub"]
    alice, server = launch(setup, "alice", "demo/plain", profile="tiny")
    path = f"demo/plain/{setup['shas']['demo/plain']}"
    grow = (
        "import os\n"
        "open(f'/proc/{os.getppid()}/oom_score_adj', 'w').write('1000')\n"
        "chunks = [bytearray(50 * 2**20) for _ in range(40)]"
    )
    with pytest.raises((KernelDied, websocket.WebSocketException, OSError)):
        run_in_kernel(hub, alice, server, grow)
    model = wait_until(
        lambda: (m := alice.get(path).json())["status"] == "failed" and m, 90, "the server failed"
    )
    assert model["memory"]["server_killed"] and model["memory"]["oom_kills"] >= 1, model
    assert model["failure"]["reason"] == "out_of_memory", model["failure"]
    assert model["failure"]["message"] == (
        "Stopped: used more than the profile's memory (300M)."
    )
    page = alice.get(path, headers={"Accept": "text/html"})
    assert 'data-reason="out_of_memory"' in page.text
    assert "used more than the profile&#39;s memory (300M)" in page.text, page.text
    # the rest of the machine is unaffected: the hub and the glue answer, bob launches
    assert requests.get(f"{hub.url}/hub/api/", timeout=10).status_code == 200
    bob, bob_server = launch(setup, "bob", "demo/plain")
    assert run_in_kernel(hub, bob, bob_server, "print(6 * 7)").strip() == "42"
    hub.remove_all_servers("alice")


# --- bounded processes and disk: what one user's server may take from the machine ----------

FORK_MANY = """
import json, subprocess
children, refused = [], None
for _ in range(1200):
    try:
        children.append(subprocess.Popen(["sleep", "300"]))
    except OSError as e:
        refused = e.errno
        break
for child in children:
    child.kill()
for child in children:
    child.wait()
print(json.dumps({"started": len(children), "refused": refused}))
"""


@pytest.fixture(scope="module")
def dora(setup: dict[str, Any]) -> tuple[Client, dict[str, Any]]:
    """One server of the default profile (default process limit and disk), for the tests
    whose subject is a limit, not the launch."""
    return launch(setup, "dora", "demo/plain")


def test_a_server_cannot_start_more_processes_than_its_limit(setup, dora):
    """1,200 processes from one kernel (more than `spawner.processLimit`, 1024): the fork past
    the limit fails inside the server, which works on afterwards."""
    hub: RunningHub = setup["hub"]
    client, server = dora
    seen = json.loads(run_in_kernel(hub, client, server, FORK_MANY))
    assert seen["refused"] == errno.EAGAIN, seen
    assert seen["started"] < 1024, seen  # the server and its kernel count too
    assert run_in_kernel(hub, client, server, "print(6 * 7)").strip() == "42"
    path = f"demo/plain/{setup['shas']['demo/plain']}"
    assert client.get(path).json()["status"] == "running"


def test_a_file_past_the_default_disk_cannot_be_made(setup, dora):
    """12 GiB in a workspace of the default profile (10G): refused, and the machine's disk
    holds only what the workspace really wrote."""
    hub: RunningHub = setup["hub"]
    client, server = dora
    code = (
        "import os, json\n"
        "st = os.statvfs('.')\n"
        "fd = os.open('big.bin', os.O_WRONLY | os.O_CREAT, 0o600)\n"
        "try:\n"
        "    os.posix_fallocate(fd, 0, 12 * 2**30)\n"
        "    refused = None\n"
        "except OSError as e:\n"
        "    refused = e.errno\n"
        "os.close(fd)\n"
        "os.remove('big.bin')\n"
        "print(json.dumps({'refused': refused, 'size': st.f_blocks * st.f_frsize}))\n"
    )
    seen = json.loads(run_in_kernel(hub, client, server, code))
    assert seen["refused"] == errno.ENOSPC, seen
    assert 9 * 10**9 < seen["size"] <= 10 * 10**9, seen
    workspace = hub.workspaces / "dora" / server["name"]
    assert os.path.ismount(workspace)
    image = workspace.parent / f".{workspace.name}.ext4"
    assert image.stat().st_uid == 0 and image.stat().st_mode & 0o777 == 0o600
    assert image.stat().st_blocks * 512 < 300 * 2**20  # sparse: what was written, not 10G


WRITE = """
import errno, json, os
def write(name, size):
    try:
        with open(name, "wb") as f:
            for _ in range(size // 2**20):
                f.write(bytes(2**20))
        return None
    except OSError as e:
        return e.errno
"""


def test_a_workspace_is_a_disk_of_the_profiles_size_warned_of_autosaved_and_kept(setup):
    """The profile `cramped` has 64M: a bigger file fails; past 90% the hub autosaves once
    and the list and the launch page warn; the workspace survives a stop, a start and a hub
    restart, and goes with the server."""
    hub: RunningHub = setup["hub"]
    erin, server = launch(setup, "erin", "demo/plain", profile="cramped")
    path = f"demo/plain/{setup['shas']['demo/plain']}"
    workspace = hub.workspaces / "erin" / server["name"]
    image = workspace.parent / f".{workspace.name}.ext4"
    assert os.path.ismount(workspace)
    past = WRITE + "print(json.dumps(write('huge.bin', 80 * 2**20))); os.remove('huge.bin')"
    assert json.loads(run_in_kernel(hub, erin, server, past)) == errno.ENOSPC
    model = erin.get(path).json()
    assert model["disk"] == {
        "limit": "64M", "near_limit": False, "used_percent": None, "autosave": None
    }
    # work written before the warning, then the disk filled to past 90% (the big file is too
    # big to autosave, the notes are not)
    fill = WRITE + (
        "open('notes.txt', 'w').write('written before the warning\\n')\n"
        "st = os.statvfs('.')\n"
        "size, used = st.f_blocks * st.f_frsize, (st.f_blocks - st.f_bavail) * st.f_frsize\n"
        "print(json.dumps(write('filler.bin', int(size * 0.94) - used)))\n"
    )
    assert json.loads(run_in_kernel(hub, erin, server, fill)) is None
    model = wait_until(
        lambda: (m := erin.get(path).json())["disk"]["autosave"] not in (None, "saving") and m,
        60,
        "the disk watch's autosave",
    )
    assert model["disk"]["near_limit"] and model["disk"]["used_percent"] >= 90, model
    assert model["disk"]["autosave"] == "saved", model
    bare = setup["root"] / "demo" / "plain.git"
    branch = f"notebooks/autosave/erin/{setup['shas']['demo/plain']}"
    assert git(bare, "show", f"{branch}:notes.txt") == "written before the warning"
    listing = erin.get("", headers={"Accept": "text/html"}).text
    assert "Disk nearly full" in listing and "the profile&#39;s 64M" in listing, listing
    # a hub restart finds the server, its mount and its warning as they were
    hub.kill()
    hub.start()
    assert os.path.ismount(workspace) and (workspace / "filler.bin").is_file()
    assert erin.get(path).json()["disk"]["near_limit"] is True
    # a stop (the hub's, without removal) and a start keep the workspace, big file and all
    name = server["name"]
    stopped = hub.admin("DELETE", f"users/erin/servers/{name}")
    assert stopped.status_code in (202, 204), stopped.text
    wait_until(lambda: not hub.hub_servers("erin")[name]["ready"], 60, "stopped")
    wait_until(lambda: not hub.hub_servers("erin")[name]["pending"], 60, "stopped")
    # the launch page (a running server's redirects to it) says it too, with the stop's reason
    page = erin.get(path, headers={"Accept": "text/html"}).text
    assert 'id="disk"' in page and "has been autosaved" in page, page
    # stopped: unmounted (no loop device held), its files in the image
    assert not os.path.ismount(workspace) and image.is_file()
    assert erin.post(path, json={"profile": "cramped"}).status_code in (201, 202)
    server = erin.wait_running(path, timeout=90)
    assert os.path.ismount(workspace) and (workspace / "filler.bin").is_file()
    assert run_in_kernel(hub, erin, server, "print(open('notes.txt').read())").strip() == (
        "written before the warning"
    )
    # the removal takes the workspace and its disk
    hub.remove_all_servers("erin")
    assert not os.path.ismount(workspace) and not workspace.exists() and not image.exists()
    # the launch page offers each profile with its disk
    page = erin.get(path, headers={"Accept": "text/html"}).text
    assert "0.5 CPU · 500M memory · 64M disk" in page, page


@pytest.mark.skipif(disk.unavailable() is not None, reason="no workspace filesystems here")
def test_a_workspace_filesystem_is_made_kept_grown_and_removed(tmp_path):
    """glue.hub.disk on its own: the first attach makes the image (an earlier workspace's files
    moved in), a detach keeps the files in it, a larger size grows it, the removal deletes it."""
    workspace = tmp_path / "alice" / "plain-0123"
    workspace.mkdir(parents=True)
    (workspace / "older.txt").write_text("from before sizes\n")
    os.chown(workspace, 3_000_004, 3_000_004)  # as Sandbox.prepare made it
    disk.attach(workspace, 32 * 2**20, 3_000_004)
    try:
        assert os.path.ismount(workspace) and disk.mounted(workspace)
        assert sorted(p.name for p in workspace.iterdir()) == ["older.txt"]  # no lost+found
        assert workspace.stat().st_uid == 3_000_004
        usage = disk.usage(workspace)
        assert usage is not None and 20 * 2**20 < usage.size <= 32 * 2**20
        assert 0 < usage.fraction < 0.2
        disk.detach(workspace)
        assert not disk.mounted(workspace) and disk.usage(workspace) is None
        assert not (workspace / "older.txt").exists()  # in the image, not the directory
        disk.attach(workspace, 64 * 2**20, 3_000_004)  # a larger profile: grown
        assert (workspace / "older.txt").read_text() == "from before sizes\n"
        grown = disk.usage(workspace)
        assert grown is not None and grown.size > 48 * 2**20
    finally:
        disk.remove(workspace)
    assert not disk.mounted(workspace) and not disk.image_of(workspace).exists()


@pytest.mark.skipif(disk.unavailable() is not None, reason="no workspace filesystems here")
def test_a_launch_waits_for_the_last_sessions_filesystem_to_be_released(tmp_path, monkeypatch):
    """A process of the last session still in the workspace makes its unmount lazy: the
    filesystem stays live on its loop device until that process ends. The next attach
    waits for that before it checks, grows or mounts the image (a second loop device on a
    live ext4 corrupts it), and fails closed when the wait runs out."""
    workspace = tmp_path / "alice" / "plain-0123"
    disk.attach(workspace, 32 * 2**20, 3_000_004)
    try:
        (workspace / "work.txt").write_text("unsaved work\n")
        holder = subprocess.Popen(["sleep", "60"], cwd=workspace)
        try:
            disk.detach(workspace)  # busy: lazy
            assert not disk.mounted(workspace)
            monkeypatch.setattr(disk, "RELEASE_SECONDS", 1)
            with pytest.raises(disk.DiskError, match="still in use"):
                disk.attach(workspace, 64 * 2**20, 3_000_004)
            assert not disk.mounted(workspace)
            monkeypatch.setattr(disk, "RELEASE_SECONDS", 30)
            threading.Timer(1.0, holder.kill).start()  # the session's last process ends
            disk.attach(workspace, 64 * 2**20, 3_000_004)  # waits, then grows and mounts
        finally:
            holder.kill()
            holder.wait()
        assert (workspace / "work.txt").read_text() == "unsaved work\n"
        grown = disk.usage(workspace)
        assert grown is not None and grown.size > 48 * 2**20
    finally:
        disk.remove(workspace)


def test_without_a_pids_controller_the_process_limit_is_rlimit_nproc(tmp_path, monkeypatch):
    """Where no pids cgroup can be made, the limit still holds: RLIMIT_NPROC, which the
    kernel counts for the sandbox's user id once the command has dropped to it."""
    monkeypatch.setattr(sandbox, "pids_unavailable", lambda: "none here (the test says)")
    box = Sandbox(uid=3_000_005, workspace=tmp_path / "ws", processes=64)
    box.prepare()
    result = subprocess.run(
        box.command([sys.executable, "-c", FORK_MANY.replace("1200", "100")]),
        env=box.environment(os.environ),
        preexec_fn=box.limit(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    seen = json.loads(result.stdout)
    assert seen["refused"] == errno.EAGAIN and seen["started"] < 64, seen
    assert "by RLIMIT_NPROC, shared by all servers of a hub user" in (
        sandbox.process_limit_enforcement()
    )
    box.release()


def test_the_banner_says_which_limits_hold_here():
    """`make dev`'s banner: the process limit and how it is enforced, and whether profile
    disks are, on this machine."""
    config = validate(
        {
            "images": {"default": "img:1"},
            "profiles": [{"name": "small", "cpu": 1, "memory": "1G"}],
            "provider": {"kind": "local", "root": "/srv/repos"},
            "spawner": {"processLimit": 512},
        }
    )
    line = dev.sandbox_line(config["spawner"])
    assert "At most 512 processes per server (spawner.processLimit), enforced by " in line
    if disk.unavailable() is None:
        assert "Profile disk limits are enforced" in line
    else:
        assert f"Profile disk limits are NOT enforced: {disk.unavailable()}." in line
