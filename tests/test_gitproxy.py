"""The session's git token component with real git: in front of the GitLab stand-in (tokens from
a real hub's OAuth login, fresh ones through the glue's `-/git-token`), and serving a local bare
repository itself. Autosave pushes through it too."""

from __future__ import annotations

import gzip
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from glue.core import contracts
from glue.hub.setup import GITLAB_SCOPES
from glue.session import autosave, gitproxy
from testing.checks import assert_hidden, wait_until
from testing.gitlab import GitLabStandIn
from testing.hub import RunningHub
from testing.marks import starts_hub
from testing.net import free_port, listening_pid
from testing.repos import git, make_repo
from testing.worlds import DEFAULT_IMAGE, SMALL, GitLabWorld, gitlab_token

SCOPES = " ".join(GITLAB_SCOPES)


@dataclass
class Component:
    url: str  # the project's URL through the component
    base: str
    secret: str
    log: Path
    process: subprocess.Popen[bytes]

    def env(self, secret: str | None = None) -> dict[str, str]:
        """The session's git: the component's secret from a credential helper, nothing else."""
        helper = f"!f() {{ echo username=session; echo password={secret or self.secret}; }}; f"
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.log.parent),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "credential.helper",
            "GIT_CONFIG_VALUE_0": helper,
            "GIT_AUTHOR_NAME": "Dev",
            "GIT_AUTHOR_EMAIL": "dev@example.test",
            "GIT_COMMITTER_NAME": "Dev",
            "GIT_COMMITTER_EMAIL": "dev@example.test",
        }

    def git(self, cwd: Path, *args: str, secret: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", *args], cwd=cwd, env=self.env(secret), capture_output=True, text=True
        )


PREFIX = "notebooks/autosave"
MASTER = b"the hub's secret, never the session's"


def start_component(tmp: Path, project: str, **settings: Any) -> Component:
    """A real component; its autosave branch (of `launched`, when given) signed with a key of
    that branch, in a file beside its secret."""
    tmp.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(16)
    (tmp / "secret").write_text(secret)
    port = free_port()
    launched = settings.pop("launched", None)
    settings.setdefault("autosave_prefix", PREFIX)
    if launched:
        branch = contracts.autosave_branch(PREFIX, settings.get("user", ""), launched)
        (tmp / "signing-key").write_text(autosave.branch_key(MASTER, branch))
        settings.update(autosave_branch=branch, signing_key_file=tmp / "signing-key")
    config = gitproxy.Settings(project=project, secret_file=tmp / "secret", **settings)
    argv = gitproxy.step(config, listen=f"127.0.0.1:{port}", python=sys.executable).argv
    log = tmp / "gitproxy.log"
    process = subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    wait_until(lambda: listening_pid(port), 20, "the component listens")
    base = f"http://127.0.0.1:{port}"
    return Component(f"{base}/{project}.git", base, secret, log, process)


def stop_component(component: Component) -> None:
    component.process.terminate()
    component.process.wait(10)


# --- local provider: the component serves the bare repository itself ----------------------


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[Component, Path, list[str]]]:
    shas = make_repo(tmp_path, "group/demo")
    bare = tmp_path / "group/demo.git"
    component = start_component(
        tmp_path / "component", "group/demo", repo=bare, user="dev", launched=shas[2]
    )
    yield component, bare, shas
    stop_component(component)


