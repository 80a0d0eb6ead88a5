"""The glue's endpoints against a real hub, proxy, single-user servers and git repositories."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from glue.core.errors import BadRequest
from glue.core.target import Target
from glue.service.hubapi import Hub
from testing.checks import wait_until
from testing.hub import Client, RunningHub, hub_calls_by_glue, log_mark, log_since, raw_request
from testing.repos import workspace_git

SHA_RE = r"^[0-9a-f]{40}$"


def fresh(hub: RunningHub, user: str) -> Iterator[Client]:
    """A user's client with no servers before or after the test."""
    hub.remove_all_servers(user)
    yield Client(hub, user)
    hub.remove_all_servers(user)


@pytest.fixture
def alice(hub: RunningHub) -> Iterator[Client]:
    yield from fresh(hub, "alice")


@pytest.fixture
def bob(hub: RunningHub) -> Iterator[Client]:
    yield from fresh(hub, "bob")


def launch_path(
    repos: dict, project: str = "demo/hello", index: int = 0, notebook: str = ""
) -> str:
    sha = repos["shas"][project][index]
    return f"{project}/{sha}" + (f"/{notebook}" if notebook else "")




def server_file(hub: RunningHub, client: Client, model: dict, path: str) -> requests.Response:
    """Read a file through the running server's contents API, via the proxy."""
    return client.session.get(f"{hub.absolute(model['url'])}api/contents/{path}", timeout=30)


def test_launch_at_older_commit_serves_that_commit(hub, alice, repos):
    path = launch_path(repos, index=0, notebook="notebooks/analysis.ipynb")
    response = alice.post(path)
    assert response.status_code in (201, 202), response.text
    model = response.json()
    assert model["commit_sha"] == repos["shas"]["demo/hello"][0]
    assert (model["namespace"], model["project"]) == ("demo", "hello")
    assert model["notebook"] == "notebooks/analysis.ipynb"
    assert model["profile"] == "small"
    assert model["image"] == "registry.example.org/renku/default:1"
    assert set(model) >= {"name", "status", "url", "started", "last_activity"}
    model = alice.wait_running(path)
    readme = server_file(hub, alice, model, "README.md")
    assert readme.status_code == 200
    assert readme.json()["content"] == "version 1\n"  # the tip says "version 3"
    workspace = hub.workspaces / "alice" / model["name"]
    assert workspace_git(workspace, "rev-parse", "HEAD") == repos["shas"]["demo/hello"][0]
    # only the wanted commit was fetched, not the history
    assert workspace_git(workspace, "rev-list", "--count", "--all") == "1"


def test_status_list_and_user_endpoints(hub, alice, repos):
    path = launch_path(repos, index=1)
    assert alice.get(path).status_code == 404
    assert alice.get(path).json()["error"] == "server_not_found"
    alice.post(path)
    model = alice.wait_running(path)
    listed = alice.get("").json()["servers"]
    assert [s["name"] for s in listed] == [model["name"]]
    assert listed[0]["status"] == "running"
    user = alice.get("user").json()
    assert user["name"] == "alice"
    assert model["name"] in user["servers"]
    assert "auth_state" not in user


def test_each_request_makes_the_fewest_hub_calls(hub, alice, repos):
    """Counted at the hub, from its own request log: a status read with warm caches is one
    read of the user model; a launch is that read and the start; the answer of the start
    is the model (the same as a later read shows), not a third call."""
    path = launch_path(repos, index=1)

    def calls(method: str, where: str) -> tuple[requests.Response, list[str]]:
        # warm caches: the identity is kept 30 s from its lookup, so each measure gets a
        # token of its own that the warm-up looks up just before (an older lookup may lapse
        # between warm-up and measure on a slow machine); and the access decision
        created = hub.admin("POST", "users/alice/tokens", json={"note": "fewest calls"})
        assert created.status_code == 201, created.text
        client = Client(hub, "alice")
        client.session.headers["Authorization"] = f"token {created.json()['token']}"
        assert client.get(path).status_code in (200, 404)
        mark = log_mark(hub)
        response = client.request(method, where)
        return response, hub_calls_by_glue(log_since(hub, mark))

    user_read = "GET /hub/api/notebooks/servers/alice"
    response, made = calls("GET", path)
    assert response.status_code == 404 and made == [user_read]
    response, made = calls("GET", "")
    assert response.status_code == 200 and made == [user_read]
    response, made = calls("POST", path)
    assert response.status_code in (201, 202), response.text
    server = response.json()["name"]
    assert made == [user_read, f"POST /hub/api/users/alice/servers/{server}"]
    running = alice.wait_running(path)
    started = response.json()
    for key in ("name", "namespace", "project", "commit_sha", "url", "profile", "image"):
        assert started[key] == running[key], key
    response, made = calls("POST", path)
    assert response.status_code == 200 and made == [user_read]


