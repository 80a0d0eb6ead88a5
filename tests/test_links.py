"""Links by ref and the checks before a launch, against the session hub (local provider).

A link may name a branch, a tag or a short sha; the glue resolves it through the
provider (`git rev-parse` here) and redirects to the pinned 40-hex launch URL.
Everything a launch would refuse (unknown commit, a notebook that is not there)
is refused before anything is spawned, and the launch page says it at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import unquote

import pytest
import requests

from testing.hub import Client, RunningHub, raw_request
from testing.repos import git


@pytest.fixture
def dora(hub: RunningHub) -> Iterator[Client]:
    hub.remove_all_servers("dora")
    yield Client(hub, "dora")
    hub.remove_all_servers("dora")


def pinned(hub: RunningHub, response: requests.Response) -> str:
    """The path after the prefix that a redirect names, decoded."""
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith("/services/notebooks/"), location
    return unquote(location.removeprefix("/services/notebooks/"))


# --- links by ref -------------------------------------------------------------------------


def test_branch_tag_and_short_sha_redirect_to_the_pinned_url(hub, repos, dora):
    shas = repos["shas"]["demo/hello"]
    bare = repos["root"] / "demo/hello.git"
    git(bare, "tag", "-f", "v1", shas[0])

    response = dora.get("demo/hello/main/notebooks/analysis.ipynb?from=readme")
    assert pinned(hub, response) == f"demo/hello/{shas[-1]}/notebooks/analysis.ipynb?from=readme"
    assert response.headers["Cache-Control"] == "no-store"  # the branch moves
    assert response.json() == {"commit_sha": shas[-1], "url": response.headers["Location"]}
    assert pinned(hub, dora.get("demo/hello/v1")) == f"demo/hello/{shas[0]}"
    assert pinned(hub, dora.get(f"demo/hello/{shas[1][:8]}/x/y.ipynb")) == (
        f"demo/hello/{shas[1]}/x/y.ipynb"
    )
    deep = repos["shas"]["group/sub/deep"]
    assert pinned(hub, dora.get("group/sub/deep/main/notebooks/analysis.ipynb")) == (
        f"group/sub/deep/{deep[-1]}/notebooks/analysis.ipynb"
    )
    # following the redirect lands on the pinned URL, which a 40-hex segment always is
    followed = dora.get("demo/hello/main", allow_redirects=True)
    assert followed.status_code == 404 and followed.json()["error"] == "server_not_found"
    assert followed.url.endswith(f"demo/hello/{shas[-1]}")
    assert hub.hub_servers("dora") == {}


def test_unknown_refs_and_hidden_projects_are_404s_naming_the_ref(hub, repos, dora):
    response = dora.get("demo/hello/no-such-branch/notebooks/analysis.ipynb")
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "ref_not_found"
    assert "'no-such-branch'" in body["message"] and "demo/hello" in body["message"]
    # dora cannot see demo/private: it answers like a project that does not exist
    hidden = dora.get("demo/private/main")
    absent = dora.get("demo/nothing/main")
    assert hidden.status_code == absent.status_code == 404
    assert hidden.json() == absent.json()
    assert "demo/private" not in hidden.text
    # a ref git would refuse never reaches git
    status, body = raw_request(hub, dora, "GET", "demo/hello/--output=x")
    assert status == 400 and body["error"] == "invalid_path"


def test_post_and_delete_need_the_sha(hub, repos, dora):
    for method in ("POST", "DELETE"):
        response = dora.request(method, "demo/hello/main/notebooks/analysis.ipynb")
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_commit"
        assert "resolve" in response.json()["message"]
    assert hub.hub_servers("dora") == {}


def test_a_path_whose_dotdot_took_the_sha_gets_the_notebook_sentence(hub, repos, dora):
    sha = repos["shas"]["demo/hello"][0]
    # requests (like browsers and the proxy) resolves the `..` before sending: the glue
    # receives demo/hello/evil.ipynb, whose "ref" is a file name
    response = dora.get(f"demo/hello/{sha}/../evil.ipynb")
    assert response.request.path_url.endswith("/demo/hello/evil.ipynb")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_notebook"
    assert "notebook path" in response.json()["message"]
    assert "sha" not in response.json()["message"]
    for method in ("POST", "DELETE"):
        status, body = raw_request(hub, dora, method, "demo/hello/evil.ipynb")
        assert status == 400 and body["error"] == "invalid_notebook", body
    # deeper: the ref is a directory name; the 404 names it and says what `..` does
    response = dora.get(f"demo/hello/{sha}/../notebooks/evil.ipynb")
    assert response.status_code == 404
    assert "'notebooks'" in response.json()["message"]
    assert "'..'" in response.json()["message"]
    assert hub.hub_servers("dora") == {}


# --- checks before launching ------------------------------------------------------------


def test_a_missing_notebook_is_a_404_naming_it_before_anything_spawns(hub, repos, dora):
    sha = repos["shas"]["demo/hello"][0]
    response = dora.post(f"demo/hello/{sha}/notebooks/missing.ipynb")
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "notebook_not_found"
    assert "notebooks/missing.ipynb" in response.json()["message"]
    # a directory is not a notebook either
    assert dora.post(f"demo/hello/{sha}/notebooks").status_code == 404
    assert hub.hub_servers("dora") == {}
    # the page says it at once, before any launch form
    page = dora.get(f"demo/hello/{sha}/notebooks/missing.ipynb", headers={"Accept": "text/html"})
    assert page.status_code == 404
    assert "notebooks/missing.ipynb" in page.text and 'id="launch-form"' not in page.text


def test_the_page_for_an_unknown_commit_or_project_shows_the_error_at_once(hub, repos, dora):
    missing = "0123456789abcdef0123456789abcdef01234567"
    page = dora.get(f"demo/hello/{missing}", headers={"Accept": "text/html"})
    assert page.status_code == 404
    assert f"Commit {missing} was not found in demo/hello." in page.text
    assert 'id="launch-form"' not in page.text
    page = dora.get(f"demo/nothing/{missing}", headers={"Accept": "text/html"})
    assert page.status_code == 404 and 'id="launch-form"' not in page.text
    good = dora.get(f"demo/hello/{repos['shas']['demo/hello'][0]}", headers={"Accept": "text/html"})
    assert good.status_code == 200 and 'id="launch-form"' in good.text
    assert 'id="image-status"' in good.text  # the local provider: no image, the default runs
    assert "the default image runs" in good.text


def test_a_wrong_token_is_told_apart_from_no_token(hub, repos):
    url = hub.prefix + f"demo/hello/{repos['shas']['demo/hello'][0]}"
    none = requests.get(url, timeout=10)
    wrong = requests.get(url, headers={"Authorization": "token not-a-real-token"}, timeout=10)
    assert none.status_code == wrong.status_code == 401
    assert none.json()["error"] == "not_logged_in"
    assert wrong.json()["error"] == "invalid_token"
    assert none.json()["message"] != wrong.json()["message"]
    assert "not-a-real-token" not in wrong.text