def test_local_clone_push_and_autosave_through_the_component(tmp_path, local):
    component, bare, shas = local
    work = tmp_path / "work"
    cloned = component.git(tmp_path, "clone", "-q", component.url, str(work))
    assert cloned.returncode == 0, cloned.stderr
    (work / "new.bin").write_bytes(os.urandom(300_000))
    assert component.git(work, "add", "new.bin").returncode == 0
    assert component.git(work, "commit", "-q", "-m", "from the session").returncode == 0
    pushed = component.git(work, "push", "origin", "HEAD:refs/heads/session")
    assert pushed.returncode == 0, pushed.stderr
    assert git(bare, "rev-parse", "session") == git(work, "rev-parse", "HEAD")
    # autosave pushes the same way, with the secret as its credential
    (work / "dirty.txt").write_text("unsaved\n")
    branch = contracts.autosave_branch("notebooks/autosave", "dev", shas[2])
    os.environ[autosave.TOKEN_FILE_ENV] = str(tmp_path / "component" / "secret")
    try:
        saved = autosave.save(work, shas[2], component.url, branch)
    finally:
        del os.environ[autosave.TOKEN_FILE_ENV]
    assert saved.pushed and git(bare, "show", f"{branch}:dirty.txt") == "unsaved"
    assert_hidden(component.secret, component.log.read_text(), "the component's log")
    key = (tmp_path / "component" / "signing-key").read_text()
    assert_hidden(key, component.log.read_text(), "the component's log")


def refs_of(bare: Path) -> dict[str, str]:
    out = git(bare, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split() for line in out.splitlines())


def rejected(result: subprocess.CompletedProcess, ref: str, reason: str) -> bool:
    """git's own line for a ref the remote refused, with our reason."""
    short = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
    lines = [line.strip() for line in result.stderr.splitlines()]
    return result.returncode != 0 and any(
        line.startswith("! [remote rejected] ")
        and (line.endswith(f" {short} ({reason})") or line.endswith(f" {ref} ({reason})"))
        for line in lines
    )


def session_clone(component: Component, tmp_path: Path, name: str = "work") -> Path:
    work = tmp_path / name
    cloned = component.git(tmp_path, "clone", "-q", component.url, str(work))
    assert cloned.returncode == 0, cloned.stderr
    return work


