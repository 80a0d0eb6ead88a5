"""Sessions that keep the user's work, in the embedded default: a real hub, real sandboxed
servers, real git, the GitLab stand-in (and the local provider for the culler).

From inside a server's kernel the user commits and pushes through the session's git token
component; stopping a server autosaves its unsaved work to `notebooks/autosave/<user>/<sha>`,
and the next launch of that commit puts it back (or starts clean and deletes the branch).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from glue.core.target import parse
from glue.service.render import Renderer
from glue.service.servers import cull_at, server_model
from glue.session import gitproxy
from testing.checks import assert_hidden, wait_until
from testing.gitlab import GitLabStandIn
from testing.hub import Client, RunningHub
from testing.kernels import run_in_kernel
from testing.marks import starts_hub
from testing.repos import git, make_repo
from testing.worlds import DEFAULT_IMAGE, SMALL, GitLabWorld, gitlab_token

PROJECT = "renku/demo"
PREFIX = "notebooks/autosave"
# bytes no text encoding round-trips, and a modified tracked file
BLOB = bytes(range(256)) * 3
NOTES = "first line\n\u00e9t\u00e9 \u2713\nno newline at the end"

# in the kernel: every environment variable and every readable file of the session
PROBE = """
import json, os, sys
seen = {"environ": dict(os.environ), "files": {}}
# the Python environment and the glue's code are the host's, bound read-only and the same for
# every session: no token can be written there, and reading them all would outgrow the
# profile's memory (they lie below /tmp when the checkout does)
code = [sys.prefix, sys.base_prefix, *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
for top in (os.getcwd(), os.path.expanduser("~"), "/tmp"):
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in code]
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    seen["files"][path] = f.read(1_000_000).decode("latin-1")
            except OSError:
                pass