def test_the_hubs_servers_read_agrees_with_its_user_model(hub, alice, bob, repos):
    """glue.hub.serversapi answers from the hub's memory what the hub's own user model (read
    from its database) says of the servers: running, stopped and removed ones, after each
    change; the same scope checks (auth_state only with admin:auth_state)."""

    def both(token: str, user: str = "alice") -> tuple[int, dict]:
        headers = {"Authorization": f"token {token}"}
        lean = requests.get(
            f"{hub.url}/hub/api/notebooks/servers/{user}", headers=headers, timeout=30
        )
        full = requests.get(
            f"{hub.url}/hub/api/users/{user}",
            params={"include_stopped_servers": "1"},
            headers=headers,
            timeout=30,
        )
        assert lean.status_code == full.status_code, (lean.text, full.text)
        if lean.status_code != 200:
            return lean.status_code, {}
        lean_model, full_model = lean.json(), full.json()
        # named servers: the default one ('') is not the glue's, and the hub's model makes
        # its spawner as a side effect (stopped either way)
        named = {name: s for name, s in lean_model["servers"].items() if name}
        assert named == {name: s for name, s in full_model["servers"].items() if name}
        assert lean_model.get("auth_state") == full_model.get("auth_state")
        assert ("auth_state" in lean_model) == ("auth_state" in full_model)
        return 200, named

    admin = hub.admin_token
    assert both(admin) == (200, {})
    first, second = launch_path(repos, index=1), launch_path(repos, index=2)
    for path in (first, second):
        assert alice.post(path).status_code in (201, 202)
    names = {alice.wait_running(path)["name"] for path in (first, second)}
    _, servers = both(admin)
    assert set(servers) == names and all(s["ready"] for s in servers.values())
    stopped = alice.get(first).json()["name"]
    assert hub.admin("DELETE", f"users/alice/servers/{stopped}").status_code in (202, 204)
    wait_until(lambda: not hub.hub_servers("alice")[stopped]["ready"], 60, "stopped")
    _, servers = both(admin)
    assert set(servers) == names and not servers[stopped]["ready"]  # stopped, still there
    assert alice.delete(second).status_code in (202, 204)
    wait_until(lambda: len(hub.hub_servers("alice")) == 1, 60, "removed")
    assert set(both(admin)[1]) == {stopped}  # removed: gone from both
    # the user's own token: their servers, no auth_state; another user: refused alike
    assert set(both(hub.token_for("alice"))[1]) == {stopped}
    assert both(hub.token_for("bob"))[0] in (403, 404)
    assert both(admin, "nobody-here")[0] == 404


def test_second_post_returns_the_same_server(hub, alice, repos):
    path = launch_path(repos, index=1)
    first = alice.post(path)
    assert first.status_code in (201, 202)
    second = alice.post(path, json={"profile": "small"})
    assert second.status_code == 200
    assert second.json()["name"] == first.json()["name"]
    assert len(hub.hub_servers("alice")) == 1


def test_racing_posts_start_one_server(hub, alice, repos):
    path = launch_path(repos, project="demo/other", index=2)
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: alice.post(path), range(6)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 5 and codes[-1] in (201, 202), codes
    assert len({r.json()["name"] for r in responses}) == 1
    assert list(hub.hub_servers("alice")) == [responses[0].json()["name"]]


def test_delete_stops_and_removes(hub, alice, repos):
    path = launch_path(repos, index=2)
    alice.post(path)
    model = alice.wait_running(path)
    workspace = hub.workspaces / "alice" / model["name"]
    assert workspace.is_dir()
    response = alice.delete(path)
    assert response.status_code == 204, response.text
    assert alice.get(path).status_code == 404
    assert hub.hub_servers("alice") == {}
    assert not workspace.exists()
    assert alice.delete(path).status_code == 404


def test_other_users_server_is_invisible(hub, alice, bob, repos):
    path = launch_path(repos, index=0)
    alice.post(path)
    alice.wait_running(path)
    assert bob.get(path).status_code == 404
    assert bob.get("").json()["servers"] == []
    assert bob.delete(path).status_code == 404
    assert alice.get(path).json()["status"] == "running"
    # bob's own launch of the same commit is a second, separate server
    bob_model = bob.post(path).json()
    # each user's servers on their own origin
    assert bob_model["url"].startswith(f"http://bob.localhost:{hub.port}/user/bob/")
    assert alice.get(path).json()["url"].startswith(f"http://alice.localhost:{hub.port}/user/alice/")