def test_another_users_autosave_branch_is_neither_written_nor_deleted(tmp_path, local):
    component, bare, shas = local
    work = session_clone(component, tmp_path)
    (work / "planted.py").write_text("import os  # Alice would run this as her work\n")
    component.git(work, "add", "-A")
    component.git(work, "commit", "-q", "-m", "planted")
    alice = "refs/heads/" + contracts.autosave_branch(PREFIX, "alice", shas[2])
    before = refs_of(bare)
    forged = component.git(work, "push", "origin", f"HEAD:{alice}")
    assert rejected(forged, alice, gitproxy.NOT_OWN_AUTOSAVE), forged.stderr
    # one refused ref refuses the whole push: the harmless branch beside it is not made either
    both = component.git(work, "push", "origin", f"HEAD:{alice}", "HEAD:refs/heads/topic")
    assert rejected(both, alice, gitproxy.NOT_OWN_AUTOSAVE), both.stderr
    assert rejected(both, "refs/heads/topic", gitproxy.NOT_APPLIED), both.stderr
    assert refs_of(bare) == before
    # Alice's real autosave branch stays: its deletion is refused too
    git(bare, "update-ref", alice, shas[1])
    deleted = component.git(work, "push", "origin", "--delete", alice.removeprefix("refs/heads/"))
    assert rejected(deleted, alice, gitproxy.NOT_OWN_AUTOSAVE), deleted.stderr
    assert git(bare, "rev-parse", alice) == shas[1]
    # a name of the user's own that the autosave never writes
    odd = f"refs/heads/{PREFIX}/dev/elsewhere"
    named = component.git(work, "push", "origin", f"HEAD:{odd}")
    assert rejected(named, odd, gitproxy.NOT_AUTOSAVE_NAME), named.stderr
    # the user's own autosave branch and ordinary branches still take pushes, a pack larger
    # than git's post buffer too (sent chunked, after a probe without commands)
    (work / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    component.git(work, "add", "-A")
    component.git(work, "commit", "-q", "-m", "big")
    own = "refs/heads/" + contracts.autosave_branch(PREFIX, "dev", shas[2])
    fine = component.git(work, "push", "origin", f"HEAD:{own}", "HEAD:refs/heads/topic")
    assert fine.returncode == 0, fine.stderr
    assert git(bare, "rev-parse", own) == git(bare, "rev-parse", "topic")
    assert component.git(work, "push", "origin", "--delete", "topic").returncode == 0
    assert "refs/heads/topic" not in refs_of(bare)


def test_a_push_whose_commands_cannot_be_checked_is_refused(tmp_path, local):
    component, bare, shas = local
    url = f"{component.url}/git-receive-pack"
    alice = "refs/heads/" + contracts.autosave_branch(PREFIX, "alice", shas[2])
    line = f"{'0' * 40} {shas[2]} {alice}\0report-status side-band-64k\n".encode()
    body = gitproxy.pkt_line(line) + b"0000"
    headers = {"Content-Type": "application/x-git-receive-pack-request"}
    auth = ("s", component.secret)
    answer = requests.post(url, data=body, headers=headers, auth=auth, timeout=10)
    # receive-pack's own report, in side-band 1: nothing applied
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/x-git-receive-pack-result"
    assert f"ng {alice} {gitproxy.NOT_OWN_AUTOSAVE}".encode() in answer.content
    for bad in (b"0010not a command0000", body[:30], b"zzzz"):
        cut = requests.post(url, data=bad, headers=headers, auth=auth, timeout=10)
        assert cut.status_code == 400 and "could not be read" in cut.text
    packed = requests.post(
        url, data=gzip.compress(body), auth=auth, timeout=10,
        headers={**headers, "Content-Encoding": "gzip"},
    )
    assert packed.status_code == 415 and "compressed push" in packed.text
    # without report-status, a plain refusal
    plain = gitproxy.pkt_line(f"{'0' * 40} {shas[2]} {alice}\0agent=x\n".encode()) + b"0000"
    refused = requests.post(url, data=plain, headers=headers, auth=auth, timeout=10)
    assert refused.status_code == 403 and gitproxy.NOT_OWN_AUTOSAVE in refused.text
    assert alice not in refs_of(bare)


def test_local_default_branch_tags_and_other_refs_are_protected(tmp_path, local):
    component, bare, shas = local
    git(bare, "tag", "v1", shas[0])
    work = session_clone(component, tmp_path)
    main = "refs/heads/main"
    before = refs_of(bare)
    deleted = component.git(work, "push", "origin", "--delete", "main")
    assert rejected(deleted, main, gitproxy.DEFAULT_DELETED), deleted.stderr
    # back to a commit the repository knows: refused before anything is sent
    back = component.git(work, "push", "-f", "origin", f"{shas[1]}:{main}")
    assert rejected(back, main, gitproxy.NOT_FAST_FORWARD), back.stderr
    # a rewritten commit, new to the repository: refused once its pack is in
    component.git(work, "commit", "-q", "--amend", "-m", "rewritten")
    rewritten = component.git(work, "push", "-f", "origin", f"HEAD:{main}")
    assert rejected(rewritten, main, "pre-receive hook declined"), rewritten.stderr
    assert f"remote: renku-notebooks: {main}: {gitproxy.NOT_FAST_FORWARD}" in rewritten.stderr
    untag = component.git(work, "push", "origin", ":refs/tags/v1")
    assert rejected(untag, "refs/tags/v1", gitproxy.TAG_DELETED), untag.stderr
    retag = component.git(work, "push", "-f", "origin", f"{shas[2]}:refs/tags/v1")
    assert rejected(retag, "refs/tags/v1", gitproxy.TAG_MOVED), retag.stderr
    meta = component.git(work, "push", "origin", "HEAD:refs/meta/x")
    assert rejected(meta, "refs/meta/x", gitproxy.OTHER_REF), meta.stderr
    assert refs_of(bare) == before
    # forward is fine, and so are new tags
    component.git(work, "reset", "-q", "--hard", shas[2])
    (work / "more.txt").write_text("more\n")
    component.git(work, "add", "-A")
    component.git(work, "commit", "-q", "-m", "more")
    forward = component.git(work, "push", "origin", f"HEAD:{main}", "HEAD:refs/tags/v2")
    assert forward.returncode == 0, forward.stderr
    assert git(bare, "rev-parse", "main") == git(work, "rev-parse", "HEAD")
    assert git(bare, "rev-parse", "v1") == shas[0]


def test_sign_signs_only_the_components_own_branch(tmp_path, local):
    component, _, shas = local
    url = f"{component.url}/{autosave.SIGN_PATH}"
    body = {"tree": "a" * 40, "parent": shas[2]}
    assert requests.post(url, json=body, timeout=10).status_code == 401
    answer = requests.post(url, json=body, auth=("s", component.secret), timeout=10)
    own = contracts.autosave_branch(PREFIX, "dev", shas[2])
    key = autosave.branch_key(MASTER, own)
    assert answer.json() == {
        "branch": own,
        "signature": autosave.signature(key, own, "a" * 40, shas[2]),
    }
    # the branch is the component's to decide: a caller naming another one changes nothing
    other = requests.post(
        url, json={**body, "branch": "notebooks/autosave/alice/" + shas[2]},
        auth=("s", component.secret), timeout=10,
    )
    assert other.json()["branch"] == own
    bad = requests.post(url, json={"tree": "x"}, auth=("s", component.secret), timeout=10)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_sign_request"


def test_restore_applies_only_what_the_component_signed(tmp_path, local):
    component, bare, shas = local
    branch = contracts.autosave_branch(PREFIX, "dev", shas[2])
    os.environ[autosave.TOKEN_FILE_ENV] = str(tmp_path / "component" / "secret")
    try:
        work = session_clone(component, tmp_path)
        (work / "mine.txt").write_text("my unsaved work\n")
        saved = autosave.save(work, shas[2], component.url, branch)
        assert saved.pushed
        # the signed autosave comes back
        again = session_clone(component, tmp_path, "again")
        git(again, "checkout", "-q", "--detach", shas[2])
        assert autosave.restore(again, component.url, branch, launched=shas[2]) == saved.commit
        assert (again / "mine.txt").read_text() == "my unsaved work\n"
        # the same message (signature included) on another tree, written behind its back
        message = git(bare, "log", "-1", "--format=%B", branch)
        tree = git(bare, "rev-parse", f"{shas[0]}^{{tree}}")
        forged = subprocess.run(
            ["git", "commit-tree", tree, "-p", shas[2]], cwd=bare, input=message,
            capture_output=True, text=True, check=True,
            env={**os.environ, "GIT_AUTHOR_NAME": "m", "GIT_AUTHOR_EMAIL": "m@x",
                 "GIT_COMMITTER_NAME": "m", "GIT_COMMITTER_EMAIL": "m@x"},
        ).stdout.strip()
        unsigned = git(bare, "rev-parse", shas[1])  # a plain commit, as an old autosave is
        for tip, why in ((forged, "not written by"), (unsigned, "carries no signature")):
            git(bare, "update-ref", f"refs/heads/{branch}", tip)
            fresh = session_clone(component, tmp_path, f"fresh-{tip[:7]}")
            git(fresh, "checkout", "-q", "--detach", shas[2])
            with pytest.raises(autosave.AutosaveRefused, match=why):
                autosave.restore(fresh, component.url, branch, launched=shas[2])
            assert git(fresh, "rev-parse", "HEAD") == shas[2] and not (fresh / "mine.txt").exists()
            assert git(bare, "rev-parse", branch) == tip  # kept
    finally:
        del os.environ[autosave.TOKEN_FILE_ENV]


def test_local_refuses_wrong_secret_and_other_paths(tmp_path, local):
    component, _, _ = local
    denied = component.git(tmp_path, "ls-remote", component.url, secret="wrong")
    assert denied.returncode != 0
    other = component.git(tmp_path, "ls-remote", f"{component.base}/group/other.git")
    assert other.returncode != 0
    assert "reaches only group/demo" in other.stderr, other.stderr
    dumb = requests.get(f"{component.url}/HEAD", timeout=10)
    assert dumb.status_code == 403 and "reaches only group/demo" in dumb.text
    elsewhere = requests.get(
        f"{component.url}/info/refs?service=git-upload-pack",
        headers={"Host": "gitlab.example.org"},
        timeout=10,
    )
    assert elsewhere.status_code == 403


# --- GitLab: the stand-in, a real hub, and the glue's token endpoint -------------------------


@pytest.fixture(scope="module")
@starts_hub
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabWorld]:
    """GitLab with two projects of `dev` and `other`; a hub that refreshes logins after 1 s."""
    root = tmp_path_factory.mktemp("gitproxy-repos")
    shas = make_repo(root, "renku/demo")
    make_repo(root, "renku/other")
    standin = GitLabStandIn()
    for user in ("dev", "other"):
        standin.add_user(user)
    members = {"dev": 30, "other": 30}
    standin.add_project("renku/demo", repo=root / "renku/demo.git", members=members)
    standin.add_project("renku/other", repo=root / "renku/other.git", members=members)
    config = {
        "images": {"default": DEFAULT_IMAGE},
        "profiles": [SMALL],
        "provider": {"timeoutSeconds": 5},
        "launch": {"startTimeoutSeconds": 60},
    }
    env = {"NOTEBOOKS_TEST_AUTH_REFRESH_AGE": "1"}
    with GitLabWorld.running(tmp_path_factory.mktemp("gitproxy-hub"), standin, config,
                             root=root, shas=shas, hub_env=env) as world:
        yield world