print(json.dumps(seen))
"""


def branch_of(sha: str, user: str = "dev") -> str:
    return f"{PREFIX}/{user}/{sha}"


def remote_branches(bare: Path) -> dict[str, str]:
    out = git(bare, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads")
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def stop(client: Client, path: str) -> None:
    response = client.delete(path)
    assert response.status_code in (202, 204), response.text
    wait_until(lambda: client.get(path).status_code == 404, 120, f"{path} removed")


@pytest.fixture(scope="module")
@starts_hub
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabWorld]:
    """GitLab with one project (four commits) and its developer `dev`, logged in."""
    root = tmp_path_factory.mktemp("autosave-repos")
    shas = make_repo(root, PROJECT, versions=4)
    standin = GitLabStandIn()
    standin.add_user("dev")
    standin.add_project(PROJECT, repo=root / f"{PROJECT}.git", members={"dev": 30})
    config = {
        "images": {"default": DEFAULT_IMAGE},
        "profiles": [SMALL],
        "provider": {"timeoutSeconds": 5},
        "launch": {"startTimeoutSeconds": 240, "stopTimeoutSeconds": 120},
        "culling": {"idleSeconds": 0},
    }
    with GitLabWorld.running(tmp_path_factory.mktemp("autosave-hub"), standin, config,
                             root=root, shas=shas) as world:
        world.login("dev")
        yield world


def launch(world: GitLabWorld, sha: str, **body: Any) -> dict[str, Any]:
    dev: Client = world.clients["dev"]
    response = dev.post(f"{PROJECT}/{sha}", json=body)
    assert response.status_code in (201, 202), response.text
    return dev.wait_running(f"{PROJECT}/{sha}", timeout=250)


def kernel(world: GitLabWorld, server: dict[str, Any], code: str) -> str:
    return run_in_kernel(world.hub, world.clients["dev"], server, code)


def test_a_session_commits_as_the_user_and_pushes_without_holding_the_token(world):
    hub, shas, bare = world.hub, world.shas, world.bare(PROJECT)
    server = launch(world, shas[2])
    assert server["restored_from"] is None and server["cull_at"] is None
    out = kernel(
        world,
        server,
        "import subprocess\n"
        "open('pushed.txt', 'w').write('from the session\\n')\n"
        "run = lambda *a: subprocess.run(['git', *a], capture_output=True, text=True)\n"
        "run('add', 'pushed.txt')\n"
        "c = run('commit', '-q', '-m', 'from the session')\n"
        "p = run('push', 'origin', 'HEAD:refs/heads/x')\n"
        "print(c.returncode, p.returncode, run('remote', 'get-url', 'origin').stdout.strip())\n"
        "print(p.stderr)",
    )
    first, _, rest = out.partition("\n")
    committed, pushed, origin = first.split()
    assert (committed, pushed) == ("0", "0"), rest
    assert origin.startswith("http://127.0.0.1:") and origin.endswith(f"/{PROJECT}.git")
    author = git(bare, "log", "-1", "--format=%an <%ae>", "x")
    assert author == "Dev <dev@example.test>"  # the GitLab user's name and email
    assert git(bare, "show", "x:pushed.txt") == "from the session"
    assert git(bare, "rev-parse", "x^") == shas[2]
    # the GitLab token is in no variable and no readable file of the session
    seen = kernel(world, server, PROBE)
    assert json.loads(seen)["files"], "the probe read no file"
    assert_hidden(gitlab_token(hub, "dev"), seen, "the session's environment and files")
    assert_hidden(gitlab_token(hub, "dev"), " ".join(_component_args(hub)), "process arguments")
    stop(world.clients["dev"], f"{PROJECT}/{shas[2]}")
    # its pushed commit was the only unsaved work: the autosave holds it, under the signed
    # autosave commit (of the same files), nothing more
    saved = branch_of(shas[2])
    assert git(bare, "rev-parse", f"{saved}^") == git(bare, "rev-parse", "x")
    assert git(bare, "rev-parse", f"{saved}^{{tree}}") == git(bare, "rev-parse", "x^{tree}")


def _component_args(hub: RunningHub) -> list[str]:
    """The command lines of all processes (the component's among them)."""
    import psutil

    return [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]


def test_stop_autosaves_exactly_the_unsaved_work_and_the_next_launch_restores_it(world):
    hub, shas, bare, dev = world.hub, world.shas, world.bare(PROJECT), world.clients["dev"]
    sha, path = shas[0], f"{PROJECT}/{shas[0]}"
    server = launch(world, sha)
    kernel(
        world,
        server,
        f"open('data.bin', 'wb').write({BLOB!r})\nopen('README.md', 'w').write({NOTES!r})\n",
    )
    assert branch_of(sha) not in remote_branches(bare)
    stop(dev, path)
    branch = branch_of(sha)
    assert branch in remote_branches(bare), hub.log()[-3000:]
    changed = git(bare, "diff", "--name-status", sha, branch).splitlines()
    assert sorted(changed) == ["A\tdata.bin", "M\tREADME.md"]
    assert "Renku-Autosave: uncommitted" in git(bare, "log", "-1", "--format=%B", branch)

    server = launch(world, sha)
    assert server["restored_from"] == branch
    workspace = hub.workspaces / "dev" / server["name"]
    assert (workspace / "data.bin").read_bytes() == BLOB
    assert (workspace / "README.md").read_bytes() == NOTES.encode()
    # uncommitted again, as they were
    status = kernel(
        world,
        server,
        "import subprocess\nprint(subprocess.run("
        "['git', 'status', '--porcelain'], capture_output=True, text=True).stdout)",
    )
    assert sorted(status.split("\n")[:-2]) == [" M README.md", "?? data.bin"]

    # starting clean: the branch goes, the workspace is the commit as it is
    stop(dev, path)
    assert branch in remote_branches(bare)
    server = launch(world, sha, autosave="discard")
    assert server["restored_from"] is None
    assert branch not in remote_branches(bare)
    workspace = hub.workspaces / "dev" / server["name"]
    assert not (workspace / "data.bin").exists()
    assert (workspace / "README.md").read_text() == "version 1\n"
    listing = dev.get("", headers={"Accept": "text/html"}).text
    assert "Workspace clean: nothing to save" in listing, listing
    mark = len(hub.log())
    response = dev.delete(path)
    assert response.status_code == 204, response.text
    assert dev.get(path).status_code == 404
    # a clean workspace writes no branch, and its autosave before the stop fails nothing
    assert branch not in remote_branches(bare)
    assert "AUTOSAVE FAILED" not in hub.log()[mark:]


def test_a_failed_autosave_refuses_the_stop_until_forced_and_keeps_the_workspace(world):
    hub, shas, bare, dev = world.hub, world.shas, world.bare(PROJECT), world.clients["dev"]
    sha, path = shas[1], f"{PROJECT}/{shas[1]}"
    server = launch(world, sha)
    kernel(world, server, "open('only-here.txt', 'w').write('precious\\n')")
    workspace = hub.workspaces / "dev" / server["name"]
    # the list's Stop button says what it will autosave
    listing = dev.get("", headers={"Accept": "text/html"}).text
    assert "Unsaved work: 1 changed file, 0 unpushed commits" in listing, listing
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho refused by the test >&2\nexit 1\n")
    hook.chmod(0o755)
    try:
        refused = dev.delete(path)
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert body["error"] == "autosave_failed"
        assert "NOT saved" in body["message"] and "keeps running" in body["message"]
        assert "force=true" in body["message"]
        # nothing was stopped: the hub still runs it, its workspace is as it was
        assert hub.hub_servers("dev")[server["name"]]["ready"] is True
        assert dev.get(path).json()["status"] == "running"
        assert (workspace / "only-here.txt").read_text() == "precious\n"
        # and reachable again: the refused stop gave its route in the proxy back
        assert kernel(world, server, "print(6 * 7)").strip() == "42"
        # the page's Stop (a form) shows the reason and a second button that forces
        page = dev.post(path, data={"_method": "DELETE"}, headers={"Accept": "text/html"})
        assert page.status_code == 409, page.text
        assert "Stop anyway (unsaved work is lost)" in page.text
        assert 'name="force" value="true"' in page.text and "NOT saved" in page.text
        assert hub.hub_servers("dev")[server["name"]]["ready"] is True
        assert dev.delete(path, params={"force": "maybe"}).status_code == 400
        forced = dev.post(path, data={"_method": "DELETE", "force": "true"})
        assert forced.status_code == 303, forced.text
        wait_until(lambda: dev.get(path).status_code == 404, 120, f"{path} removed")
    finally:
        hook.unlink()
    assert branch_of(sha) not in remote_branches(bare)
    assert "AUTOSAVE FAILED" in hub.log()
    # the stop's own autosave failed too: the removal kept the workspace
    assert (workspace / "only-here.txt").read_text() == "precious\n"
    server = launch(world, sha)
    assert server["restored_from"] is None
    assert (workspace / "only-here.txt").read_text() == "precious\n"  # reopened as it was
    response = dev.delete(path)  # now it saves, once, right before the stop
    assert response.status_code in (202, 204), response.text
    wait_until(lambda: dev.get(path).status_code == 404, 120, f"{path} removed")
    assert git(bare, "show", f"{branch_of(sha)}:only-here.txt") == "precious"
    assert not workspace.exists()


# the session's own pushes, from a kernel: each push's exit code and git's error output
PUSHES = """
import json, subprocess
run = lambda *a: subprocess.run(['git', *a], capture_output=True, text=True)
open('planted.py', 'w').write('print("run me")\\n')
run('add', 'planted.py')
run('commit', '-q', '-m', 'planted')
# the same files as a commit of no history: what a rewrite of history pushes
run('branch', 'rewritten', run('commit-tree', 'HEAD^{tree}', '-m', 'rewritten').stdout.strip())
out = {}
for name, args in PUSHES:
    done = run('push', *args)
    out[name] = [done.returncode, done.stderr]
print(json.dumps(out))
"""


def pushes(hub: RunningHub, client: Client, server: dict[str, Any], **named: list[str]):
    code = f"PUSHES = {list(named.items())!r}\n" + PUSHES
    out = run_in_kernel(hub, client, server, code)
    return json.loads(out.strip().splitlines()[-1])


def refused(result: list[Any], ref: str, reason: str) -> bool:
    """git's own line for a ref the session's component refused, with its reason."""
    code, stderr = result
    return code != 0 and any(
        line.strip().startswith("! [remote rejected]") and line.rstrip().endswith(f"({reason})")
        and ref in line
        for line in stderr.splitlines()
    )


def plant(bare: Path, branch: str, copy_message_of: str | None = None) -> str:
    """A commit someone else writes onto `branch` directly in the repository (a Developer on
    GitLab can): a file the owner would run, the message (and its signature) of the owner's
    real autosave copied when asked."""
    work = bare.parent / f".plant-{time.monotonic_ns()}"
    git(bare.parent, "clone", "-q", str(bare), str(work))
    git(work, "checkout", "-q", "--detach", branch.split("/")[-1])
    (work / "planted.py").write_text("print('run me')\n")
    git(work, "add", "planted.py")
    message = git(bare, "log", "-1", "--format=%B", copy_message_of) if copy_message_of else "x"
    git(work, "commit", "-q", "-m", message)
    tip = git(work, "rev-parse", "HEAD")
    git(work, "push", "-q", "-f", "origin", f"HEAD:refs/heads/{branch}")
    return tip


def test_gitlab_other_users_autosaves_are_neither_written_nor_restored(world):
    hub, shas, bare, dev = world.hub, world.shas, world.bare(PROJECT), world.clients["dev"]
    sha, path = shas[3], f"{PROJECT}/{shas[3]}"
    mallory = branch_of(sha, "mallory")
    real = git(bare, "rev-parse", shas[2])
    git(bare, "update-ref", f"refs/heads/{mallory}", real)  # another user's own autosave
    sent = len([r for r in world.gitlab.requests if r.path.endswith("/git-receive-pack")])
    server = launch(world, sha)
    out = pushes(
        world.hub,
        dev,
        server,
        forged=["-f", "origin", f"HEAD:refs/heads/{mallory}"],
        deleted=["origin", "--delete", mallory],
        own=["origin", f"HEAD:refs/heads/{branch_of(sha)}"],
    )
    assert refused(out["forged"], mallory, "autosave branches of other users are theirs alone")
    assert refused(out["deleted"], mallory, "autosave branches of other users are theirs alone")
    assert out["own"][0] == 0, out["own"]
    assert git(bare, "rev-parse", mallory) == real
    # the refused pushes never reached GitLab; the user's own did
    now = len([r for r in world.gitlab.requests if r.path.endswith("/git-receive-pack")])
    assert now == sent + 1
    run_in_kernel(hub, dev, server, "open('notes.txt', 'w').write('mine\\n')")
    stop(dev, path)
    saved = git(bare, "rev-parse", branch_of(sha))

    # someone with Developer access rewrites the branch on GitLab, signature line and all
    planted = plant(bare, branch_of(sha), copy_message_of=saved)
    server = launch(world, sha)
    assert server["restored_from"] is None
    assert "was not restored" in server["restore_refused"], server
    assert "not written by renku-notebooks" in server["restore_refused"]
    workspace = hub.workspaces / "dev" / server["name"]
    assert not (workspace / "planted.py").exists() and not (workspace / "notes.txt").exists()
    assert git(bare, "rev-parse", branch_of(sha)) == planted  # kept, for whoever looks
    assert server["restore_refused"] in hub.log()  # the launch's own log says it too
    forced = dev.delete(path, params={"force": "true"})
    assert forced.status_code in (202, 204), forced.text
    wait_until(lambda: dev.get(path).status_code == 404, 120, f"{path} removed")


# --- the local provider: no GitLab to protect its branches ---------------------------------


@pytest.fixture(scope="module")
@starts_hub
def local_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("local-repos")
    shas = make_repo(root, PROJECT, versions=2)
    config = {
        "images": {"default": "registry.example.org/renku/default:1"},
        "profiles": [{"name": "small", "cpu": 0.5, "memory": "1G"}],
        "provider": {"kind": "local", "root": str(root)},
        "launch": {"startTimeoutSeconds": 240, "stopTimeoutSeconds": 120},
        "culling": {"idleSeconds": 0},
    }
    hub = RunningHub(tmp_path_factory.mktemp("local-hub"), config)
    try:
        yield {"hub": hub.start(), "shas": shas, "bare": root / f"{PROJECT}.git"}
    finally:
        hub.stop()


def test_local_refs_are_protected_and_a_changed_autosave_is_not_restored(local_world):
    hub, shas, bare = local_world["hub"], local_world["shas"], local_world["bare"]
    client = Client(hub, "frank")
    sha, path = shas[1], f"{PROJECT}/{shas[1]}"
    git(bare, "tag", "v1", shas[0])
    before = remote_branches(bare)
    assert client.post(path).status_code in (201, 202)
    server = client.wait_running(path, timeout=250)
    other = branch_of(sha, "grace")
    out = pushes(
        local_world["hub"],
        client,
        server,
        forged=["origin", f"HEAD:refs/heads/{other}"],
        forced=["-f", "origin", "rewritten:refs/heads/main"],
        deleted=["origin", "--delete", "main"],
        untagged=["origin", ":refs/tags/v1"],
        meta=["origin", "HEAD:refs/meta/x"],
        topic=["origin", "HEAD:refs/heads/topic", "HEAD:refs/tags/v2"],
        own=["origin", f"HEAD:refs/heads/{branch_of(sha, 'frank')}"],
    )
    assert refused(out["forged"], other, "autosave branches of other users are theirs alone")
    # a commit the repository has not seen: the pre-receive check, once the pack is in
    assert refused(out["forced"], "main", "pre-receive hook declined"), out["forced"]
    assert "the default branch only moves forward" in out["forced"][1]
    assert refused(out["deleted"], "main", "the default branch may not be deleted")
    assert refused(out["untagged"], "v1", "tags may not be deleted")
    assert refused(out["meta"], "refs/meta/x", gitproxy.OTHER_REF)
    assert out["topic"][0] == 0 and out["own"][0] == 0, out
    after = remote_branches(bare)
    assert after.pop("topic") == after[branch_of(sha, "frank")]
    after.pop(branch_of(sha, "frank"))
    assert after == before
    assert git(bare, "rev-parse", "v1") == shas[0]
    assert git(bare, "for-each-ref", "refs/meta") == ""

    # the save at the stop, then the branch is changed behind the component's back
    run_in_kernel(hub, client, server, "open('notes.txt', 'w').write('mine\\n')")
    stop(client, path)
    branch = branch_of(sha, "frank")
    assert git(bare, "show", f"{branch}:notes.txt") == "mine"
    assert client.post(path).status_code in (201, 202)
    server = client.wait_running(path, timeout=250)
    assert server["restored_from"] == branch and server["restore_refused"] is None
    workspace = hub.workspaces / "frank" / server["name"]
    assert (workspace / "notes.txt").read_text() == "mine\n"
    stop(client, path)
    unsigned = git(bare, "rev-parse", f"{branch}^")  # a plain commit, as older autosaves were
    git(bare, "update-ref", f"refs/heads/{branch}", unsigned)
    assert client.post(path).status_code in (201, 202)
    server = client.wait_running(path, timeout=250)
    assert server["restored_from"] is None
    assert "carries no signature" in server["restore_refused"], server
    workspace = hub.workspaces / "frank" / server["name"]
    assert not (workspace / "notes.txt").exists() and not (workspace / "planted.py").exists()
    assert git(bare, "rev-parse", branch) == unsigned
    assert "was not restored" in hub.log()
    stop(client, path)


# --- the culler, with the local provider (the component serves the bare repository) ---------


@pytest.fixture(scope="module")
@starts_hub
def culled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("cull-repos")
    shas = make_repo(root, PROJECT, versions=1)
    config = {
        "images": {"default": "registry.example.org/renku/default:1"},
        "profiles": [{"name": "small", "cpu": 0.5, "memory": "1G"}],
        "provider": {"kind": "local", "root": str(root)},
        "launch": {"startTimeoutSeconds": 240},
        # idle servers stopped and removed, as before pausing (tests/test_hibernate.py pauses)
        "culling": {
            "idleSeconds": 20,
            "everySeconds": 10,
            "warningSeconds": 3600,
            "idleAction": "stop",
        },
    }
    hub = RunningHub(tmp_path_factory.mktemp("cull-hub"), config)
    try:
        yield {"hub": hub.start(), "shas": shas, "bare": root / f"{PROJECT}.git"}
    finally:
        hub.stop()


def test_the_culler_autosaves_and_removes_an_idle_server(culled):
    hub, sha, bare = culled["hub"], culled["shas"][0], culled["bare"]
    client = Client(hub, "carol")
    path = f"{PROJECT}/{sha}"
    assert client.post(path).status_code in (201, 202)
    server = client.wait_running(path, timeout=250)
    assert server["cull_at"] is not None
    listing = client.get("", headers={"Accept": "text/html"}).text
    assert "if it stays idle" in listing and 'cull-warning"' in listing  # within warningSeconds
    assert run_in_kernel(hub, client, server, "open('idle.txt', 'w').write('kept\\n')") == ""
    began = time.monotonic()
    wait_until(lambda: client.get(path).status_code == 404, 120, "the culler removed it")
    assert time.monotonic() - began >= 5
    branch = branch_of(sha, "carol")
    assert git(bare, "show", f"{branch}:idle.txt") == "kept"
    assert "culler" in hub.log()


def test_the_culler_keeps_an_idle_server_whose_autosave_fails_and_retries_it(culled):
    hub, sha, bare = culled["hub"], culled["shas"][0], culled["bare"]
    client = Client(hub, "erin")
    path = f"{PROJECT}/{sha}"
    assert client.post(path).status_code in (201, 202)
    server = client.wait_running(path, timeout=250)
    assert run_in_kernel(hub, client, server, "open('idle.txt', 'w').write('unsaved\\n')") == ""
    workspace = hub.workspaces / "erin" / server["name"]
    kept = f"Kept erin:{server['name']} running: its autosave failed"
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho refused by the test >&2\nexit 1\n")
    hook.chmod(0o755)
    try:
        # two rounds of the culler refused: the server runs on, its work where it was
        wait_until(lambda: hub.log().count(kept) >= 2, 150, "two refused culls")
        assert hub.hub_servers("erin")[server["name"]]["ready"] is True
        assert client.get(path).json()["status"] == "running"
        assert (workspace / "idle.txt").read_text() == "unsaved\n"
    finally:
        hook.unlink()
    # the next round saves it, then stops and removes it
    wait_until(lambda: client.get(path).status_code == 404, 120, "the culler removed it")
    assert git(bare, "show", f"{branch_of(sha, 'erin')}:idle.txt") == "unsaved"


# --- the pages, rendered from server models -------------------------------------------------


def model(**fields: Any) -> dict[str, Any]:
    base = {
        "name": "demo-abc",
        "namespace": "renku",
        "project": "demo",
        "commit_sha": "a" * 40,
        "notebook": "",
        "status": "starting",
        "url": "/user/dev/demo-abc/",
        "started": None,
        "last_activity": None,
        "profile": "small",
        "image": None,
        "image_fallback": None,
        "restored_from": None,
        "restore_refused": None,
        "cull_at": None,
    }
    return {**base, **fields}


def at(seconds: float) -> str:
    when = datetime.now(UTC) + timedelta(seconds=seconds)
    return when.isoformat().replace("+00:00", "Z")


def test_the_pages_say_where_work_was_restored_from_and_when_an_idle_server_stops():
    render = Renderer(prefix="/services/notebooks/", base_url="/", cull_warning_seconds=600)
    target = parse(f"renku/demo/{'a' * 40}")
    page = render.env.get_template("status.html").render(
        target=target,
        static_url=lambda name: name,
        server=model(restored_from="notebooks/autosave/dev/" + "a" * 40, cull_at=at(3000)),
    )
    assert "notebooks/autosave/dev/" + "a" * 40 in page and 'id="restored"' in page
    assert 'id="restore-refused"' not in page
    refused = render.env.get_template("status.html").render(
        target=target,
        static_url=lambda name: name,
        server=model(restore_refused="The autosave x was not restored: it was changed."),
    )
    assert 'id="restore-refused"' in refused and "was not restored: it was changed." in refused
    assert 'id="cull"' in page and "if it stays idle" in page and 'cull-warning"' not in page
    soon = render.env.get_template("list.html").render(
        servers=[model(status="running", cull_at=at(300))]
    )
    assert 'cull-warning"' in soon and "in 5 minutes" in soon
    never = render.env.get_template("list.html").render(servers=[model(status="running")])
    assert "if it stays idle" not in never


def test_cull_at_is_the_last_activity_plus_the_idle_time_and_null_when_culling_is_off():
    assert cull_at("2026-01-01T10:00:00.123456Z", 3600) == "2026-01-01T11:00:00Z"
    assert cull_at("2026-01-01T10:00:00Z", 0) is None
    assert cull_at(None, 3600) is None
    hub_model = {
        "name": "x",
        "user_options": {
            "namespace": "a",
            "project": "b",
            "commit_sha": "c" * 40,
            "restored_from": "notebooks/autosave/u/" + "c" * 40,
        },
        "last_activity": "2026-01-01T10:00:00Z",
        "ready": True,
    }
    served = server_model(hub_model, 60)
    assert served is not None
    assert served["restored_from"] == "notebooks/autosave/u/" + "c" * 40
    assert served["cull_at"] == "2026-01-01T10:01:00Z"


def test_the_embedded_hub_runs_the_culler_and_gives_the_spawner_the_glues_token(
    tmp_path, monkeypatch
):
    from traitlets.config import Config

    from glue.core.config import load
    from glue.hub.setup import configure, embedded
    from glue.service.gittoken import component_key

    path = tmp_path / "notebooks.yaml"
    notebooks = {
        "images": {"default": "registry.example.org/renku/default:1"},
        "profiles": [{"name": "small", "cpu": 0.5, "memory": "1G"}],
        "provider": {"kind": "local", "root": str(tmp_path)},
        "service": {"url": "http://127.0.0.1:10101"},
        "spawner": {"kind": "local", "workspaceRoot": str(tmp_path / "ws")},
        "culling": {"idleSeconds": 600, "everySeconds": 60},
    }
    path.write_text(json.dumps(notebooks))
    monkeypatch.setenv("NOTEBOOKS_STATE", str(tmp_path / "state"))
    c = Config()
    configure(c, load(str(path)))
    embedded(c, load(str(path)), str(path))
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services["notebooks-culler"]["command"][1:3] == ["-m", "glue.hub.culler"]
    assert "--timeout=600" in services["notebooks-culler"]["command"]
    assert "notebooks-culler" in {r["name"] for r in c.JupyterHub.load_roles}
    token = services["notebooks"]["api_token"]
    spawner = c.LocalCommitSpawner
    assert len(token) >= 32 and spawner.service_api_token == token
    assert component_key(token, "u", "s") != component_key("other", "u", "s")
    assert spawner.git_token_endpoint == "http://127.0.0.1:10101/services/notebooks/-/git-token"
    sessions = Path(spawner.sessions_root)
    assert sessions == tmp_path / "state" / "sessions"
    assert sessions.stat().st_mode & 0o777 == 0o700
    # culling off: no culler
    notebooks["culling"] = {"idleSeconds": 0}
    path.write_text(json.dumps(notebooks))
    c = Config()
    configure(c, load(str(path)))
    assert "notebooks-culler" not in {s["name"] for s in c.JupyterHub.services}


def test_the_stop_button_says_what_it_will_autosave_and_the_refusal_offers_to_force():
    from glue.core.errors import AutosaveFailed

    render = Renderer(prefix="/services/notebooks/", base_url="/")
    running = [model(status="running", name=n) for n in ("dirty", "clean", "unknown")]
    unsaved = {
        "dirty": {"clean": False, "uncommitted": 2, "unpushed": 1, "skipped": ["big.bin"]},
        "clean": {"clean": True, "uncommitted": 0, "unpushed": 0, "skipped": []},
        "unknown": None,
    }
    page = render.env.get_template("list.html").render(servers=running, unsaved=unsaved)
    rows = {n: page.split(f'data-server="{n}"')[1].split("</tr>")[0] for n in unsaved}
    assert "Unsaved work: 2 changed files, 1 unpushed commit; Stop autosaves them" in rows["dirty"]
    assert "big.bin" in rows["dirty"] and "too large" in rows["dirty"]
    assert "Workspace clean" in rows["clean"] and "Unsaved" not in rows["clean"]
    assert "unsaved" not in rows["unknown"]  # the spawner saves at its stop (Kubernetes)
    refused = render.env.get_template("stop_refused.html").render(
        target=parse(f"renku/demo/{'a' * 40}"),
        error=AutosaveFailed("The push was refused. The server keeps running."),
        action="/services/notebooks/renku/demo/" + "a" * 40,
        xsrf="token",
    )
    forms = refused.split("<form")[1:]
    assert len(forms) == 2 and 'name="force"' not in forms[0]
    assert 'name="force" value="true"' in forms[1]
    assert "Stop anyway (unsaved work is lost)" in forms[1]
    assert all('name="_method" value="DELETE"' in f and 'value="token"' in f for f in forms)
    assert "The push was refused." in refused and "autosave_failed" in refused
