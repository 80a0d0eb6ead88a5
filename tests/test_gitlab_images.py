"""Image status with the real hub and the GitLab stand-in: present, building, failed, none.

A commit whose pipeline is still running waits (or launches with the default image only
when asked), a failed build never falls back silently, and GitLab failing while the
image is checked launches nothing. The browser test watches a `building` page launch by
itself once the stand-in's pipeline succeeds and the image is pushed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from playwright.sync_api import expect

from e2e import standin as e2e_standin
from testing.checks import assert_hidden, wait_until
from testing.chromium import (
    LAB_TIMEOUT_MS,
    Visitor,
    assert_clean,
    assert_no_horizontal_scroll,
    shoot,
)
from testing.gitlab import GitLabStandIn, StandInThread, load_fixture
from testing.hub import Client
from testing.marks import starts_hub
from testing.repos import git, make_repo
from testing.worlds import DEFAULT_IMAGE, REGISTRY, SMALL, GitLabWorld, gitlab_token


@pytest.fixture(scope="module")
@starts_hub
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitLabWorld]:
    """GitLab with renku/built (six commits) and renku/broken, whose one commit cannot be
    cloned; the glue polls builds every half second."""
    root = tmp_path_factory.mktemp("image-repos")
    shas = make_repo(root, "renku/built", versions=6)
    broken = make_repo(root, "renku/broken", versions=1)[0]
    bare = root / "renku/broken.git"
    blob = git(bare, "rev-parse", f"{broken}:README.md")
    (bare / "objects" / blob[:2] / blob[2:]).unlink()  # every check passes, the clone fails
    standin = GitLabStandIn(registry_host=REGISTRY)
    for user in ("dev", "web"):
        standin.add_user(user)
    standin.add_project("renku/built", repo=root / "renku/built.git",
                        members={"dev": 30, "web": 30})
    standin.add_project("renku/broken", repo=bare, members={"dev": 30})
    config = {
        "images": {
            "default": DEFAULT_IMAGE,
            "allowedRegistries": [REGISTRY],
            "buildPollSeconds": 0.5,
        },
        "profiles": [SMALL],
        "provider": {"timeoutSeconds": 2},
        "launch": {"startTimeoutSeconds": 60},
    }
    with GitLabWorld.running(tmp_path_factory.mktemp("image-hub"), standin, config,
                             root=root, shas=shas) as world:
        yield world


@pytest.fixture(scope="module")
def broken(world: GitLabWorld) -> str:
    """renku/broken's one commit, whose README's blob is missing."""
    return git(world.bare("renku/broken"), "rev-parse", "main")


@pytest.fixture
def dev(world: GitLabWorld) -> Iterator[Client]:
    client = world.login("dev")
    world.hub.remove_all_servers("dev")
    yield client
    world.hub.remove_all_servers("dev")


def test_present_and_none(world, dev):
    standin, shas = world.gitlab, world.shas
    standin.add_registry_tag("renku/built", shas[0][:7])
    standin.add_pipeline("renku/built", shas[0], "success")
    model = dev.post(f"renku/built/{shas[0]}").json()
    assert (model["image"], model["image_status"]) == (f"{REGISTRY}/renku/built:{shas[0][:7]}",
                                                       "present")
    assert model["image_fallback"] is False
    model = dev.post(f"renku/built/{shas[1]}").json()  # no pipeline, no image
    assert (model["image"], model["image_status"], model["image_fallback"]) == (
        DEFAULT_IMAGE, "none", True
    )
    assert dev.get(f"renku/built/{shas[1]}").json()["image_status"] == "none"


def test_building_waits_unless_the_default_image_is_asked_for(world, dev):
    standin, shas, hub = world.gitlab, world.shas, world.hub
    standin.add_pipeline("renku/built", shas[2], "running")
    response = dev.post(f"renku/built/{shas[2]}")
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "image_building"
    assert "default image" in response.json()["message"]
    assert hub.hub_servers("dev") == {}
    page = dev.get(f"renku/built/{shas[2]}", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "being built by GitLab CI" in page.text
    assert 'data-events="/services/notebooks/-/events/renku/built/' in page.text
    response = dev.post(f"renku/built/{shas[2]}", json={"image": "default"})
    assert response.status_code in (201, 202), response.text
    model = response.json()
    assert (model["image"], model["image_status"]) == (DEFAULT_IMAGE, "building")


def test_a_failed_build_never_falls_back_silently(world, dev):
    standin, shas, hub = world.gitlab, world.shas, world.hub
    standin.add_pipeline("renku/built", shas[3], "failed")
    response = dev.post(f"renku/built/{shas[3]}")
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "image_build_failed"
    assert hub.hub_servers("dev") == {}
    page = dev.get(f"renku/built/{shas[3]}", headers={"Accept": "text/html"})
    assert "The image build failed" in page.text
    assert 'id="launch-button"' not in page.text and 'value="default"' in page.text
    response = dev.post(f"renku/built/{shas[3]}", json={"image": "default"})
    assert response.status_code in (201, 202), response.text
    assert (response.json()["image"], response.json()["image_status"]) == (DEFAULT_IMAGE, "failed")


def test_gitlab_failing_while_checking_the_image_launches_nothing(world, dev):
    standin, shas, hub = world.gitlab, world.shas, world.hub
    standin.ci_fail_status = 503  # access and commit answer; the pipelines API does not
    try:
        response = dev.post(f"renku/built/{shas[4]}")
    finally:
        standin.ci_fail_status = None
    assert response.status_code == 502, response.text
    assert response.json()["error"] == "gitlab_error"
    assert hub.hub_servers("dev") == {}
    assert any("/pipelines?sha=" + shas[4] in r.path for r in standin.requests)


def test_a_failed_clone_with_a_token_never_echoes_it(world, dev, broken):
    hub, standin, sha = world.hub, world.gitlab, broken
    path = f"renku/broken/{sha}"
    response = dev.post(path)
    assert response.status_code in (201, 202, 502), response.text
    model = wait_until(
        lambda: (m := dev.get(path).json()).get("status") == "failed" and m, 60,
        "the clone to fail",
    )
    assert model["failure"]["reason"] == "clone_failed", model["failure"]
    token = gitlab_token(hub, "dev")
    assert standin.token_sent_in_header(token) > 0  # the clone did use it
    logs = dev.get(f"{path}/-/logs", params={"lines": 1000})
    assert logs.status_code == 200 and logs.json()["lines"]
    page = dev.get(path, headers={"Accept": "text/html"})
    for text, where in ((logs.text, "the logs endpoint"), (page.text, "the failure page"),
                        (str(model), "the server model"), (response.text, "the launch answer")):
        assert_hidden(token, text, where)
    for log in Path(str(hub.workspaces) + ".logs").rglob("*.log"):
        assert_hidden(token, log.read_bytes(), log)
    assert_hidden(token, hub.log(), "the hub's log")


@pytest.mark.browser
def test_a_building_page_waits_and_launches_once_the_pipeline_succeeds(world, browser):
    hub, standin, shas = world.hub, world.gitlab, world.shas
    sha = shas[5]
    pipeline = standin.add_pipeline("renku/built", sha, "pending")
    visitor = Visitor(browser, hub, "web")
    try:
        standin.oauth_user = "web"
        page = visitor.page
        page.goto(f"{hub.url}/hub/oauth_login")  # GitLab approves at once for `web`
        path = f"renku/built/{sha}/notebooks/analysis.ipynb"
        page.goto(visitor.glue_url(path))
        expect(page.locator("#image-status")).to_have_text("being built by GitLab CI")
        expect(page.locator("#image-wait")).to_have_attribute("data-live", "true")
        expect(page.locator("#image-message")).to_contain_text("pipeline pending")
        pipeline.status = "running"
        expect(page.locator("#image-message")).to_contain_text("pipeline running")
        expect(page.get_by_role("button", name="Launch now with the default image")).to_be_visible()
        assert_no_horizontal_scroll(page)
        shoot(page, "image-building")
        time.sleep(1)
        assert hub.hub_servers("web") == {}  # still waiting
        standin.add_registry_tag("renku/built", sha[:7])
        pipeline.status = "success"
        page.wait_for_url(lambda url: "/lab/tree/notebooks/analysis.ipynb" in url,
                          timeout=LAB_TIMEOUT_MS)
        (server,) = hub.hub_servers("web").values()
        assert server["user_options"]["image"] == f"{REGISTRY}/renku/built:{sha[:7]}"
        assert server["user_options"]["image_status"] == "present"
        assert_clean(visitor)
    finally:
        visitor.close()


def test_the_e2e_standin_lists_an_image_for_each_private_commit(tmp_path: Path) -> None:
    """e2e/standin.py: group/private-demo's registry lists an image for each of its commits
    (the kind e2e pushes the older one and expects the newer one's pull to fail); group/demo's
    lists none, so its launches keep the default image. Read as the glue reads it."""
    standin = GitLabStandIn(registry_host=REGISTRY)
    load_fixture(standin, e2e_standin.prepare(tmp_path), tmp_path)
    headers = {"PRIVATE-TOKEN": "alice-e2e-token"}  # e2e/fixture.yaml
    with StandInThread(standin):
        listed = {}
        for project in ("group/private-demo", "group/demo"):
            api = f"{standin.url}/api/v4/projects/{quote(project, safe='')}/registry/repositories"
            repositories = requests.get(api, headers=headers, timeout=10).json()
            shas = git(tmp_path / f"{project.split('/')[1]}.git", "rev-list", "HEAD").split()
            assert len(shas) == 2
            listed[project] = {
                sha: requests.get(
                    f"{api}/{repository['id']}/tags/{sha[:7]}", headers=headers, timeout=10
                ).status_code
                for repository in repositories
                for sha in shas
            }
    assert sorted(listed["group/private-demo"].values()) == [200, 200]
    assert listed["group/demo"] == {}
    # each project's commits are its own (a launch of one never finds the other's pod)
    assert not set(listed["group/private-demo"]) & set(
        git(tmp_path / "demo.git", "rev-list", "HEAD").split()
    )