@pytest.fixture(scope="module")
def server(world: GitLabWorld) -> str:
    """The name of dev's running server of renku/demo's first commit."""
    dev = world.login("dev")
    response = dev.post(f"renku/demo/{world.shas[0]}")
    assert response.status_code in (201, 202), response.text
    return str(dev.wait_running(f"renku/demo/{world.shas[0]}")["name"])


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gitproxy")


def service_token(hub: RunningHub) -> str:
    """The glue's hub token, as the hub side knows it (here: from the glue's environment)."""
    pid = listening_pid(hub.glue_port)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(v[21:].decode() for v in environ if v.startswith(b"JUPYTERHUB_API_TOKEN="))


@pytest.fixture(scope="module")
def component(world: GitLabWorld, server: str, tmp: Path) -> Iterator[Component]:
    hub = world.hub
    files = tmp / "component"
    files.mkdir()
    (files / "token").write_text(gitlab_token(hub, "dev"))
    key = contracts.component_key(service_token(hub), "dev", server)
    (files / "key").write_text(key)
    (files / "hub-token").write_text(hub.token_for("dev"))
    running = start_component(
        files,
        "renku/demo",
        upstream=world.gitlab.url,
        token_file=files / "token",
        token_endpoint=hub.prefix + "-/git-token",
        key_file=files / "key",
        hub_token_file=files / "hub-token",
        user="dev",
        server=server,
        launched=world.shas[0],
    )
    yield running
    stop_component(running)


