"""The session's git token component with real git: in front of the GitLab stand-in (tokens from
a real hub's OAuth login, fresh ones through the glue's `-/git-token`), and serving a local bare
repository itself. Autosave pushes through it too."""

from __future__ import annotations

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

from glue import autosave, gitproxy, gittoken
from glue.hubconfig import GITLAB_SCOPES
from tests.gitlab_standin import GitLabStandIn, StandInThread
from tests.hubtools import (
    RunningHub,
    assert_hidden,
    free_port,
    git,
    listening_pid,
    make_repo,
    wait_until,
)
from tests.test_gitlab_flow import gitlab_token, login

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


def start_component(tmp: Path, project: str, **settings: Any) -> Component:
    tmp.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(16)
    (tmp / "secret").write_text(secret)
    port = free_port()
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
    component = start_component(tmp_path / "component", "group/demo", repo=bare)
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
    branch = autosave.branch("notebooks/autosave", "dev", shas[2])
    os.environ[autosave.TOKEN_FILE_ENV] = str(tmp_path / "component" / "secret")
    try:
        saved = autosave.save(work, shas[2], component.url, branch)
    finally:
        del os.environ[autosave.TOKEN_FILE_ENV]
    assert saved.pushed and git(bare, "show", f"{branch}:dirty.txt") == "unsaved"
    assert_hidden(component.secret, component.log.read_text(), "the component's log")


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
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("gitproxy-repos")
    shas = make_repo(root, "renku/demo")
    make_repo(root, "renku/other")
    standin = GitLabStandIn()
    for user in ("dev", "other"):
        standin.add_user(user)
    members = {"dev": 30, "other": 30}
    standin.add_project("renku/demo", repo=root / "renku/demo.git", members=members)
    standin.add_project("renku/other", repo=root / "renku/other.git", members=members)
    with StandInThread(standin) as thread:
        config = {
            "images": {"default": "registry.example.org/renku/default:1"},
            "profiles": [{"name": "small", "cpu": 0.5, "memory": "1G"}],
            "provider": {"kind": "gitlab", "url": standin.url, "timeoutSeconds": 5},
            "launch": {"startTimeoutSeconds": 60},
        }
        env = {
            "GITLAB_CLIENT_ID": "hub-client",
            "GITLAB_CLIENT_SECRET": "hub-secret-value",
            "NOTEBOOKS_TEST_AUTH_REFRESH_AGE": "1",
        }
        hub = RunningHub(tmp_path_factory.mktemp("gitproxy-hub"), config, extra_env=env)
        standin.add_oauth_app(
            "hub-client", "hub-secret-value", f"{hub.url}/hub/oauth_callback", scopes=SCOPES
        )
        hub.start()
        try:
            dev = login({"hub": hub, "gitlab": standin}, "dev")
            response = dev.post(f"renku/demo/{shas[0]}")
            assert response.status_code in (201, 202), response.text
            server = dev.wait_running(f"renku/demo/{shas[0]}")["name"]
            yield {
                "hub": hub,
                "gitlab": standin,
                "thread": thread,
                "shas": shas,
                "server": server,
                "root": root,
                "tmp": tmp_path_factory.mktemp("gitproxy"),
            }
        finally:
            hub.stop()


def service_token(hub: RunningHub) -> str:
    """The glue's hub token, as the hub side knows it (here: from the glue's environment)."""
    pid = listening_pid(hub.glue_port)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(v[21:].decode() for v in environ if v.startswith(b"JUPYTERHUB_API_TOKEN="))


@pytest.fixture(scope="module")
def component(world: dict[str, Any]) -> Iterator[Component]:
    hub, tmp = world["hub"], world["tmp"]
    files = tmp / "component"
    files.mkdir()
    (files / "token").write_text(gitlab_token(hub, "dev"))
    key = gittoken.component_key(service_token(hub), "dev", world["server"])
    (files / "key").write_text(key)
    (files / "hub-token").write_text(hub.token_for("dev"))
    running = start_component(
        files,
        "renku/demo",
        upstream=world["gitlab"].url,
        token_file=files / "token",
        token_endpoint=hub.prefix + "-/git-token",
        key_file=files / "key",
        hub_token_file=files / "hub-token",
        user="dev",
        server=world["server"],
    )
    yield running
    stop_component(running)


def commit_and_push(component: Component, work: Path, branch: str) -> subprocess.CompletedProcess:
    (work / f"{branch}.txt").write_text(f"{branch}\n")
    component.git(work, "add", "-A")
    component.git(work, "commit", "-q", "-m", branch)
    return component.git(work, "push", "origin", f"HEAD:refs/heads/{branch}")


def test_push_through_the_component_needs_write_repository(world, component):
    standin, tmp = world["gitlab"], world["tmp"]
    work = tmp / "push-work"
    cloned = component.git(tmp, "clone", "-q", component.url, str(work))
    assert cloned.returncode == 0, cloned.stderr
    pushed = commit_and_push(component, work, "from-session")
    assert pushed.returncode == 0, pushed.stderr
    bare = world["root"] / "renku/demo.git"
    assert git(bare, "rev-parse", "from-session") == git(work, "rev-parse", "HEAD")
    token = standin.tokens[gitlab_token(world["hub"], "dev")]
    # a login from before write_repository was asked
    token.scope = " ".join(s for s in GITLAB_SCOPES if s != "write_repository")
    try:
        refused = commit_and_push(component, work, "without-scope")
    finally:
        token.scope = SCOPES
    assert refused.returncode != 0
    assert "You are not allowed to upload code." in refused.stderr, refused.stderr


def test_push_after_the_token_expired_gets_a_fresh_one_from_the_hub(world, component):
    hub, standin, tmp = world["hub"], world["gitlab"], world["tmp"]
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


def test_another_project_is_refused_with_a_message(world, component):
    tmp = world["tmp"]
    other = component.git(tmp, "ls-remote", f"{component.base}/renku/other.git")
    assert other.returncode != 0
    assert "reaches only renku/demo" in other.stderr, other.stderr
    sent = [r.path for r in world["gitlab"].requests if r.path.startswith("/renku/other")]
    assert sent == []


def test_token_endpoint_refusals(world):
    hub, server = world["hub"], world["server"]
    url = hub.prefix + "-/git-token"
    key = gittoken.component_key(service_token(hub), "dev", server)
    body = {"user": "dev", "server": server, "hub_token": hub.token_for("dev")}
    login(world, "other")  # another user, logged in with GitLab too

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
    missing = gittoken.component_key(service_token(hub), "dev", "no-such-server")
    cases.append((post({**body, "server": "no-such-server"}, key=missing), 404, "server_not_found"))
    token = gitlab_token(hub, "dev")
    for response, status, code in cases:
        assert (response.status_code, response.json()["error"]) == (status, code), response.text
        assert_hidden(token, response.text, "a refusal")
