"""The GitLab provider's refs, files and pipelines against the stand-in's APIs, and the
image decision built on them: links by ref, checks before a launch, image status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from glue.core import launch
from glue.core.errors import Conflict, UpstreamUnavailable
from glue.core.target import Ref, Target
from glue.providers.base import Caller
from glue.providers.gitlab import GitLabProvider
from testing.gitlab import GitLabStandIn, create_bare_repo
from testing.repos import git
from testing.worlds import REGISTRY, provider_config, token


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("refs") / "demo.git"
    shas = create_bare_repo(path, [
        {"README.md": "first\n", "notebooks/analysis.ipynb": "{}\n"},
        {"README.md": "second\n"},
    ])
    git(path, "tag", "v1", shas[0])
    return path, shas


@pytest.fixture
async def world(repo) -> AsyncIterator[dict]:
    standin = GitLabStandIn(registry_host=REGISTRY)
    await standin.start()
    dev, guest = Caller("dev", token()), Caller("guest", token())
    standin.add_user("dev", dev.git_token)
    standin.add_user("guest", guest.git_token)
    standin.add_user("outsider", token())
    standin.add_project("group/demo", repo=repo[0], members={"dev": 30, "guest": 10})
    provider = GitLabProvider(provider_config(standin.url))
    try:
        yield {"standin": standin, "provider": provider, "dev": dev, "guest": guest,
               "shas": repo[1]}
    finally:
        await provider.close()
        await standin.stop()


async def test_refs_resolve_like_gitlabs_commits_api(world):
    provider, dev, shas = world["provider"], world["dev"], world["shas"]
    assert await provider.resolve_ref(dev, Ref("group", "demo", "main")) == shas[1]
    assert await provider.resolve_ref(dev, Ref("group", "demo", "v1")) == shas[0]
    assert await provider.resolve_ref(dev, Ref("group", "demo", shas[0][:8])) == shas[0]
    assert await provider.resolve_ref(dev, Ref("group", "demo", "")) == shas[1]  # default
    assert await provider.resolve_ref(dev, Ref("group", "demo", "nope")) is None
    assert await provider.resolve_ref(dev, Ref("group", "nothing", "main")) is None
    outsider = Caller("outsider", world["standin"].add_token("outsider"))
    assert await provider.resolve_ref(outsider, Ref("group", "demo", "main")) is None


async def test_files_at_a_commit_through_the_files_api(world):
    provider, dev, shas, standin = world["provider"], world["dev"], world["shas"], world["standin"]
    at = Target("group", "demo", shas[0], "notebooks/analysis.ipynb")
    assert await provider.file_exists(dev, at) is True
    assert await provider.file_exists(dev, Target("group", "demo", shas[0], "nb.ipynb")) is False
    assert await provider.file_exists(dev, Target("group", "demo", shas[0], "notebooks")) is False
    assert await provider.file_exists(dev, Target("group", "demo", shas[0])) is True
    asked = [r for r in standin.requests if "/repository/files/" in r.path]
    assert asked and all(r.method == "HEAD" for r in asked)
    assert any("notebooks%2Fanalysis.ipynb?ref=" + shas[0] in r.path for r in asked)
    # the stand-in is as strict as GitLab: an unencoded path or no ref is no file
    async with aiohttp.ClientSession() as session:
        base = f"{standin.url}/api/v4/projects/group%2Fdemo/repository/files/"
        headers = {"Authorization": f"Bearer {dev.git_token}"}
        async with session.get(base + f"notebooks/analysis.ipynb?ref={shas[0]}",
                               headers=headers) as response:
            assert response.status == 404
        async with session.get(base + "README.md", headers=headers) as response:
            assert response.status == 400
        async with session.get(base + "README.md?ref=main", headers=headers) as response:
            assert response.status == 200
            assert response.headers["X-Gitlab-Commit-Id"] == shas[1]


async def test_image_status_from_registry_and_pipelines(world):
    provider, dev, guest = world["provider"], world["dev"], world["guest"]
    standin, shas = world["standin"], world["shas"]
    target = Target("group", "demo", shas[0])

    async def status() -> str:
        candidate = await provider.commit_image(dev, target)
        return launch.image_status(candidate, await provider.pipeline_status(dev, target))

    assert await status() == "none"
    pipeline = standin.add_pipeline("group/demo", shas[0], "pending")
    standin.add_pipeline("group/demo", shas[1], "failed")  # another commit's: not ours
    assert await status() == "building"
    pipeline.status = "running"
    assert await status() == "building"
    pipeline.status = "failed"
    assert await status() == "failed"
    standin.add_pipeline("group/demo", shas[0], "running")  # a retry: the newest counts
    assert await status() == "building"
    standin.add_registry_tag("group/demo", shas[0][:7])
    assert await status() == "present"
    # a guest of a private project may not read pipelines: no pipeline to report
    assert await provider.pipeline_status(guest, target) is None
    # GitLab down while checking: the provider fails closed
    standin.fail_status = 503
    with pytest.raises(Exception) as raised:
        await provider.pipeline_status(dev, target)
    assert getattr(raised.value, "status", None) == 502
    await standin.stop()
    with pytest.raises(UpstreamUnavailable):
        await provider.pipeline_status(dev, target)
    with pytest.raises(UpstreamUnavailable):
        await provider.file_exists(dev, Target("group", "demo", shas[0], "x.ipynb"))


def test_the_image_decision_for_each_status():
    config = provider_config("http://gitlab.invalid")
    target = Target("group", "demo", "a" * 40)
    image = f"{REGISTRY}/group/demo:aaaaaaa"
    chosen = launch.decide_image(config, target, image, "success", {})
    assert (chosen.ref, chosen.fallback, chosen.status) == (image, False, "present")
    chosen = launch.decide_image(config, target, None, None, {})
    assert (chosen.fallback, chosen.status) == (True, "none")
    for pipeline in ("pending", "running"):
        with pytest.raises(Conflict) as refused:
            launch.decide_image(config, target, None, pipeline, {})
        assert refused.value.code == "image_building"
    with pytest.raises(Conflict) as refused:
        launch.decide_image(config, target, None, "failed", {})
    assert refused.value.code == "image_build_failed"
    # the caller's explicit choice: the default image, whatever the pipeline does
    for pipeline in ("running", "failed"):
        chosen = launch.decide_image(config, target, None, pipeline, {"image": "default"})
        assert chosen.ref == config["images"]["default"] and chosen.fallback
    # `whenBuilding: default` launches a building commit at once, never a failed one
    eager = provider_config("http://gitlab.invalid", images={"whenBuilding": "default"})
    chosen = launch.decide_image(eager, target, None, "running", {})
    assert (chosen.fallback, chosen.status) == (True, "building")
    with pytest.raises(Conflict):
        launch.decide_image(eager, target, None, "failed", {})