def commit_and_push(component: Component, work: Path, branch: str) -> subprocess.CompletedProcess:
    (work / f"{branch}.txt").write_text(f"{branch}\n")
    component.git(work, "add", "-A")
    component.git(work, "commit", "-q", "-m", branch)
    return component.git(work, "push", "origin", f"HEAD:refs/heads/{branch}")


def test_push_through_the_component_needs_write_repository(world, component, tmp):
    standin = world.gitlab
    work = tmp / "push-work"
    cloned = component.git(tmp, "clone", "-q", component.url, str(work))
    assert cloned.returncode == 0, cloned.stderr
    pushed = commit_and_push(component, work, "from-session")
    assert pushed.returncode == 0, pushed.stderr
    bare = world.root / "renku/demo.git"
    assert git(bare, "rev-parse", "from-session") == git(work, "rev-parse", "HEAD")
    token = standin.tokens[gitlab_token(world.hub, "dev")]
    # a login from before write_repository was asked
    token.scope = " ".join(s for s in GITLAB_SCOPES if s != "write_repository")
    try:
        refused = commit_and_push(component, work, "without-scope")
    finally:
        token.scope = SCOPES
    assert refused.returncode != 0
    assert "You are not allowed to upload code." in refused.stderr, refused.stderr


def test_push_after_the_token_expired_gets_a_fresh_one_from_the_hub(world, component, tmp):
    hub, standin = world.hub, world.gitlab
    work = tmp / "expiry-work"
    assert component.git(tmp, "clone", "-q", component.url, str(work)).returncode == 0
    old = gitlab_token(hub, "dev")
    standin.expire_token(old)
    time.sleep(1.5)  # past the hub's auth_refresh_age
    pushed = commit_and_push(component, work, "after-expiry")
    assert pushed.returncode == 0, pushed.stderr
    new = gitlab_token(hub, "dev")
    assert new != old and standin.tokens[new].valid()
    assert standin.token_sent_in_header(new, "/renku/demo.git/") > 0
    log = component.log.read_text()
    for secret in (old, new, component.secret):
        assert_hidden(secret, log, "the component's log")
    assert_hidden(new, hub.log(), "the hub's and glue's log")