def test_subgroup_namespace(hub, alice, repos):
    path = launch_path(repos, project="group/sub/deep", index=0)
    response = alice.post(path)
    assert response.status_code in (201, 202), response.text
    assert response.json()["namespace"] == "group/sub"
    model = alice.wait_running(path)
    assert server_file(hub, alice, model, "README.md").json()["content"] == "version 1\n"


def test_html_redirect_opens_the_notebook(hub, alice, repos):
    path = launch_path(repos, index=0, notebook="notebooks/analysis.ipynb")
    page = alice.get(path, headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "text/html" in page.headers["Content-Type"]
    assert "Launch" in page.text and "demo/hello" in page.text
    alice.post(path)
    model = alice.wait_running(path)
    response = alice.get(path, headers={"Accept": "text/html"})
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location == f"{model['url']}lab/tree/notebooks/analysis.ipynb"
    lab = alice.session.get(hub.absolute(location), timeout=30)
    assert lab.status_code == 200 and "JupyterLab" in lab.text


def test_profile_choice(hub, alice, repos):
    path = launch_path(repos, project="demo/other", index=0)
    response = alice.post(path, json={"profile": "large"})
    assert response.status_code in (201, 202)
    assert response.json()["profile"] == "large"


def test_server_limit(hub, alice, repos):
    paths = [launch_path(repos, "demo/hello", i) for i in range(3)]
    for path in paths:
        assert alice.post(path).status_code in (201, 202)
    response = alice.post(launch_path(repos, "demo/other", 0))
    assert response.status_code == 429
    assert response.json()["error"] == "too_many_servers"
    assert len(hub.hub_servers("alice")) == 3


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("demo/hello/abc123", "invalid_commit"),
        ("demo/hello/" + "g" * 40, "invalid_commit"),
        ("demo/hello/" + "a" * 39, "invalid_commit"),
        ("demo/-bad/" + "a" * 40, "invalid_path"),
        ("de%20mo/hello/" + "a" * 40, "invalid_path"),
        ("demo/hello/{sha}/..%2F..%2Fetc%2Fpasswd", "invalid_notebook"),
        ("demo/hello/{sha}/a/%2E%2E/b", "invalid_notebook"),
        ("demo/hello/{sha}/nb%00.ipynb", "invalid_notebook"),
        ("demo/hello/{sha}/nb%0A.ipynb", "invalid_notebook"),
        ("demo/hello/{sha}/a//b.ipynb", "invalid_notebook"),
        ("demo/hello/{sha}/" + "x" * 5000, "invalid_notebook"),
    ],
)
def test_bad_paths_are_400_and_spawn_nothing(hub, alice, repos, path, code):
    path = path.replace("{sha}", repos["shas"]["demo/hello"][0])
    for method in ("GET", "POST", "DELETE"):
        status, body = raw_request(hub, alice, method, path)
        if method == "GET" and code == "invalid_commit":  # a GET reads it as a ref (test_links)
            assert (status, body["error"]) == (404, "ref_not_found"), body
            continue
        assert status == 400, (method, body)
        assert body["error"] == code and body["message"]
    assert hub.hub_servers("alice") == {}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"profile": "huge"}, 400, "invalid_options"),
        ({"image": "evil.example.org/miner"}, 400, "invalid_options"),
        ({"lfs": True}, 400, "invalid_options"),
        ({"profile": 3}, 400, "invalid_options"),
        ([1, 2], 400, "invalid_json"),
        ("{not json", 400, "invalid_json"),
    ],
)
def test_bad_bodies_are_400_and_spawn_nothing(hub, alice, repos, body, status, code):
    kwargs = (
        {"data": body, "headers": {"Content-Type": "application/json"}}
        if isinstance(body, str)
        else {"json": body}
    )
    response = alice.post(launch_path(repos), **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert hub.hub_servers("alice") == {}


def test_wrong_content_type_and_huge_body(hub, alice, repos):
    response = alice.post(
        launch_path(repos), data="profile=small", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    response = alice.post(
        launch_path(repos), data="x" * 200_000, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert hub.hub_servers("alice") == {}


def test_unknown_commit_and_project(hub, alice, repos):
    missing = "0123456789abcdef0123456789abcdef01234567"
    response = alice.post(f"demo/hello/{missing}")
    assert response.status_code == 404
    assert response.json()["error"] == "commit_not_found"
    response = alice.post(f"demo/nothing/{missing}")
    assert response.status_code == 404
    assert response.json()["error"] == "project_not_found"
    assert hub.hub_servers("alice") == {}


def test_access_levels(hub, repos):
    carol, bob = Client(hub, "carol"), Client(hub, "bob")
    # the session's hub: other modules' tests may have left bob servers of theirs
    before = {"carol": hub.hub_servers("carol"), "bob": hub.hub_servers("bob")}
    response = carol.post(launch_path(repos))
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_access"
    assert "Developer" in response.json()["message"]
    # a project bob cannot see answers exactly like one that does not exist
    hidden = bob.post(launch_path(repos, "demo/private"))
    absent = bob.post(f"demo/nothing/{repos['shas']['demo/private'][0]}")
    assert hidden.status_code == absent.status_code == 404
    assert hidden.json() == absent.json() | {"message": hidden.json()["message"]}
    assert {"carol": hub.hub_servers("carol"), "bob": hub.hub_servers("bob")} == before


def test_no_identity(hub, repos):
    for method in ("GET", "POST", "DELETE"):
        response = requests.request(
            method, hub.prefix + launch_path(repos), timeout=10, allow_redirects=False
        )
        assert response.status_code == 401
        assert response.json()["error"] == "not_logged_in"
    bad = requests.get(hub.prefix, headers={"Authorization": "token nonsense"}, timeout=10)
    assert bad.status_code == 401
    page = requests.get(
        hub.prefix + launch_path(repos),
        headers={"Accept": "text/html"},
        timeout=10,
        allow_redirects=False,
    )
    assert page.status_code == 302
    assert "/hub/api/oauth2/authorize" in page.headers["Location"]


def test_users_cannot_start_servers_around_the_glue(hub, repos):
    """A user's own token cannot start servers on the hub directly (no `servers` scope)."""
    token = hub.token_for("dave")
    options = Target("demo", "private", repos["shas"]["demo/private"][0]).options()
    response = requests.post(
        f"{hub.url}/hub/api/users/dave/servers/sneaky",
        json=options,
        headers={"Authorization": f"token {token}"},
        timeout=10,
    )
    assert response.status_code == 403
    assert hub.hub_servers("dave") == {}


async def test_the_hubs_refusal_is_a_400_with_its_sentence(hub, alice, repos):
    """The hub re-checks every launch (Spawner.apply_user_options): a launch the hub's config
    refuses (a profile only a newer glue knows, say) reaches the caller as a 400 with the
    hub's sentence, through the glue's own hub client, not as a 502 "JupyterHub failed"."""
    target = Target("demo", "hello", repos["shas"]["demo/hello"][0])
    options = {**target.options(), "profile": "gigantic"}
    client = Hub(f"{hub.url}/hub/api", hub.admin_token)
    try:
        with pytest.raises(BadRequest) as info:
            await client.start("alice", target.server_name, options)
    finally:
        await client.close()
    assert (info.value.status, info.value.code) == (400, "launch_refused")
    assert "gigantic" in info.value.message and "profile" in info.value.message


def test_health(hub):
    response = requests.get(hub.prefix + "health", timeout=10)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_unknown_route_and_method(hub, alice):
    assert alice.get("nothing").status_code == 404
    response = alice.request("PUT", "user")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    # the GET-only endpoints are never mistaken for a launch URL by POST or DELETE
    for method in ("POST", "DELETE"):
        for path in ("user", "health", "metrics", "openapi.json", "oauth_callback",
                     "-/static/launch.js", "-/events/demo/hello/" + "a" * 40,
                     "demo/hello/" + "a" * 40 + "/-/logs"):
            response = alice.request(method, path)
            assert response.status_code == 405, (method, path, response.text)
            assert response.json()["error"] == "method_not_allowed"
            assert response.headers["Allow"].split(", ") == ["GET", "HEAD"], path


def test_glue_refuses_invalid_config(tmp_path: Path):
    bad = tmp_path / "notebooks.yaml"
    bad.write_text("images: {default: x}\nprofiles: []\nprovider: {kind: local}\n")
    result = subprocess.run(
        [sys.executable, "-m", "glue", "--config", str(bad)],
        capture_output=True,
        text=True,
        env={"JUPYTERHUB_API_TOKEN": "x", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode != 0
    assert str(bad) in result.stderr
    assert "at profiles" in result.stderr and "at provider" in result.stderr


def test_a_launch_that_fails_at_once_leaves_no_server(hub, alice, repos):
    """Options no launch can have, sent straight to the hub: its spawner refuses at once,
    the hub answers with the reason, and the failed server does not stay to use the limit."""
    hub.token_for("alice")
    bad = {"namespace": "demo", "project": "hello", "commit_sha": "not-a-sha"}
    for number in range(4):  # one more than alice's limit of 3
        response = hub.admin("POST", f"users/alice/servers/broken{number}", json=bad)
        assert response.status_code >= 400, response.text
    deadline = time.monotonic() + 15
    while hub.hub_servers("alice") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert hub.hub_servers("alice") == {}
    # her whole limit is left for real launches
    for index in range(3):
        response = alice.post(launch_path(repos, index=index))
        assert response.status_code in (201, 202), response.text
