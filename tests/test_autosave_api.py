"""The caller's autosaves of a project: `GET <ns>/<project>/-/autosaves` lists them and
`DELETE <ns>/<project>/-/autosaves/<sha>` deletes one, with the real hub, real servers and
real git (the local provider's bare repositories), and with the GitLab stand-in.

Only the caller's own branches (`<autosave.branchPrefix>/<user>/<sha>`) are listed or deleted;
a project the caller cannot see is 404 like everywhere; every answer keeps the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from glue.core.errors import Forbidden
from glue.core.target import Ref
from glue.providers.base import Caller
from glue.providers.gitlab import GitLabProvider
from testing.checks import assert_hidden, wait_until
from testing.contract import assert_conforms
from testing.hub import Client, RunningHub
from testing.kernels import run_in_kernel
from testing.logins import Browser
from testing.marks import starts_hub
from testing.repos import git
from testing.worlds import GitLabWorld, flow_world, gitlab_token, provider_config

PREFIX = "notebooks/autosave"
FAKE = "f" * 40  # a sha-shaped name whose autosave nobody has


def autosaves(client: Client, project: str) -> list[dict[str, Any]]:
    response = assert_conforms(client.get(f"{project}/-/autosaves"))
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()["autosaves"]


def error(response: Any) -> tuple[int, str]:
    assert_conforms(response)
    return response.status_code, response.json()["error"]


def heads(bare: Path) -> dict[str, str]:
    out = git(bare, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads")
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def commit_date(bare: Path, ref: str) -> str:
    when = int(git(bare, "log", "-1", "--format=%ct", ref))
    return datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")


def stop(client: Client, path: str) -> None:
    response = client.delete(path)
    assert response.status_code in (202, 204), response.text
    wait_until(lambda: client.get(path).status_code == 404, 120, f"{path} removed")


# --- the local provider, with servers that autosave -------------------------------------------


def test_list_and_delete_the_callers_autosaves_in_the_bare_repository(hub: RunningHub, repos):
    user, project = "saver", "demo/hello"
    sha, other_sha = repos["shas"][project][0], repos["shas"][project][1]
    bare = Path(repos["root"]) / f"{project}.git"
    client = Client(hub, user)
    hub.remove_all_servers(user)
    mine = f"{PREFIX}/{user}/{sha}"
    try:
        assert autosaves(client, project) == []
        # a real session's unsaved work, autosaved by its stop
        path = f"{project}/{sha}"
        assert client.post(path).status_code in (201, 202)
        server = client.wait_running(path, timeout=250)
        run_in_kernel(hub, client, server, "open('unsaved.txt', 'w').write('mine\\n')")
        stop(client, path)
        assert git(bare, "show", f"{mine}:unsaved.txt") == "mine"
        # beside it: another user's autosaves, a name below ours that is not a sha, a user
        # whose name starts like ours
        for branch in (f"{PREFIX}/other/{sha}", f"{PREFIX}/other/{other_sha}",
                       f"{PREFIX}/{user}/not-a-sha", f"{PREFIX}/{user}x/{other_sha}"):
            git(bare, "update-ref", f"refs/heads/{branch}", sha)

        listed = autosaves(client, project)
        assert listed == [{
            "commit_sha": sha,
            "branch": mine,
            "autosave_commit": heads(bare)[mine],
            "date": commit_date(bare, mine),
            "running": False,
        }]
        # relaunched (restored from it): a server runs for it now
        assert client.post(path).status_code in (201, 202)
        server = client.wait_running(path, timeout=250)
        assert server["restored_from"] == mine
        assert [a["running"] for a in autosaves(client, project)] == [True]
        # the other user sees theirs only
        assert {a["commit_sha"] for a in autosaves(Client(hub, "other"), project)} == {
            sha, other_sha
        }

        # another user's autosave cannot be deleted: the caller has none of that commit
        assert error(client.delete(f"{project}/-/autosaves/{other_sha}")) == (
            404, "autosave_not_found"
        )
        assert f"{PREFIX}/other/{other_sha}" in heads(bare)
        # bad shas are refused before anything is asked
        for bad in ("abc", sha[:39] + "g", "main"):
            assert error(client.delete(f"{project}/-/autosaves/{bad}")) == (400, "invalid_commit")
        # deleting one's own: gone from the repository, the others stay
        response = assert_conforms(client.delete(f"{project}/-/autosaves/{sha.upper()}"))
        assert response.status_code == 204 and not response.content
        branches = heads(bare)
        assert mine not in branches and f"{PREFIX}/other/{sha}" in branches
        assert autosaves(client, project) == []
        assert error(client.delete(f"{project}/-/autosaves/{sha}")) == (404, "autosave_not_found")
        stop(client, path)  # its stop autosaves again: the running server lost nothing
        assert git(bare, "show", f"{mine}:unsaved.txt") == "mine"
    finally:
        hub.remove_all_servers(user)
        for branch in heads(bare):
            if branch.startswith(PREFIX + "/"):
                git(bare, "update-ref", "-d", f"refs/heads/{branch}")


def test_a_project_the_caller_cannot_see_is_404_and_nothing_is_deleted(hub: RunningHub, repos):
    sha = repos["shas"]["demo/private"][0]
    bare = Path(repos["root"]) / "demo/private.git"
    branch = f"{PREFIX}/bob/{sha}"
    git(bare, "update-ref", f"refs/heads/{branch}", sha)
    try:
        bob, alice = Client(hub, "bob"), Client(hub, "alice")
        for project in ("demo/private", "demo/absent", "no/such/group/x"):
            assert error(bob.get(f"{project}/-/autosaves")) == (404, "project_not_found")
            assert error(bob.delete(f"{project}/-/autosaves/{sha}")) == (404, "project_not_found")
        assert branch in heads(bare)
        assert autosaves(alice, "demo/private") == []  # alice sees the project, not bob's
        # carol is only a reporter on demo/hello: below the access a launch needs
        assert error(Client(hub, "carol").get("demo/hello/-/autosaves")) == (
            403, "insufficient_access"
        )
        # invalid paths are 400, routes that are not there answer 405 with Allow
        assert error(bob.get("demo/hel%20lo/-/autosaves")) == (400, "invalid_path")
        for method, path in (("POST", "demo/hello/-/autosaves"),
                             ("GET", f"demo/hello/-/autosaves/{sha}")):
            response = bob.request(method, path)
            assert response.status_code == 405 and "Allow" in response.headers, response.text
    finally:
        git(bare, "update-ref", "-d", f"refs/heads/{branch}")


def test_deleting_with_the_session_cookie_needs_the_page_token(hub: RunningHub, repos):
    sha = repos["shas"]["demo/other"][0]
    bare = Path(repos["root"]) / "demo/other.git"
    branch = f"{PREFIX}/brenda/{sha}"
    git(bare, "update-ref", f"refs/heads/{branch}", sha)
    browser = Browser(hub, "brenda")
    browser.log_in_to_hub()
    try:
        page = browser.open(f"demo/other/{sha}")
        assert page.status_code == 200
        path = f"demo/other/-/autosaves/{sha}"
        for headers in ({}, {"X-XSRF-Token": "0" * 64}):
            response = browser.request("DELETE", path, headers=headers)
            assert response.status_code == 403 and response.json()["error"] == "xsrf"
        assert branch in heads(bare)
        response = browser.request("DELETE", path, headers={"X-XSRF-Token": browser.xsrf(page)})
        assert response.status_code == 204
        assert branch not in heads(bare)
    finally:
        if branch in heads(bare):
            git(bare, "update-ref", "-d", f"refs/heads/{branch}")


# --- GitLab: the branches API and a push that deletes ----------------------------------------


@pytest.fixture(scope="module")
@starts_hub
def gitlab_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabWorld]:
    with flow_world(tmp_path_factory, {}) as world:
        yield world


def test_gitlab_lists_page_by_page_and_deletes_with_the_users_rights(gitlab_world):
    standin, shas, hub = gitlab_world.gitlab, gitlab_world.shas, gitlab_world.hub
    bare = standin.projects["renku/demo"].repo
    dev, outsider = gitlab_world.login("dev"), gitlab_world.login("outsider")
    gitlab_world.login("reporter")
    mine, theirs = f"{PREFIX}/dev/{shas[0]}", f"{PREFIX}/reporter/{shas[1]}"
    # more than one page of GitLab's answer (100 a page): 120 of dev's, others' beside them
    names = [f"{i:040x}" for i in range(1, 121)]
    refs = [f"{PREFIX}/dev/{n}" for n in names] + [mine, theirs, f"{PREFIX}/dev/{shas[1]}-old"]
    subprocess.run(
        ["git", "-C", str(bare), "update-ref", "--stdin"], check=True, text=True,
        input="".join(f"create refs/heads/{r} {shas[0]}\n" for r in refs),
    )
    try:
        listed = autosaves(dev, "renku/demo")
        assert sorted(a["commit_sha"] for a in listed) == sorted([*names, shas[0]])
        assert {a["branch"] for a in listed} == {f"{PREFIX}/dev/{n}" for n in [*names, shas[0]]}
        assert all(a["autosave_commit"] == shas[0] and not a["running"] for a in listed)
        assert all(a["date"] == commit_date(bare, shas[0]) for a in listed)
        # GitLab's first page with `search` holds every match (while it says page 2
        # follows, which would repeat them): one call, each branch once
        paged = [r.path for r in standin.requests if "/repository/branches" in r.path]
        assert len(paged) == 1 and "page=1" in paged[0], paged
        assert len(listed) == len({a["branch"] for a in listed}) == 121

        # a hidden project, another user's autosave, a bad sha
        assert error(outsider.get("renku/demo/-/autosaves")) == (404, "project_not_found")
        assert error(outsider.delete(f"renku/demo/-/autosaves/{shas[0]}")) == (
            404, "project_not_found"
        )
        assert error(dev.delete(f"renku/demo/-/autosaves/{shas[1]}")) == (
            404, "autosave_not_found"
        )
        assert error(dev.delete("renku/demo/-/autosaves/xyz")) == (400, "invalid_commit")
        # dev deletes their own: gone in GitLab's repository, the rest stays
        response = assert_conforms(dev.delete(f"renku/demo/-/autosaves/{shas[0]}"))
        assert response.status_code == 204, response.text
        branches = heads(bare)
        assert mine not in branches and theirs in branches
        assert f"{PREFIX}/dev/{names[0]}" in branches
        assert error(dev.delete(f"renku/demo/-/autosaves/{shas[0]}")) == (
            404, "autosave_not_found"
        )
        # a protected branch: GitLab refuses the push that deletes it, and so does the glue
        standin.protect_branch("renku/demo", f"{PREFIX}/dev/{names[0]}")
        assert error(dev.delete(f"renku/demo/-/autosaves/{names[0]}")) == (
            403, "branch_not_deleted"
        )
        assert f"{PREFIX}/dev/{names[0]}" in heads(bare)
        # the token went in headers and the git credential helper only
        assert standin.token_leaks(gitlab_token(hub, "dev")) == []

        # GitLab itself refuses a Reporter's push that deletes (the glue refuses them first)
        state = hub.admin("GET", "users/reporter").json()["auth_state"]
        provider = GitLabProvider(provider_config(standin.url))
        ref = Ref("renku", "demo", "")
        with pytest.raises(Forbidden) as refused:
            asyncio.run(provider.delete_branch(Caller.from_auth_state("reporter", state), ref,
                                               theirs))
        assert refused.value.code == "branch_not_deleted"
        assert theirs in heads(bare)
        assert_hidden(state["access_token"], str(refused.value), "the refusal")
    finally:
        for branch in heads(bare):
            if branch.startswith(PREFIX + "/"):
                git(bare, "update-ref", "-d", f"refs/heads/{branch}")