def test_gitlab_autosave_of_another_user_never_reaches_gitlab(world, component, tmp):
    standin, shas = world.gitlab, world.shas
    bare = world.root / "renku/demo.git"
    work = tmp / "forge-work"
    assert component.git(tmp, "clone", "-q", component.url, str(work)).returncode == 0
    (work / "planted.py").write_text("planted\n")
    component.git(work, "add", "-A")
    component.git(work, "commit", "-q", "-m", "planted")
    alice = "refs/heads/" + contracts.autosave_branch(PREFIX, "other", shas[0])
    git(bare, "update-ref", alice, shas[1])  # the other user's real autosave
    pushes = len([r for r in standin.requests if r.path.endswith("/git-receive-pack")])
    forged = component.git(work, "push", "-f", "origin", f"HEAD:{alice}")
    assert rejected(forged, alice, gitproxy.NOT_OWN_AUTOSAVE), forged.stderr
    gone = component.git(work, "push", "origin", "--delete", alice.removeprefix("refs/heads/"))
    assert rejected(gone, alice, gitproxy.NOT_OWN_AUTOSAVE), gone.stderr
    assert len([r for r in standin.requests if r.path.endswith("/git-receive-pack")]) == pushes
    assert git(bare, "rev-parse", alice) == shas[1]
    own = "refs/heads/" + contracts.autosave_branch(PREFIX, "dev", shas[0])
    pushed = component.git(work, "push", "-f", "origin", f"HEAD:{own}")
    assert pushed.returncode == 0, pushed.stderr
    assert git(bare, "rev-parse", own) == git(work, "rev-parse", "HEAD")


def test_another_project_is_refused_with_a_message(world, component, tmp):
    other = component.git(tmp, "ls-remote", f"{component.base}/renku/other.git")
    assert other.returncode != 0
    assert "reaches only renku/demo" in other.stderr, other.stderr
    sent = [r.path for r in world.gitlab.requests if r.path.startswith("/renku/other")]
    assert sent == []


def test_token_endpoint_refusals(world, server):
    hub = world.hub
    url = hub.prefix + "-/git-token"
    key = contracts.component_key(service_token(hub), "dev", server)
    body = {"user": "dev", "server": server, "hub_token": hub.token_for("dev")}
    world.login("other")  # another user, logged in with GitLab too

    def post(json: Any, key: str = key) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return requests.post(url, json=json, headers=headers, timeout=30)

    good = post(body)
    assert good.status_code == 200 and good.json()["access_token"] == gitlab_token(hub, "dev")
    cases = [
        (post(body, key="0" * 64), 401, "invalid_component_key"),
        (post({**body, "user": "other"}), 401, "invalid_component_key"),  # key is per user
        (post({**body, "hub_token": hub.token_for("other")}), 403, "token_not_owned"),
        (post({**body, "hub_token": "nonsense"}), 401, "hub_token_refused"),
        (post({"user": "dev", "server": server}), 400, "invalid_token_request"),
    ]
    missing = contracts.component_key(service_token(hub), "dev", "no-such-server")
    cases.append((post({**body, "server": "no-such-server"}, key=missing), 404, "server_not_found"))
    token = gitlab_token(hub, "dev")
    for response, status, code in cases:
        assert (response.status_code, response.json()["error"]) == (status, code), response.text
        assert_hidden(token, response.text, "a refusal")
