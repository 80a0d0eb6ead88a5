"""GitLab end to end with the real hub: OAuth login -> glue -> access check -> spawn -> clone with
the user's token -> the server serves the commit's files. GitLab is the API stand-in."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from glue.hub.setup import GITLAB_SCOPES
from testing.checks import assert_hidden
from testing.hub import (
    Client,
    end_processes,
    hub_calls_by_glue,
    log_mark,
    log_since,
    processes_using_hub,
)
from testing.marks import starts_hub
from testing.net import free_port
from testing.worlds import DEFAULT_IMAGE, REGISTRY, GitLabWorld, flow_world, gitlab_token


@pytest.fixture(scope="module")
@starts_hub
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabWorld]:
    """GitLab with projects and members, and a hub logging in with it."""
    with flow_world(tmp_path_factory, {}) as world:
        yield world


@pytest.fixture
@starts_hub
def crashing_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabWorld]:
    """The same, with a hub of its own for a test that kills it: its internal ports stay the
    same across restarts; what outlived the killed hub is ended afterwards."""
    hub_port = free_port()
    env = {"NOTEBOOKS_HUB_PORT": str(hub_port), "NOTEBOOKS_PROXY_API_PORT": str(free_port())}
    leftovers = []
    try:
        with flow_world(tmp_path_factory, env) as world:
            yield world
            leftovers = processes_using_hub(hub_port)
    finally:
        end_processes([p for p in leftovers if p.is_running()])


@pytest.fixture(scope="module")
@starts_hub
def refreshing_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabWorld]:
    """The same, with a hub that refreshes GitLab logins after one second, not five minutes."""
    with flow_world(tmp_path_factory, {"NOTEBOOKS_TEST_AUTH_REFRESH_AGE": "1"}) as world:
        yield world


def launch(client: Client, project: str, sha: str) -> requests.Response:
    return client.post(f"{project}/{sha}")


def test_launch_clones_with_the_users_token_and_uses_the_commit_image(world):
    hub, shas = world.hub, world.shas
    dev = world.login("dev")
    response = launch(dev, "renku/demo", shas[0])
    assert response.status_code in (201, 202), response.text
    model = dev.wait_running(f"renku/demo/{shas[0]}")
    assert model["image"] == f"{REGISTRY}/renku/demo:{shas[0][:7]}"
    assert model["image_fallback"] is False
    readme = dev.session.get(f"{hub.absolute(model['url'])}api/contents/README.md", timeout=30)
    assert readme.json()["content"] == "version 1\n"
    # a commit without an image runs the default image
    other = launch(dev, "renku/demo", shas[1]).json()
    assert other["image"] == DEFAULT_IMAGE and other["image_fallback"] is True


def test_one_hub_read_gives_the_servers_and_the_gitlab_login(world):
    """Counted at the hub: with GitLab too, a status read with warm caches is one read of the
    user model (its servers and, in the same answer, the GitLab token the access check needs);
    a launch is that read and the start."""
    hub, shas = world.hub, world.shas
    counted = world.login("counted")
    path = f"renku/demo/{shas[2]}"
    assert counted.get(path).status_code == 404  # warms the identity and access caches
    read = "GET /hub/api/notebooks/servers/counted"
    try:
        mark = log_mark(hub)
        assert counted.get(path).json()["error"] == "server_not_found"
        assert hub_calls_by_glue(log_since(hub, mark)) == [read]
        mark = log_mark(hub)
        response = launch(counted, "renku/demo", shas[2])
        assert response.status_code in (201, 202), response.text
        started = f"POST /hub/api/users/counted/servers/{response.json()['name']}"
        assert hub_calls_by_glue(log_since(hub, mark)) == [read, started]
    finally:
        hub.remove_all_servers("counted")


def test_token_appears_nowhere(world):
    hub, shas, standin = world.hub, world.shas, world.gitlab
    dev = world.login("dev")
    path = f"renku/demo/{shas[2]}"
    responses = [launch(dev, "renku/demo", shas[2])]
    model = dev.wait_running(path)
    responses += [dev.get(path), dev.get(""), dev.get("user")]
    token = gitlab_token(hub, "dev")
    sent = standin.token_sent_in_header(token)  # not inline: a failing assert prints its args
    assert sent > 0, "the glue never used the token"
    leaks = standin.token_leaks(token)
    assert leaks == []
    for response in responses:
        assert_hidden(token, response.text, response.request.path_url)
    assert_hidden(token, hub.log(), "the hub's log")
    workspace = hub.workspaces / "dev" / model["name"]
    for path_ in workspace.joinpath(".git").rglob("*"):
        if path_.is_file():
            assert_hidden(token, path_.read_bytes(), path_)
    processes = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True)
    assert_hidden(token, processes.stdout, "the process table")
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            assert_hidden(token, environ.read_bytes(), environ)
        except (PermissionError, FileNotFoundError, ProcessLookupError):
            continue


@pytest.mark.parametrize(
    ("user", "project", "status", "code"),
    [
        ("guest", "renku/demo", 403, "insufficient_access"),
        ("reporter", "renku/demo", 403, "insufficient_access"),
        ("outsider", "renku/demo", 404, "project_not_found"),
        ("outsider", "public/open", 403, "insufficient_access"),
        ("maint", "renku/demo", None, None),
        ("owner", "renku/demo", None, None),
        ("grouped", "renku/sub/deep", None, None),
        ("shared-dev", "renku/shared", None, None),  # Maintainer in a share capped at Developer
        ("shared-rep", "renku/shared", 403, "insufficient_access"),  # capped at Reporter
        ("invited", "renku/demo", None, None),  # a group invited into the project's group
        ("solo", "solo/notes", None, None),  # own personal namespace
    ],
)
def test_access_matrix(world, user, project, status, code):
    hub = world.hub
    client = world.login(user)
    response = launch(client, project, _head_sha(world, project))
    if status is None:
        assert response.status_code in (201, 202), response.text
        assert len(hub.hub_servers(user)) == 1
        hub.remove_all_servers(user)
    else:
        assert response.status_code == status, response.text
        assert response.json()["error"] == code
        if status == 403:
            assert "Developer" in response.json()["message"]
        assert hub.hub_servers(user) == {}


def _head_sha(world: GitLabWorld, project: str) -> str:
    repo = world.gitlab.projects[project].repo
    return subprocess.check_output(["git", "-C", str(repo), "rev-parse", "main"], text=True).strip()


@pytest.mark.parametrize(
    ("user", "status", "code", "words"),
    [
        ("blocked", 403, "gitlab_account_blocked", "blocked"),
        ("narrow", 502, "gitlab_scope_missing", "`read_api`"),
    ],
)
def test_refusals_that_are_not_about_the_project_say_why(world, user, status, code, words):
    """A blocked account, or a login from before the application gained `read_api`."""
    hub, standin, shas = world.hub, world.gitlab, world.shas
    client = world.login(user)
    if user == "blocked":
        standin.users[user].state = "blocked"
    else:
        standin.tokens[gitlab_token(hub, user)].scope = "read_user read_repository"
    try:
        response = launch(client, "renku/demo", shas[0])
    finally:
        standin.users[user].state = "active"
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert words in response.json()["message"]
    assert hub.hub_servers(user) == {}


def test_login_fails_when_the_application_lacks_a_requested_scope(world):
    """GitLab (Doorkeeper) refuses a scope the application was not registered with, on its
    own error page: no code, nothing sent back to the hub, nobody logged in."""
    hub, standin = world.hub, world.gitlab
    app = standin.oauth_apps["hub-client"]
    app.scopes = "read_user read_repository"  # registered without read_api
    standin.oauth_user = "outsider"
    try:
        browser = requests.Session()
        response = browser.get(f"{hub.url}/hub/oauth_login", timeout=30)
    finally:
        app.scopes = " ".join(GITLAB_SCOPES)
    assert response.status_code == 200 and response.url.startswith(f"{standin.url}/oauth/")
    assert "The requested scope is invalid, unknown, or malformed." in response.text
    assert "code=" not in response.url and "jupyterhub-session-id" not in browser.cookies


def test_autosave_commits_as_the_user_and_a_push_rule_refusal_keeps_the_server(world):
    """GitLab's push rules check the autosave's commit (it carries the user's GitLab email),
    and a refused push (a wildcard-protected `notebooks/*`) refuses the stop with 409
    `autosave_failed` in GitLab's words; the server keeps running, nothing is lost."""
    hub, standin = world.hub, world.gitlab
    project = "renku/sub/deep"  # `grouped` is a Developer through the group only
    client, sha = world.login("grouped"), _head_sha(world, project)
    path, branch = f"{project}/{sha}", f"notebooks/autosave/grouped/{sha}"
    bare = standin.projects[project].repo
    assert bare is not None
    hub.remove_all_servers("grouped")  # the module's world: a server of an earlier test
    standin.set_push_rules(project, "commit_committer_check", "member_check")
    standin.protect_branch(project, "notebooks/*")
    try:
        assert launch(client, project, sha).status_code in (201, 202)
        contents = f"{hub.absolute(client.wait_running(path)['url'])}api/contents/unsaved.txt"
        written = client.session.put(
            contents, json={"type": "file", "format": "text", "content": "mine"}, timeout=30
        )
        assert written.status_code in (200, 201), written.text
        refused = client.delete(path)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "autosave_failed"
        assert ("You are not allowed to create protected branches on this project"
                in refused.json()["message"]), refused.json()
        assert client.get(path).json()["status"] == "running"
        standin.projects[project].protected.clear()
        assert client.delete(path).status_code == 204
        committer = subprocess.run(
            ["git", "-C", str(bare), "log", "-1", "--format=%ae %ce", branch],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        assert committer == [standin.users["grouped"].email] * 2
    finally:
        standin.set_push_rules(project)
        standin.projects[project].protected.clear()
        hub.remove_all_servers("grouped")
        subprocess.run(["git", "-C", str(bare), "update-ref", "-d", f"refs/heads/{branch}"],
                       check=False)


def _renamed(world: GitLabWorld) -> str:
    """Rename renku/old-name to renku/new-name (once); returns its head commit."""
    standin = world.gitlab
    if "renku/old-name" not in standin.redirects:
        standin.rename_project("renku/old-name", "renku/new-name")
    return _head_sha(world, "renku/new-name")


def test_renamed_project_launches_from_its_old_url(world):
    hub = world.hub
    sha = _renamed(world)
    mover = world.login("mover")
    response = launch(mover, "renku/old-name", sha)
    assert response.status_code in (201, 202), response.text
    model = mover.wait_running(f"renku/old-name/{sha}")
    readme = mover.session.get(f"{hub.absolute(model['url'])}api/contents/README.md", timeout=30)
    assert readme.json()["content"] == "version 3\n"
    hub.remove_all_servers("mover")


def test_renamed_project_server_model_shows_the_new_path(world):
    hub = world.hub
    sha = _renamed(world)
    mover = world.login("mover")
    try:
        response = launch(mover, "renku/old-name", sha)
        assert response.status_code in (201, 202), response.text
        assert (response.json()["namespace"], response.json()["project"]) == ("renku", "new-name")
    finally:
        hub.remove_all_servers("mover")


def test_login_close_to_expiry_is_renewed_before_the_clone(world):
    """A token with 30 s left passes the glue's check; the hub renews it before the spawn,
    so the hub-side check and the clone step run on a token with two hours left."""
    hub, standin, shas = world.hub, world.gitlab, world.shas
    standin.oauth_token_seconds = 30
    try:
        client = world.login("short")
    finally:
        standin.oauth_token_seconds = 7200
    old = gitlab_token(hub, "short")
    response = launch(client, "renku/demo", shas[1])
    assert response.status_code in (201, 202), response.text
    model = client.wait_running(f"renku/demo/{shas[1]}")
    new = gitlab_token(hub, "short")
    assert new != old
    assert standin.tokens[old].revoked  # GitLab invalidates the token a refresh replaced
    left = (standin.tokens[new].expires_at or 0) - time.time()
    assert left > 3600, left
    cloned_with_new = standin.token_sent_in_header(new, "/renku/demo.git/")
    assert cloned_with_new > 0
    cloned_with_old = standin.token_sent_in_header(old, "/renku/demo.git/")
    assert cloned_with_old == 0
    readme = client.session.get(f"{hub.absolute(model['url'])}api/contents/README.md", timeout=30)
    assert readme.json()["content"] == "version 2\n"
    hub.remove_all_servers("short")


def processes_of(user: str, module: str) -> list[int]:
    """Pids of `python -m <module>` processes that name `user` or their workspaces."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        if module.encode() in args and any(user.encode() in arg for arg in args):
            found.append(int(cmdline.parent.name))
    return found


def save_work(world: GitLabWorld, sha: str, words: str) -> tuple[Client, str, str]:
    """`halted` launches the commit, writes a file and stops (DELETE: autosaved, removed);
    the client, the server's path and the file's contents URL."""
    hub, client = world.hub, world.login("halted")
    path = f"renku/demo/{sha}"
    assert launch(client, "renku/demo", sha).status_code in (201, 202)
    contents = f"{hub.absolute(client.wait_running(path)['url'])}api/contents/unsaved.txt"
    written = client.session.put(
        contents, json={"type": "file", "format": "text", "content": words}, timeout=30
    )
    assert written.status_code in (200, 201), written.text
    assert client.delete(path).status_code == 204
    return client, path, contents


@contextlib.contextmanager
def held_in_restore(world: GitLabWorld, client: Client, sha: str) -> Iterator[None]:
    """Launch again while the stand-in holds the restore's fetch of the autosave: the body
    runs while the launch is in its session step, every time."""
    standin = world.gitlab
    standin.hold_fetch = b"refs/heads/notebooks/autosave/halted/" + sha.encode()
    try:
        assert launch(client, "renku/demo", sha).status_code == 202
        assert standin.fetch_held.wait(60), "the restore did not fetch the autosave"
        yield
    finally:
        standin.hold_fetch = None
        standin.release_fetch.set()


def wait_no_component(user: str) -> None:
    deadline = time.monotonic() + 30
    while processes_of(user, "glue.session.gitproxy") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_of(user, "glue.session.gitproxy"), "the git component outlived it"


def assert_restored(client: Client, path: str, contents: str, words: str) -> None:
    """The next launch brings the saved file back."""
    sha = path.rsplit("/", 1)[1]
    assert launch(client, "renku/demo", sha).status_code in (201, 202)
    model = client.wait_running(path, timeout=90)
    assert model["restored_from"], model
    back = client.session.get(contents, timeout=30)
    assert back.status_code == 200 and back.json()["content"] == words, back.text


def test_a_stop_that_interrupts_the_restore_leaves_nothing_running_and_loses_nothing(world):
    """A DELETE while the launch restores the autosave (the hub cancels the pending start and
    calls no stop(), the server having no process yet) ends the session's git component and
    the step; the autosave branch stays, so the next launch brings the work back."""
    hub, standin, shas = world.hub, world.gitlab, world.shas
    client, path, contents = save_work(world, shas[0], "work\n")
    assert not processes_of("halted", "glue.session.gitproxy")
    with held_in_restore(world, client, shas[0]):
        assert processes_of("halted", "glue.session.gitproxy")  # what must end with the stop
        assert client.delete(path).status_code in (202, 204)
        wait_no_component("halted")
        assert not processes_of("halted", "glue.session.gitsession"), "the session step outlived it"
        assert hub.hub_servers("halted") == {}
    assert_restored(client, path, contents, "work\n")
    hub.remove_all_servers("halted")
    standin.fetch_held.clear()
    standin.release_fetch.clear()


def test_a_hub_killed_during_the_restore_leaves_no_component_and_loses_nothing(crashing_world):
    """The hub dies (SIGKILL) while a launch restores the autosave: the step dies with it,
    the session's git component (its own process session, to outlive a hub restart) does not.
    The restarted hub's next launch of that server ends that leftover and brings the work
    back; its stop leaves no component."""
    hub, shas = crashing_world.hub, crashing_world.shas
    client, path, contents = save_work(crashing_world, shas[1], "kept\n")
    with held_in_restore(crashing_world, client, shas[1]):
        hub.kill()
        assert len(processes_of("halted", "glue.session.gitproxy")) == 1  # the one to end later
    hub.start()
    assert_restored(client, path, contents, "kept\n")
    assert len(processes_of("halted", "glue.session.gitproxy")) == 1, "the leftover still runs"
    assert client.delete(path).status_code == 204
    wait_no_component("halted")


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("down", 503, "gitlab_unavailable"),
        ("slow", 504, "gitlab_timeout"),
        ("error", 502, "gitlab_error"),
    ],
)
def test_gitlab_faults_fail_closed(world, fault, status, code):
    hub, standin, shas = world.hub, world.gitlab, world.shas
    client = world.login("maint")
    hub.remove_all_servers("maint")
    saved_url = standin.url
    if fault == "slow":
        standin.delay = 3.0
    elif fault == "error":
        standin.fail_status = 500
    try:
        if fault == "down":
            world.thread.run(standin.stop())
        response = launch(client, "renku/demo", shas[2])
        assert response.status_code == status, response.text
        assert response.json()["error"] == code
        assert hub.hub_servers("maint") == {}
        # the glue still serves what does not need GitLab
        assert client.get("").status_code == 200
        assert requests.get(hub.prefix + "health", timeout=10).status_code == 200
    finally:
        standin.delay, standin.fail_status = 0.0, None
        if fault == "down":
            port = int(saved_url.rsplit(":", 1)[1])
            world.thread.run(standin.start(port=port))


def test_expired_token_asks_to_log_in_again(world):
    hub, standin, shas = world.hub, world.gitlab, world.shas
    client = world.login("owner")
    standin.expire_token(gitlab_token(hub, "owner"))
    response = launch(client, "renku/demo", shas[1])
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "gitlab_token_expired"
    assert "log in again" in response.json()["message"].lower()
    assert hub.hub_servers("owner") == {}


def test_expired_token_is_refreshed_by_the_hub(refreshing_world):
    """GitLab gave a refresh token: the hub renews the login and the launch goes through."""
    world = refreshing_world
    hub, standin, shas = world.hub, world.gitlab, world.shas
    world.login("dev")
    old = gitlab_token(hub, "dev")
    standin.expire_token(old)
    time.sleep(1.5)  # past auth_refresh_age
    hub.tokens.pop("dev")
    client = Client(hub, "dev")  # a new hub token: nothing cached in the glue
    response = launch(client, "renku/demo", shas[0])
    assert response.status_code in (201, 202), response.text
    assert gitlab_token(hub, "dev") != old
    hub.remove_all_servers("dev")


def test_revoked_login_asks_to_log_in_again(refreshing_world):
    """No refresh possible (the user revoked the application): a clear 401, nothing spawned."""
    world = refreshing_world
    hub, standin, shas = world.hub, world.gitlab, world.shas
    world.login("maint")
    standin.revoke_token(gitlab_token(hub, "maint"))
    standin.revoke_refresh_tokens("maint")
    time.sleep(1.5)
    hub.tokens.pop("maint", None)
    response = launch(Client(hub, "maint"), "renku/demo", shas[0])
    assert response.status_code == 401, response.text
    assert response.json()["error"] in ("not_logged_in", "invalid_token", "gitlab_token_expired")
    assert "log in" in response.json()["message"].lower()
    assert hub.hub_servers("maint") == {}
