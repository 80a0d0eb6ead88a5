"""Autosave with real git: a workspace cloned by the clone step, a bare remote, and back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from glue.core import contracts
from glue.providers.base import Caller
from glue.session import autosave, clone
from testing.gitlab import GitLabStandIn, StandInThread, create_bare_repo
from testing.repos import git, make_repo

PREFIX = "notebooks/autosave"
MASTER = b"the hub's secret"


def signer(branch: str) -> autosave.KeySigner:
    """What the session's git component signs with, for that one branch."""
    return autosave.KeySigner(autosave.branch_key(MASTER, branch), branch)


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, list[str]]:
    """A bare remote with three commits."""
    shas = make_repo(tmp_path, "group/demo")
    return tmp_path / "group/demo.git", shas


def fresh(tmp_path: Path, remote: Path, sha: str, name: str = "ws") -> Path:
    workspace = tmp_path / name
    clone.clone(str(remote), sha, workspace)
    return workspace


def refs(remote: Path) -> dict[str, str]:
    out = git(remote, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split() for line in out.splitlines()) if out else {}


def snapshot(workspace: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file outside .git: its bytes and whether it is executable."""
    found = {}
    for path in sorted(workspace.rglob("*")):
        rel = path.relative_to(workspace)
        if rel.parts[0] == ".git" or not path.is_file():
            continue
        found[str(rel)] = (path.read_bytes(), os.access(path, os.X_OK))
    return found


def porcelain(workspace: Path) -> list[str]:
    return sorted(git(workspace, "status", "--porcelain", "--untracked-files=all").splitlines())


class CountingSigner:
    """The component's signer, counting what it is asked to sign."""

    def __init__(self, key: str, branch: str) -> None:
        self.signer = autosave.KeySigner(key, branch)
        self.signed = 0

    def sign(self, tree: str, parent: str) -> str:
        self.signed += 1
        return self.signer.sign(tree, parent)


def test_clean_workspace_writes_no_branch_and_signs_nothing(tmp_path, project):
    """A clean stop only looks: nothing pushed, nothing asked of the component. (How long
    that look takes is figure 7 of the benchmark.)"""
    remote, shas = project
    workspace = fresh(tmp_path, remote, shas[0])
    before = refs(remote)
    branch = contracts.autosave_branch(PREFIX, "alice", shas[0])
    key = autosave.branch_key(MASTER, branch)

    for _ in range(3):
        counting = CountingSigner(key, branch)
        saved = autosave.save(workspace, shas[0], str(remote), branch, signer=counting)
        assert saved.pushed is False and saved.status.clean
        assert counting.signed == 0
    assert refs(remote) == before
    # the same workspace with one changed file: a signature, a branch
    (workspace / "README.md").write_text("changed\n")
    counting = CountingSigner(key, branch)
    assert autosave.save(workspace, shas[0], str(remote), branch, signer=counting).pushed
    assert counting.signed == 1 and refs(remote) != before


def test_files_the_checkout_itself_excludes_are_not_saved(tmp_path, project):
    """`.git/info/exclude` is git's own list of ignored files (a project needs no .gitignore
    commit for it): what `git status` hides there, such as a local credentials file, is not
    pushed to the autosave branch either (the real-cluster proof of issue 24 found it was)."""
    remote, shas = project
    workspace = fresh(tmp_path, remote, shas[0])
    with (workspace / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("\n/local.env\n")
    (workspace / "local.env").write_text("TOKEN=not-for-the-remote\n")
    (workspace / "notes.txt").write_text("work\n")
    assert porcelain(workspace) == ["?? notes.txt"]  # git itself ignores local.env

    branch = contracts.autosave_branch(PREFIX, "alice", shas[0])
    assert autosave.status(workspace, shas[0]).uncommitted == 1
    saved = autosave.save(workspace, shas[0], str(remote), branch, signer=signer(branch))
    assert saved.pushed
    changed = git(remote, "diff", "--name-only", f"{branch}^", branch).splitlines()
    assert changed == ["notes.txt"]


def test_dirty_workspace_round_trips_byte_for_byte(tmp_path, project):
    remote, shas = project
    workspace = fresh(tmp_path, remote, shas[1])
    (workspace / ".gitignore").write_text("*.tmp\n")
    git(workspace, "add", ".gitignore")
    git(workspace, "commit", "-q", "-m", "ignore tmp")  # the user's own commit
    user_commit = git(workspace, "rev-parse", "HEAD")
    (workspace / "data.bin").write_bytes(bytes(range(256)) * 4 + b"\r\n\x00end")
    (workspace / "README.md").write_bytes(b"changed\r\nwith crlf\n")
    (workspace / "notebooks" / "analysis.ipynb").rename(workspace / "notebooks" / "renamed.ipynb")
    run = workspace / "run.sh"
    run.write_text("#!/bin/sh\necho hi\n")
    run.chmod(0o755)
    (workspace / "new" / "deep").mkdir(parents=True)
    (workspace / "new" / "deep" / "untracked.txt").write_text("not added\n")
    (workspace / "scratch.tmp").write_text("ignored\n")
    (workspace / "huge.dat").write_bytes(os.urandom(3000))
    expected_status = porcelain(workspace)
    expected = snapshot(workspace)

    branch = contracts.autosave_branch(PREFIX, "alice", shas[1])
    state = autosave.status(workspace, shas[1], max_file_bytes=2000)
    assert (state.clean, state.unpushed, state.skipped) == (False, 1, ["huge.dat"])
    # README, data.bin, renamed notebook (delete + add), run.sh, untracked.txt
    assert state.uncommitted == 6
    assert refs(remote).get(f"refs/heads/{branch}") is None  # status pushes nothing
    before = refs(remote)
    saved = autosave.save(
        workspace, shas[1], str(remote), branch, max_file_bytes=2000, signer=signer(branch)
    )
    assert saved.pushed
    after = refs(remote)
    assert after == {**before, f"refs/heads/{branch}": saved.commit}  # that branch only
    message = git(remote, "log", "-1", "--format=%an%n%B", branch)
    assert message.startswith("renku-notebooks autosave\n")
    assert "huge.dat" in message and autosave.TRAILER in message
    tree, parent = git(remote, "rev-parse", f"{branch}^{{tree}}", f"{branch}^").split()
    assert message.rstrip().endswith(
        f"{autosave.SIGNATURE_KEY}: {signer(branch).sign(tree, parent)}"
    )
    assert git(remote, "rev-parse", f"{branch}^") == user_commit
    tree = git(remote, "ls-tree", "-r", "--name-only", branch).splitlines()
    assert "scratch.tmp" not in tree and "huge.dat" not in tree
    assert snapshot(workspace) == expected  # saving changed nothing in the workspace
    assert porcelain(workspace) == expected_status

    again = fresh(tmp_path, remote, shas[1], "again")
    restored = autosave.restore(
        again, str(remote), branch, launched=shas[1], signer=signer(branch)
    )
    assert restored == saved.commit
    assert git(again, "rev-parse", "HEAD") == user_commit
    wanted = {k: v for k, v in expected.items() if k not in ("scratch.tmp", "huge.dat")}
    assert snapshot(again) == wanted
    assert porcelain(again) == [s for s in expected_status if "huge.dat" not in s]


def test_restore_without_branch_or_onto_changed_workspace_does_nothing(tmp_path, project):
    remote, shas = project
    workspace = fresh(tmp_path, remote, shas[0])
    branch = contracts.autosave_branch(PREFIX, "bob", shas[0])
    sign = signer(branch)
    assert autosave.restore(workspace, str(remote), branch, launched=shas[0], signer=sign) is None
    (workspace / "mine.txt").write_text("work\n")
    autosave.save(workspace, shas[0], str(remote), branch, signer=signer(branch))
    other = fresh(tmp_path, remote, shas[0], "other")
    (other / "local.txt").write_text("kept\n")
    assert autosave.restore(other, str(remote), branch, launched=shas[0], signer=sign) is None
    assert not (other / "mine.txt").exists() and (other / "local.txt").read_text() == "kept\n"


def test_only_commits_get_a_signed_autosave_commit_on_top(tmp_path, project):
    remote, shas = project
    workspace = fresh(tmp_path, remote, shas[0])
    (workspace / "a.txt").write_text("a\n")
    git(workspace, "add", "a.txt")
    git(workspace, "commit", "-q", "-m", "mine")
    head = git(workspace, "rev-parse", "HEAD")
    branch = contracts.autosave_branch(PREFIX, "carol", shas[0])
    saved = autosave.save(workspace, shas[0], str(remote), branch, signer=signer(branch))
    assert saved.status.unpushed == 1 and not saved.status.uncommitted
    # the user's commit as it is, under a commit of the same tree that carries the signature
    assert git(remote, "rev-parse", f"{saved.commit}^") == head
    trees = git(remote, "rev-parse", f"{saved.commit}^{{tree}}", f"{head}^{{tree}}").split()
    assert trees[0] == trees[1]
    again = fresh(tmp_path, remote, shas[0], "again")
    restored = autosave.restore(
        again, str(remote), branch, launched=shas[0], signer=signer(branch)
    )
    assert restored == saved.commit
    assert git(again, "rev-parse", "HEAD") == head and porcelain(again) == []


def hostile(workspace: Path, canary: Path) -> list[Path]:
    """Config, hooks, include and attributes that run commands with git's default flow."""
    marks = [canary.with_name(f"{canary.name}-{i}") for i in range(7)]
    included = workspace / "included.cfg"
    included.write_text(
        f"[core]\n\tpager = touch {marks[0]}\n[diff]\n\texternal = touch {marks[1]}\n"
    )
    hooks = workspace / "myhooks"
    hooks.mkdir()
    for hook, mark in (
        ("pre-push", marks[2]),
        ("post-checkout", marks[3]),
        ("reference-transaction", marks[4]),
    ):
        (hooks / hook).write_text(f"#!/bin/sh\ntouch {mark}\n")
        (hooks / hook).chmod(0o755)
        (workspace / ".git" / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {mark}\n")
        (workspace / ".git" / "hooks" / hook).chmod(0o755)
    with (workspace / ".git" / "config").open("a") as config:
        config.write(
            f"[core]\n\tfsmonitor = touch {marks[5]}; false\n\thooksPath = {hooks}\n"
            f'[filter "evil"]\n\tclean = sh -c "touch {marks[6]}; cat"\n\tsmudge = cat\n'
            f"\trequired = true\n[include]\n\tpath = {included}\n"
        )
    (workspace / ".gitattributes").write_text("* filter=evil\n")
    return marks


def test_hostile_workspace_config_runs_nothing(tmp_path, project):
    remote, shas = project
    # first show the trap is real: ordinary git in such a workspace runs the commands
    probe = fresh(tmp_path, remote, shas[0], "probe")
    marks = hostile(probe, tmp_path / "probe-canary")
    (probe / "x.txt").write_text("x\n")
    subprocess.run(["git", "add", "-A"], cwd=probe, capture_output=True, check=False)
    assert any(mark.exists() for mark in marks)

    workspace = fresh(tmp_path, remote, shas[0])
    marks = hostile(workspace, tmp_path / "canary")
    (workspace / "x.txt").write_text("x\n")
    branch = contracts.autosave_branch(PREFIX, "eve", shas[0])
    state = autosave.status(workspace, shas[0])
    saved = autosave.save(workspace, shas[0], str(remote), branch, signer=signer(branch))
    assert saved.pushed and state.uncommitted == saved.status.uncommitted > 0
    assert autosave.delete(str(remote), branch)
    assert [m.name for m in marks if m.exists()] == []
    # the file went in as it is: no filter touched it
    assert git(remote, "show", f"{saved.commit}:x.txt") == "x"


def test_object_store_reaching_outside_is_refused(tmp_path, project):
    remote, shas = project
    workspace = fresh(tmp_path, remote, shas[0])
    (workspace / "x.txt").write_text("x\n")
    alternates = workspace / ".git" / "objects" / "info" / "alternates"
    alternates.write_text(str(tmp_path / "elsewhere" / "objects") + "\n")
    with pytest.raises(autosave.AutosaveError, match="NOT saved"):
        branch = contracts.autosave_branch(PREFIX, "eve", shas[0])
        autosave.save(workspace, shas[0], str(remote), branch)
    alternates.unlink()
    (workspace / ".git" / "objects" / "zz").symlink_to(tmp_path)
    with pytest.raises(autosave.AutosaveError, match="symbolic link"):
        branch = contracts.autosave_branch(PREFIX, "eve", shas[0])
        autosave.save(workspace, shas[0], str(remote), branch)


def test_failed_push_says_what_was_not_saved(tmp_path, project):
    remote, shas = project
    workspace = fresh(tmp_path, remote, shas[0])
    (workspace / "x.txt").write_text("x\n")
    with pytest.raises(autosave.AutosaveError, match="NOT saved"):
        autosave.save(
            workspace,
            shas[0],
            str(tmp_path / "gone.git"),
            "notebooks/autosave/a/b",
            signer=signer("notebooks/autosave/a/b"),
        )


def test_command_line(tmp_path, project):
    remote, shas = project
    workspace = fresh(tmp_path, remote, shas[0])
    (workspace / "x.txt").write_text("x\n")
    branch = contracts.autosave_branch(PREFIX, "dave", shas[0])

    key_file = tmp_path / "autosave-key"
    key_file.write_text(signer(branch).key)

    def run(action: str, **flags: str) -> subprocess.CompletedProcess[str]:
        argv = autosave.step(action, python=sys.executable, **flags).argv
        if action in ("save", "restore"):
            argv += ["--key-file", str(key_file)]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    status = json.loads(run("status", workspace=str(workspace), launched=shas[0]).stdout)
    assert status == {"clean": False, "uncommitted": 1, "unpushed": 0, "skipped": []}
    saved = run(
        "save", workspace=str(workspace), launched=shas[0], remote=str(remote), branch=branch
    )
    assert json.loads(saved.stdout)["pushed"] is True
    again = fresh(tmp_path, remote, shas[0], "again")
    restored = run(
        "restore", workspace=str(again), launched=shas[0], remote=str(remote), branch=branch
    )
    assert json.loads(restored.stdout)["restored"] is True
    assert (again / "x.txt").read_text() == "x\n"
    deleted = run("delete", remote=str(remote), branch=branch)
    assert json.loads(deleted.stdout) == {"deleted": True, "branch": branch}
    assert f"refs/heads/{branch}" not in refs(remote)
    failed = run(
        "save",
        workspace=str(workspace),
        launched=shas[0],
        remote=str(tmp_path / "gone.git"),
        branch=branch,
    )
    assert failed.returncode == 1 and "NOT saved" in failed.stderr


def test_branch_names_are_valid_refs():
    sha = "a" * 40
    name = contracts.autosave_branch("notebooks/autosave/", "alice", sha)
    assert name == f"notebooks/autosave/alice/{sha}"
    name = contracts.autosave_branch(PREFIX, "we~ird:..name@x", sha)
    check = subprocess.run(["git", "check-ref-format", f"refs/heads/{name}"], check=False)
    assert check.returncode == 0, name
    with pytest.raises(ValueError):
        contracts.autosave_branch(PREFIX, "alice", "HEAD")


def test_push_rules_and_protected_wildcards_of_gitlab(tmp_path):
    """2. GitLab's push rules ("reject unverified users": the committer email must be one of
    the pusher's verified emails; authors must be GitLab users) and wildcard-protected
    branches check the autosave's push: its commit carries the user's GitLab identity
    (`commit_email` from /api/v4/user), and a refusal says GitLab's reason, never silently."""
    bare = tmp_path / "renku" / "demo.git"
    sha = create_bare_repo(bare, [{"README.md": "hi\n"}])[0]
    standin = GitLabStandIn()
    user = standin.add_user("alice", "alice-token-0123456789", name="Alice Liddell")
    user.commit_email = "alice.commits@example.test"
    standin.add_project("renku/demo", repo=bare, members={"alice": 30})
    standin.set_push_rules("renku/demo", "commit_committer_check", "member_check")
    token_file = tmp_path / "token"
    token_file.write_text("alice-token-0123456789")
    branch = contracts.autosave_branch(PREFIX, "alice", sha)
    key_file = tmp_path / "autosave-key"
    key_file.write_text(signer(branch).key)
    with StandInThread(standin) as thread:
        remote = f"{thread.standin.url}/renku/demo.git"

        async def gitlab_user() -> dict[str, object]:
            headers = {"Authorization": "Bearer alice-token-0123456789"}
            async with (
                aiohttp.ClientSession(headers=headers) as session,
                session.get(f"{thread.standin.url}/api/v4/user") as resp,
            ):
                return await resp.json()

        record = thread.run(gitlab_user())
        identity = Caller.from_auth_state("alice", {"gitlab_user": record}).identity()
        assert identity == ("Alice Liddell", "alice.commits@example.test")

        def save(workspace: Path, **extra) -> subprocess.CompletedProcess[str]:
            argv, env = autosave.step(
                "save", workspace=str(workspace), launched=sha, remote=remote, branch=branch,
                token_file=str(token_file), python=sys.executable, **extra,
            )
            return subprocess.run([*argv, "--key-file", str(key_file)], env={**os.environ, **env},
                                  capture_output=True, text=True, check=False)

        workspace = fresh(tmp_path, bare, sha)
        (workspace / "notes.txt").write_text("mine\n")
        saved = save(workspace, identity=identity)
        assert saved.returncode == 0, saved.stderr
        assert json.loads(saved.stdout)["pushed"] is True
        who = git(bare, "log", "-1", "--format=%an <%ae> / %cn <%ce>", f"refs/heads/{branch}")
        assert who == ("Alice Liddell <alice.commits@example.test> / "
                       "Alice Liddell <alice.commits@example.test>")

        # without the identity GitLab's rule refuses, and the failure names its reason
        (workspace / "notes.txt").write_text("more\n")
        refused = save(workspace)
        assert refused.returncode == 1 and "NOT saved" in refused.stderr
        assert ("GitLab says: You cannot push commits for 'autosave@renku-notebooks.invalid'"
                in refused.stderr), refused.stderr

        # a wildcard protection (Maintainers push, nobody force-pushes): refused, said why
        standin.protect_branch("renku/demo", "notebooks/*")
        refused = save(workspace, identity=identity)
        assert refused.returncode == 1 and "NOT saved" in refused.stderr
        assert ("GitLab says: You are not allowed to force push code to a protected branch"
                in refused.stderr), refused.stderr
