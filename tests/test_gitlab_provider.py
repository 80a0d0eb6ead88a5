"""The GitLab provider against the GitLab stand-in: access, commits, images, outages, clones.

The stand-in serves on 127.0.0.1 with real bare repositories, so access
decisions, error mapping and the clone step run against GitLab's documented
answers rather than mocks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest

from glue.core.errors import (
    Forbidden,
    GlueError,
    NotFound,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from glue.core.launch import Image, choose_image
from glue.core.target import Ref, Target
from glue.providers.access import Access
from glue.providers.base import Caller
from glue.providers.gitlab import GitLabProvider
from glue.providers.select import make_provider
from testing.checks import assert_hidden
from testing.gitlab import GitLabStandIn, create_bare_repo
from testing.net import free_port
from testing.worlds import provider_config, token

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "registry.gitlab.test"
DEFAULT_IMAGE = f"{REGISTRY}/renku/default:1"
# Git's own test value for a sha that exists nowhere
MISSING_SHA = "deadbeef" * 5






@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A bare repository with two commits: (path, [older sha, newer sha])."""
    path = tmp_path_factory.mktemp("repos") / "demo.git"
    shas = create_bare_repo(path, [
        {"README.md": "first\n", "analysis.ipynb": "{}\n"},
        {"README.md": "second\n"},
    ])
    return path, shas


@pytest.fixture
async def gitlab() -> AsyncIterator[GitLabStandIn]:
    standin = GitLabStandIn(registry_host=REGISTRY)
    await standin.start()
    yield standin
    await standin.stop()


class World:
    """A stand-in plus helpers to ask the provider as one of its users."""

    def __init__(self, standin: GitLabStandIn, repo: tuple[Path, list[str]]):
        self.standin = standin
        self.repo_path, self.shas = repo
        self.tokens: dict[str, str] = {}

    def user(self, name: str, scope: str = "api") -> Caller:
        """A GitLab user and their login, as the hub's auth_state gives it to the provider."""
        if name not in self.tokens:
            self.tokens[name] = token()
            self.standin.add_user(name)
            self.standin.add_token(name, self.tokens[name], scope=scope)
        state = {
            "access_token": self.tokens[name],
            "gitlab_user": {"id": self.standin.users[name].id, "username": name},
        }
        return Caller.from_auth_state(name, state)

    def project(self, full_path: str, **kwargs: Any) -> Target:
        self.standin.add_project(full_path, repo=self.repo_path, **kwargs)
        namespace, _, project = full_path.rpartition("/")
        return Target(namespace, project, self.shas[0])

    def provider(self, **kwargs: Any) -> GitLabProvider:
        return GitLabProvider(provider_config(self.standin.url, **kwargs))

    async def check(self, caller: Caller, target: Target, *, launch: bool = False,
                    **kwargs: Any) -> int | None:
        provider = self.provider(**kwargs)
        try:
            access = Access(provider, provider.config["provider"]["minAccessLevel"])
            if launch:
                await access.check_launch(caller, target)
                return None
            return await access.check(caller, target)
        finally:
            await provider.close()

    async def level(self, caller: Caller, target: Target) -> int | None:
        provider = self.provider()
        try:
            return await provider.access_level(caller, target)
        finally:
            await provider.close()

    async def image(self, caller: Caller, target: Target, **kwargs: Any) -> Image:
        images = kwargs.pop("images", None)
        config = provider_config(self.standin.url, images=images, **kwargs)
        provider = GitLabProvider(config)
        try:
            return choose_image(config, await provider.commit_image(caller, target))
        finally:
            await provider.close()


@pytest.fixture
def world(gitlab: GitLabStandIn, repo: tuple[Path, list[str]]) -> World:
    return World(gitlab, repo)


# ---- access ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [(None, NotFound), (10, Forbidden), (20, Forbidden), (30, 30), (40, 40), (50, 50)],
)
async def test_direct_membership_of_a_private_project(
    world: World, level: int | None, expected: type[GlueError] | int
) -> None:
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": level} if level else {})
    if isinstance(expected, int):
        assert await world.check(alice, target) == expected
        return
    with pytest.raises(expected) as info:
        await world.check(alice, target)
    code = "project_not_found" if expected is NotFound else "insufficient_access"
    assert info.value.code == code


@pytest.mark.parametrize(
    ("visibility", "level", "error"),
    [("private", None, NotFound), ("internal", 0, Forbidden), ("public", 0, Forbidden)],
)
async def test_visibility_for_a_non_member(
    world: World, visibility: str, level: int | None, error: type[GlueError]
) -> None:
    bob = world.user("bob")
    target = world.project("renku/shown", visibility=visibility)
    assert await world.level(bob, target) == level
    with pytest.raises(error):
        await world.check(bob, target)


@pytest.mark.parametrize("visibility", ["internal", "public"])
async def test_member_of_an_open_project_keeps_their_level(world: World, visibility: str) -> None:
    carol = world.user("carol")
    target = world.project("renku/open", visibility=visibility, members={"carol": 40})
    assert await world.check(carol, target) == 40


async def test_access_is_inherited_from_groups_and_parent_groups(world: World) -> None:
    world.standin.add_group("top", {"alice": 40})
    world.standin.add_group("top/sub", {"bob": 30, "dave": 20})
    world.standin.add_group("other", {"erin": 50})
    world.standin.add_group("team", {"frank": 50})
    target = world.project(
        "top/sub/deep/proj", members={"bob": 20, "carol": 50, "dave": 10},
        shared_with={"team": 30},
    )
    users = {name: world.user(name) for name in ("alice", "bob", "carol", "dave", "erin", "frank")}
    assert await world.level(users["alice"], target) == 40  # grandparent group only
    assert await world.level(users["bob"], target) == 30  # group beats lower project level
    assert await world.level(users["carol"], target) == 50  # project beats no group
    assert await world.level(users["dave"], target) == 20  # both set: the higher one
    assert await world.level(users["erin"], target) is None  # member elsewhere only
    assert await world.level(users["frank"], target) == 30  # share caps the group level
    assert await world.check(users["alice"], target) == 40
    with pytest.raises(Forbidden):
        await world.check(users["dave"], target)
    with pytest.raises(NotFound):
        await world.check(users["erin"], target)


async def test_min_access_level_is_configurable(world: World) -> None:
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    with pytest.raises(Forbidden) as info:
        await world.check(alice, target, minAccessLevel=40)
    assert "Maintainer" in info.value.message
    assert await world.check(alice, target, minAccessLevel=20) == 30


async def test_project_answer_follows_the_api_documentation(world: World) -> None:
    """The stand-in's JSON: permissions null or {access_level, notification_level}."""
    alice = world.user("alice")
    world.standin.add_group("top", {"alice": 30})
    world.project("top/sub/proj", visibility="public")
    project = world.standin.projects["top/sub/proj"]
    async with aiohttp.ClientSession() as session:
        url = f"{world.standin.url}/api/v4/projects/top%2Fsub%2Fproj"
        async with session.get(url, headers={"PRIVATE-TOKEN": alice.git_token or ""}) as resp:
            body = await resp.json()
        async with session.get(f"{world.standin.url}/api/v4/projects/{project.id}") as resp:
            anonymous = await resp.json()
        async with session.get(f"{world.standin.url}/api/v4/projects/top%2Fnope") as resp:
            missing = (resp.status, await resp.json())
    assert body["permissions"] == {
        "project_access": None, "group_access": {"access_level": 30, "notification_level": 3},
    }
    assert body["path_with_namespace"] == "top/sub/proj"
    assert body["namespace"]["full_path"] == "top/sub"
    assert body["http_url_to_repo"] == f"{world.standin.url}/top/sub/proj.git"
    assert body["default_branch"] == "main"
    assert body["container_registry_image_prefix"] == f"{REGISTRY}/top/sub/proj"
    assert anonymous["id"] == project.id
    assert "permissions" not in anonymous
    assert missing == (404, {"message": "404 Project Not Found"})


async def test_access_through_group_shares_and_invited_groups(world: World) -> None:
    """GitLab's `permissions` leaves shares out; `members/all/:user_id` has the effective
    role, capped at the share's maximum role."""
    world.standin.add_group("team-dev", {"dan": 50})
    world.standin.add_group("team-rep", {"rita": 40})
    world.standin.add_group("partners", {"ivan": 30})
    world.standin.add_group("partners/sub", {"sue": 40})
    world.standin.add_group("top", shared_with={"partners": 30})  # invited into an ancestor
    target = world.project(
        "top/sub/proj", shared_with={"team-dev": 30, "team-rep": 20}, members={"rita": 10}
    )
    users = {n: world.user(n) for n in ("dan", "rita", "ivan", "sue")}
    assert await world.check(users["dan"], target, launch=True) is None
    assert await world.level(users["dan"], target) == 30  # Owner, capped at Developer
    assert await world.level(users["ivan"], target) == 30
    assert await world.level(users["sue"], target) is None  # a subgroup of the invited one
    with pytest.raises(Forbidden) as info:
        await world.check(users["rita"], target)
    assert "needs Developer" in info.value.message and "Reporter access" in info.value.message
    member_calls = [r.path for r in world.standin.requests if "/members/all/" in r.path]
    assert len(member_calls) >= 3


async def test_share_leaves_the_project_permissions_null(world: World) -> None:
    """The stand-in answers as GitLab does (issues 223832, 3754), not as one would wish."""
    world.standin.add_group("team", {"dan": 30})
    dan = world.user("dan")
    world.project("renku/shared", shared_with={"team": 30})
    async with aiohttp.ClientSession() as session:
        url = f"{world.standin.url}/api/v4/projects/renku%2Fshared"
        async with session.get(url, headers={"PRIVATE-TOKEN": dan.git_token or ""}) as resp:
            body = await resp.json()
        member = f"{url}/members/all/{dan.git_user_id}"
        async with session.get(member, headers={"PRIVATE-TOKEN": dan.git_token or ""}) as resp:
            assert (resp.status, (await resp.json())["access_level"]) == (200, 30)
    assert body["permissions"] == {"project_access": None, "group_access": None}


async def test_project_in_a_personal_namespace(world: World) -> None:
    owner, guest = world.user("olga"), world.user("gus")
    target = world.project("olga/notes", members={"gus": 30})
    assert await world.check(owner, target, launch=True) is None
    assert await world.level(owner, target) == 50
    assert await world.level(guest, target) == 30
    project = world.standin.projects["olga/notes"]
    permissions = (await _project_json(world, owner, project.id))["permissions"]
    assert "group_access" in permissions and permissions["group_access"] is None  # null


async def _project_json(world: World, caller: Caller, ident: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        url = f"{world.standin.url}/api/v4/projects/{ident}"
        async with session.get(url, headers={"PRIVATE-TOKEN": caller.git_token or ""}) as resp:
            return await resp.json()


async def test_user_id_is_asked_when_the_login_has_none(world: World) -> None:
    world.standin.add_group("team", {"dan": 30})
    dan = world.user("dan")
    target = world.project("renku/shared", shared_with={"team": 30})
    assert await world.level(Caller("dan", dan.git_token), target) == 30
    assert "/api/v4/user" in [r.path for r in world.standin.requests]


@pytest.mark.parametrize(
    ("change", "error", "code", "words"),
    [
        ("block", Forbidden, "gitlab_account_blocked", "blocked"),
        ("terms", Forbidden, "gitlab_terms_not_accepted", "terms of service"),
        ("scope", UpstreamError, "gitlab_scope_missing", "`read_api`"),
    ],
)
async def test_403s_that_are_not_about_the_project_say_why(
    world: World, change: str, error: type[GlueError], code: str, words: str
) -> None:
    alice = world.user("alice", scope="read_user read_repository" if change == "scope" else "api")
    target = world.project("renku/demo", members={"alice": 30})
    if change == "block":
        world.standin.users["alice"].state = "blocked"
    elif change == "terms":
        world.standin.users["alice"].terms_accepted = False
    with pytest.raises(error) as info:
        await world.check(alice, target, launch=True)
    assert (info.value.code, type(info.value)) == (code, error)
    assert words in info.value.message
    assert info.value.status == (502 if change == "scope" else 403)


async def test_tokens_carry_scopes_and_the_api_enforces_them(world: World) -> None:
    alice = world.user("alice", scope="read_user")
    world.project("renku/demo", members={"alice": 30}, visibility="public")
    headers = {"Authorization": f"Bearer {alice.git_token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{world.standin.url}/api/v4/user") as resp:
            assert resp.status == 200
        async with session.get(f"{world.standin.url}/api/v4/projects/renku%2Fdemo") as resp:
            body = await resp.json()
            assert resp.status == 403
            assert "WWW-Authenticate" not in resp.headers  # api_guard.rb's FIXME: none
    assert body["error"] == "insufficient_scope"
    assert "read_api" in body["scope"].split()


# ---- moved projects ------------------------------------------------------------------------


async def test_renamed_project_is_found_at_its_old_path(world: World) -> None:
    alice = world.user("alice")
    old = world.project("renku/old", members={"alice": 30})
    world.standin.rename_project("renku/old", "team/new")
    provider = world.provider()
    try:
        assert await provider.access_level(alice, old) == 30
        assert await provider.commit_exists(alice, old)
        assert provider.current_target(alice, old) == Target("team", "new", old.commit_sha)
        bob = world.user("bob")
        assert provider.current_target(bob, old) == old  # nobody else's lookup counts
    finally:
        await provider.close()
    project_id = world.standin.projects["team/new"].id
    paths = [r.path for r in world.standin.requests]
    assert paths[0] == "/api/v4/projects/renku%2Fold"
    assert paths[1] == f"/api/v4/projects/{project_id}"  # the 301 followed
    assert paths[2].startswith(f"/api/v4/projects/{project_id}/repository/commits/")


async def test_moved_project_answers_301_to_its_id_like_gitlab(world: World) -> None:
    alice = world.user("alice")
    world.project("renku/old", members={"alice": 30})
    project = world.standin.rename_project("renku/old", "renku/new")
    headers = {"Authorization": f"Bearer {alice.git_token}"}
    base = world.standin.url
    async with aiohttp.ClientSession(headers=headers) as session:
        url = f"{base}/api/v4/projects/renku%2Fold/repository/commits/main?x=1"
        async with session.get(url, allow_redirects=False) as resp:
            assert resp.status == 301
            location = resp.headers["Location"]
        async with session.post(url, allow_redirects=False) as resp:
            assert resp.status == 405
    assert location == f"{base}/api/v4/projects/{project.id}/repository/commits/main?x=1"


async def test_redirect_to_another_host_is_not_followed(world: World) -> None:
    alice = world.user("alice")
    target = world.project("renku/old", members={"alice": 30})
    world.standin.rename_project("renku/old", "renku/new")
    world.standin.external_url = world.standin.url.replace("127.0.0.1", "127.0.0.2")
    with pytest.raises(UpstreamError) as info:
        await world.level(alice, target)
    assert info.value.code == "gitlab_error"
    assert "not followed" in info.value.message
    assert world.standin.token_sent_in_header(alice.git_token or "") == 1


# ---- rate limits ---------------------------------------------------------------------------


async def test_rate_limit_is_waited_out_within_the_time_budget(world: World) -> None:
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    world.standin.throttle(requests=1, retry_after=1)
    started = asyncio.get_running_loop().time()
    assert await world.check(alice, target) == 30
    assert asyncio.get_running_loop().time() - started >= 1


@pytest.mark.parametrize("retry_after", [30, None])
async def test_rate_limit_beyond_the_budget_fails_closed(
    world: World, retry_after: int | None
) -> None:
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    world.standin.throttle(requests=5, retry_after=retry_after)
    started = asyncio.get_running_loop().time()
    with pytest.raises(UpstreamUnavailable) as info:
        await world.check(alice, target)
    assert asyncio.get_running_loop().time() - started < 2  # no pointless wait
    assert (info.value.status, info.value.code) == (503, "gitlab_unavailable")
    assert ("30 seconds" if retry_after else "a minute") in info.value.message


# ---- commits -----------------------------------------------------------------------------


async def test_known_commits_pass_the_launch_check(world: World) -> None:
    alice = world.user("alice")
    world.project("renku/demo", members={"alice": 30})
    for sha in world.shas:
        assert await world.check(alice, Target("renku", "demo", sha), launch=True) is None


async def test_unknown_commit_is_not_found(world: World) -> None:
    alice = world.user("alice")
    world.project("renku/demo", members={"alice": 30})
    with pytest.raises(NotFound) as info:
        await world.check(alice, Target("renku", "demo", MISSING_SHA), launch=True)
    assert info.value.code == "commit_not_found"


async def test_guest_of_a_private_project_cannot_read_commits(world: World) -> None:
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 10})
    with pytest.raises(Forbidden) as info:
        await world.check(alice, target, launch=True, minAccessLevel=10)
    assert "Reporter" in info.value.message


# ---- images ------------------------------------------------------------------------------


async def test_image_tagged_for_the_commit_is_used(world: World) -> None:
    alice = world.user("alice")
    target = world.project("Renku/Demo", members={"alice": 30})
    world.standin.add_registry_tag("Renku/Demo", world.shas[0][:7])
    world.standin.add_registry_tag("Renku/Demo", world.shas[1][:7])
    world.standin.add_registry_tag("Renku/Demo", world.shas[0][:7], name="other")
    image = await world.image(alice, target)
    assert image == Image(f"{REGISTRY}/renku/demo:{world.shas[0][:7]}", fallback=False)


async def test_commit_tag_template_with_the_full_sha(world: World) -> None:
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    world.standin.add_registry_tag("renku/demo", f"build-{world.shas[0]}")
    image = await world.image(alice, target, images={"commitTag": "build-{sha}"})
    assert image == Image(f"{REGISTRY}/renku/demo:build-{world.shas[0]}", fallback=False)


async def test_missing_tag_falls_back_to_the_default_image(world: World) -> None:
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    world.standin.add_registry_tag("renku/demo", world.shas[1][:7])  # another commit's image
    assert await world.image(alice, target) == Image(DEFAULT_IMAGE, fallback=True)


async def test_no_registry_repository_falls_back(world: World) -> None:
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    assert await world.image(alice, target) == Image(DEFAULT_IMAGE, fallback=True)


@pytest.mark.parametrize(("registry_access", "level"), [("disabled", 50), ("private", 10)])
async def test_unreadable_registry_falls_back(
    world: World, registry_access: str, level: int
) -> None:
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": level}, visibility="public",
                           registry_access=registry_access)
    world.standin.add_registry_tag("renku/demo", world.shas[0][:7])
    assert await world.image(alice, target) == Image(DEFAULT_IMAGE, fallback=True)


async def test_image_outside_allowed_registries_is_never_used(world: World) -> None:
    world.standin.registry_host = "evil.example.com"
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    world.standin.add_registry_tag("renku/demo", world.shas[0][:7])
    assert await world.image(alice, target) == Image(DEFAULT_IMAGE, fallback=True)
    allowed = {"allowedRegistries": ["evil.example.com"]}
    assert (await world.image(alice, target, images=allowed)).fallback is False


@pytest.mark.parametrize("others", [24, 150])
async def test_root_image_after_many_repositories_is_found(world: World, others: int) -> None:
    """GitLab pages the registry list (20 by default): the root may come last."""
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    for number in range(others):
        world.standin.add_registry_tag("renku/demo", "latest", name=f"tool-{number}")
    world.standin.add_registry_tag("renku/demo", world.shas[0][:7])  # root, the highest id
    image = await world.image(alice, target)
    assert image == Image(f"{REGISTRY}/renku/demo:{world.shas[0][:7]}", fallback=False)


async def test_registry_list_is_paginated_like_gitlab(world: World) -> None:
    alice = world.user("alice")
    world.project("renku/demo", members={"alice": 30})
    for number in range(25):
        world.standin.add_registry_tag("renku/demo", "latest", name=f"tool-{number}")
    headers = {"Authorization": f"Bearer {alice.git_token}"}
    url = f"{world.standin.url}/api/v4/projects/renku%2Fdemo/registry/repositories"
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(url) as resp:
            first, page_headers = await resp.json(), resp.headers
        async with session.get(url, params={"page": "2"}) as resp:
            second = await resp.json()
    assert [len(first), len(second)] == [20, 5]
    ids = [r["id"] for r in first + second]
    assert ids == sorted(ids)
    assert (page_headers["X-Total"], page_headers["X-Next-Page"]) == ("25", "2")
    assert 'rel="next"' in page_headers["Link"]
    assert "tags_count" not in first[0]


async def test_configured_registry_host_replaces_gitlabs(world: World) -> None:
    world.standin.registry_host = "gitlab-registry.internal:5000"
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    world.standin.add_registry_tag("renku/demo", world.shas[0][:7])
    image = await world.image(alice, target, registry=REGISTRY)
    assert image == Image(f"{REGISTRY}/renku/demo:{world.shas[0][:7]}", fallback=False)


# ---- GitLab trouble ----------------------------------------------------------------------


async def test_unreachable_gitlab_is_503(world: World) -> None:
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    nowhere = free_port()  # nothing listens there
    provider = GitLabProvider(provider_config(f"http://127.0.0.1:{nowhere}"))
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await Access(provider, 30).check(alice, target)
    finally:
        await provider.close()
    assert (info.value.status, info.value.code) == (503, "gitlab_unavailable")


async def test_slow_gitlab_is_504(world: World) -> None:
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    world.standin.delay = 1.0
    with pytest.raises(UpstreamTimeout) as info:
        await world.check(alice, target, timeoutSeconds=0.2)
    assert (info.value.status, info.value.code) == (504, "gitlab_timeout")
    assert "0.2 seconds" in info.value.message


@pytest.mark.parametrize("method", ["access", "commit", "image"])
async def test_gitlab_server_error_is_502(world: World, method: str) -> None:
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    world.standin.fail_status = 500
    provider = world.provider()
    calls = {
        "access": provider.access_level, "commit": provider.commit_exists,
        "image": provider.commit_image,
    }
    try:
        with pytest.raises(UpstreamError) as info:
            await calls[method](alice, target)
    finally:
        await provider.close()
    assert (info.value.status, info.value.code) == (502, "gitlab_error")


@pytest.mark.parametrize("how", ["expire", "revoke", "unknown", "missing"])
async def test_dead_token_asks_the_user_to_log_in_again(
    world: World, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alice = world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    if how == "expire":
        world.standin.expire_token(alice.git_token or "")
    elif how == "revoke":
        world.standin.revoke_token(alice.git_token or "")
    elif how == "unknown":
        alice = Caller("alice", token())
    else:
        alice = Caller("alice", None)
    with pytest.raises(Unauthorized) as info:
        await world.check(alice, target)
    assert (info.value.status, info.value.code) == (401, "gitlab_token_expired")
    assert "log in again" in info.value.message
    if alice.git_token:
        assert_hidden(alice.git_token, str(info.value), "the error")
        assert_hidden(alice.git_token, caplog.text, "the log")
        sent = world.standin.token_sent_in_header(alice.git_token)
        assert sent == 1


@pytest.mark.parametrize(
    ("how", "body"),
    [
        ("expire", {"error": "invalid_token", "error_description": "Token is expired."}),
        ("revoke", {"error": "invalid_token", "error_description": "Token was revoked."}),
        ("unknown", {"message": "401 Unauthorized"}),
    ],
)
async def test_401_has_gitlabs_body_and_challenge(
    world: World, how: str, body: dict[str, str]
) -> None:
    alice = world.user("alice")
    world.project("renku/demo", members={"alice": 30})
    secret = alice.git_token or ""
    if how == "expire":
        world.standin.expire_token(secret)
    elif how == "revoke":
        world.standin.revoke_token(secret)
    else:
        secret = token()
    url = f"{world.standin.url}/api/v4/projects/renku%2Fdemo"
    headers = {"Authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        answer, challenge = await resp.json(), resp.headers.get("WWW-Authenticate", "")
        assert resp.status == 401
    for key, value in body.items():
        assert answer[key].startswith(value)
    assert ('error="invalid_token"' in challenge) is (how != "unknown")


async def test_token_travels_only_in_the_authorization_header(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alice = world.user("alice")
    target = world.project("renku/sub/demo", members={"alice": 30})
    world.standin.add_registry_tag("renku/sub/demo", world.shas[0][:7])
    provider = world.provider()
    try:
        assert await provider.access_level(alice, target) == 30
        assert await provider.commit_exists(alice, target)
        assert await provider.commit_image(alice, target) is not None
    finally:
        await provider.close()
    sent = world.standin.token_sent_in_header(alice.git_token or "")
    assert sent == 4
    leaks = world.standin.token_leaks(alice.git_token or "")
    assert leaks == []
    assert "GitLab GET" in caplog.text  # the provider logged, without the token
    assert_hidden(alice.git_token or "", caplog.text, "the log")
    paths = [r.path for r in world.standin.requests]
    assert "/api/v4/projects/renku%2Fsub%2Fdemo" in paths


def test_clone_url_carries_no_credentials() -> None:
    provider = make_provider(provider_config("https://gitlab.example.com/"))
    target = Target("group/sub", "proj", MISSING_SHA)
    assert isinstance(provider, GitLabProvider)
    assert provider.needs_token is True
    assert provider.clone_url(target) == "https://gitlab.example.com/group/sub/proj.git"


# ---- clone through git smart HTTP --------------------------------------------------------


async def run_clone(source: str, sha: str, dest: Path, git_token: str) -> tuple[int, str]:
    """`python -m glue.session.clone` with the token in a file, as the spawner runs it."""
    token_file = dest.parent / f"{dest.name}.token"
    token_file.write_text(git_token)
    token_file.chmod(0o600)
    env = {**os.environ, "NOTEBOOKS_GIT_TOKEN_FILE": str(token_file), "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "glue.session.clone", "--source", source, "--commit", sha,
        "--dest", str(dest), env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, (out + err).decode()


def git_out(dest: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(dest), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


async def test_clone_checks_out_the_older_commit_without_keeping_the_token(
    world: World, tmp_path: Path
) -> None:
    alice = world.user("alice")
    target = world.project("renku/sub/demo", members={"alice": 20})
    source = world.provider().clone_url(target)
    dest = tmp_path / "work"
    status, output = await run_clone(source, world.shas[0], dest, alice.git_token or "")
    assert status == 0, output
    assert git_out(dest, "rev-parse", "HEAD") == world.shas[0]
    assert (dest / "README.md").read_text() == "first\n"
    assert git_out(dest, "rev-list", "--count", "HEAD") == "1"  # no history fetched
    secret = alice.git_token or ""
    assert_hidden(secret, (dest / ".git" / "config").read_bytes(), ".git/config")
    for path in (dest / ".git").rglob("*"):
        if path.is_file():
            assert_hidden(secret, path.read_bytes(), path)
    sent = world.standin.token_sent_in_header(secret)
    assert sent >= 1
    leaks = world.standin.token_leaks(secret)
    assert leaks == []
    git_requests = [r for r in world.standin.requests if r.path.startswith("/renku/sub/demo.git")]
    assert any("git-upload-pack" in r.path for r in git_requests)


async def test_clone_with_a_wrong_token_fails_clearly(world: World, tmp_path: Path) -> None:
    world.user("alice")
    target = world.project("renku/demo", members={"alice": 30})
    wrong = token()
    status, output = await run_clone(world.provider().clone_url(target), world.shas[0],
                                     tmp_path / "work", wrong)
    assert status == 1
    assert "log in again" in output
    assert_hidden(wrong, output, "the clone's output")
    leaks = world.standin.token_leaks(wrong)
    assert leaks == []


async def test_clone_by_a_user_who_cannot_see_the_project_fails(
    world: World, tmp_path: Path
) -> None:
    mallory = world.user("mallory")
    target = world.project("renku/demo", members={"alice": 30})
    status, output = await run_clone(world.provider().clone_url(target), world.shas[0],
                                     tmp_path / "work", mallory.git_token or "")
    assert status == 1
    assert "not found" in output.lower()
    assert not (tmp_path / "work" / "README.md").exists()


def git_push(world: World, caller: Caller, tmp_path: Path) -> tuple[int, str]:
    """Commit in a clone and push it with the caller's token, as a session would (in a
    thread: the stand-in serves on the test's event loop)."""
    work = tmp_path / f"push-{caller.name}"
    subprocess.run(["git", "clone", "-q", str(world.repo_path), str(work)], check=True)
    env = {
        **os.environ, "GIT_AUTHOR_NAME": "A", "GIT_AUTHOR_EMAIL": "a@example.test",
        "GIT_COMMITTER_NAME": "A", "GIT_COMMITTER_EMAIL": "a@example.test",
        "GIT_TERMINAL_PROMPT": "0",
    }
    subprocess.run(["git", "-C", str(work), "commit", "-q", "--allow-empty", "-m", "work"],
                   check=True, env=env)
    basic = base64.b64encode(f"oauth2:{caller.git_token}".encode()).decode()
    result = subprocess.run(
        ["git", "-C", str(work), "-c", f"http.extraHeader=Authorization: Basic {basic}",
         "push", f"{world.standin.url}/renku/demo.git", f"HEAD:refs/heads/{caller.name}"],
        capture_output=True, text=True, env=env, check=False,
    )
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    ("scope", "level", "pushed"),
    [
        ("write_repository", 30, True),
        ("api", 40, True),
        ("read_repository", 40, False),  # push needs write_repository
        ("write_repository", 20, False),  # and the Developer role
    ],
)
async def test_git_push_follows_gitlabs_rules(
    world: World, repo: tuple[Path, list[str]], tmp_path: Path, scope: str, level: int,
    pushed: bool
) -> None:
    bare = tmp_path / "demo.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo[0]), str(bare)], check=True)
    world.repo_path = bare
    alice = world.user("alice", scope=scope)
    world.project("renku/demo", members={"alice": level})
    status, output = await asyncio.to_thread(git_push, world, alice, tmp_path)
    branches = git_out(bare, "branch", "--list", "alice")
    assert (status == 0, bool(branches)) == (pushed, pushed), output
    if not pushed:
        assert "You are not allowed to upload code." in output
    assert_hidden(alice.git_token or "", output, "git's output")


async def test_git_fetch_needs_a_token_that_may_read_code(world: World, tmp_path: Path) -> None:
    alice = world.user("alice", scope="read_user")
    target = world.project("renku/demo", members={"alice": 30})
    status, output = await run_clone(world.provider().clone_url(target), world.shas[0],
                                     tmp_path / "work", alice.git_token or "")
    assert status == 1
    assert not (tmp_path / "work" / "README.md").exists()
    assert "refused" in output  # 403 "You are not allowed to download code."


async def test_git_without_credentials_is_challenged(world: World) -> None:
    world.project("renku/demo")
    async with aiohttp.ClientSession() as session:
        url = f"{world.standin.url}/renku/demo.git/info/refs?service=git-upload-pack"
        async with session.get(url) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Basic")


# ---- OAuth and standalone use --------------------------------------------------------------


REDIRECT = "http://127.0.0.1:8000/hub/oauth_callback"


async def authorize(
    session: aiohttp.ClientSession, base: str, verifier: str, scope: str = "read_user read_api"
) -> str:
    """Walk /oauth/authorize with a PKCE challenge, as oauthenticator does; returns the code."""
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "client_id": "hub-client", "redirect_uri": REDIRECT, "response_type": "code",
        "state": "xyz", "scope": scope, "code_challenge": challenge.decode().rstrip("="),
        "code_challenge_method": "S256",
    }
    async with session.get(f"{base}/oauth/authorize", params=params,
                           allow_redirects=False) as resp:
        assert resp.status == 302
        location = urlsplit(resp.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["xyz"]
    return query["code"][0]


async def test_oauth_code_and_refresh_grants(world: World) -> None:
    world.user("alice")
    world.standin.add_oauth_app("hub-client", "hub-secret", REDIRECT)
    world.standin.oauth_user = "alice"
    base = world.standin.url
    client = {"client_id": "hub-client", "client_secret": "hub-secret"}
    verifier = secrets.token_urlsafe(48)
    async with aiohttp.ClientSession() as session:
        grant = {"grant_type": "authorization_code", "redirect_uri": REDIRECT, **client}
        code = await authorize(session, base, verifier)
        wrong = {**grant, "code": code, "code_verifier": verifier + "x"}
        async with session.post(f"{base}/oauth/token", data=wrong) as resp:
            assert (resp.status, (await resp.json())["error"]) == (400, "invalid_grant")
        grant.update(code=await authorize(session, base, verifier), code_verifier=verifier)
        async with session.post(f"{base}/oauth/token", data=grant) as resp:
            first = await resp.json()
        assert first["token_type"] == "Bearer"
        assert (first["expires_in"], first["scope"]) == (7200, "read_user read_api")
        assert {"access_token", "refresh_token", "created_at"} <= set(first)
        auth = {"Authorization": f"Bearer {first['access_token']}"}
        async with session.get(f"{base}/api/v4/user", headers=auth) as resp:
            assert (await resp.json())["username"] == "alice"
        async with session.post(f"{base}/oauth/token", data=grant) as resp:
            assert (resp.status, (await resp.json())["error"]) == (400, "invalid_grant")
        refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        basic = {"Authorization": "Basic " + base64.b64encode(b"hub-client:hub-secret").decode()}
        async with session.post(f"{base}/oauth/token", data=refresh, headers=basic) as resp:
            second = await resp.json()
        assert second["access_token"] != first["access_token"]
        async with session.get(f"{base}/api/v4/user", headers=auth) as resp:
            assert (resp.status, (await resp.json())["error"]) == (401, "invalid_token")
        async with session.post(f"{base}/oauth/token", data={**refresh, **client}) as resp:
            assert resp.status == 400  # a refresh token is used once
        bad_client = {**refresh, "client_id": "hub-client", "client_secret": "nope"}
        async with session.post(f"{base}/oauth/token", data=bad_client) as resp:
            assert (resp.status, (await resp.json())["error"]) == (401, "invalid_client")


async def test_oauth_refuses_a_scope_the_application_lacks(world: World) -> None:
    world.user("alice")
    world.standin.add_oauth_app("hub-client", "hub-secret", REDIRECT, scopes="read_user")
    world.standin.oauth_user = "alice"
    challenge = base64.urlsafe_b64encode(hashlib.sha256(b"v" * 43).digest()).decode()
    params = {
        "client_id": "hub-client", "redirect_uri": REDIRECT, "response_type": "code",
        "state": "xyz", "scope": "read_user read_api", "code_challenge": challenge.rstrip("="),
        "code_challenge_method": "S256",
    }
    url = f"{world.standin.url}/oauth/authorize"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params=params, allow_redirects=False) as resp,
    ):
        # GitLab renders Doorkeeper's error page itself: nothing goes back to the hub
        assert resp.status == 200 and "Location" not in resp.headers
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "The requested scope is invalid, unknown, or malformed." in page


async def test_standalone_server_from_a_fixture(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "notebooks").mkdir(parents=True)
    (source / "notebooks" / "hello.ipynb").write_text("{}\n")
    secret = token()
    (tmp_path / "fixture.yaml").write_text(f"""
users: [{{username: alice, token: {secret}}}]
groups: [{{path: renku, members: {{alice: 30}}}}]
projects:
  - {{path: renku/demo, source: src, registryTags: [abc1234]}}
oauth:
  user: alice
  clients: [{{id: hub, secret: s, redirectUri: "http://127.0.0.1:1/cb"}}]
""")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "testing.gitlab", "--port", "0",
        "--fixture", str(tmp_path / "fixture.yaml"), "--repos-dir", str(tmp_path / "repos"),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = line.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), line
        headers = {"Authorization": f"Bearer {secret}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(f"{url}/api/v4/projects/renku%2Fdemo") as resp:
                project = await resp.json()
            async with session.get(f"{url}/api/v4/projects/{project['id']}/repository/commits/"
                                   f"{project['default_branch']}") as resp:
                commit = await resp.json()
        assert project["permissions"]["group_access"]["access_level"] == 30
        assert len(commit["id"]) == 40
        files = git_out(tmp_path / "repos" / "renku" / "demo.git", "ls-tree", "-r", "--name-only",
                        "HEAD")
        assert files == "notebooks/hello.ipynb"
    finally:
        proc.terminate()
        await proc.wait()


# ---- GitLab as it really is, part two (issue 22) --------------------------------------------


async def test_moved_project_with_a_notebook_is_launched_not_502(world: World) -> None:
    """1. GitLab redirects an old path for GET only: the notebook's HEAD there answers 405.
    The launch sends it beside the access check, before the move is known."""
    alice = world.user("alice")
    old = world.project("renku/old", members={"alice": 30})
    project = world.standin.rename_project("renku/old", "team/new")
    headers = {"Authorization": f"Bearer {alice.git_token}"}
    file_url = (f"{world.standin.url}/api/v4/projects/renku%2Fold/repository/files/"
                f"analysis.ipynb?ref={old.commit_sha}")
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.head(file_url, allow_redirects=False) as resp:
            assert resp.status == 405
        async with session.post(file_url, allow_redirects=False) as resp:
            assert (resp.status, await resp.json()) == (
                405, {"message": "Non GET methods are not allowed for moved projects"}
            )
    provider = world.provider()
    access = Access(provider, provider.min_level)
    notebook = Target("renku", "old", old.commit_sha, "analysis.ipynb")
    missing = Target("renku", "old", old.commit_sha, "nope.ipynb")
    try:
        # as the launch's preflight asks: both at once
        _, exists = await asyncio.gather(
            access.check_launch(alice, notebook), provider.file_exists(alice, notebook)
        )
        assert exists is True
        assert await provider.file_exists(alice, missing) is False
    finally:
        await provider.close()
    heads = [r.path for r in world.standin.requests if r.method == "HEAD"]
    assert any(path.startswith(f"/api/v4/projects/{project.id}/repository/files/")
               for path in heads)


async def test_branch_list_cached_and_repeated_like_gitlab(world: World, tmp_path: Path) -> None:
    """3. GitLab caches a branch list per user and query for 30 s, and with `search` its first
    page holds every match while X-Next-Page counts all branches: the listing counts each
    branch once, and a branch it deleted is confirmed with the repository."""
    alice = world.user("alice")
    bare = tmp_path / "many.git"
    sha = create_bare_repo(bare, [{"README.md": "hi\n"}])[0]
    world.standin.add_project("renku/many", repo=bare, members={"alice": 30})
    prefix = "notebooks/autosave/alice/"
    names = [f"{prefix}{i:040x}" for i in range(150)]
    updates = "".join(f"create refs/heads/{name} {sha}\n" for name in [*names, "other/x"])
    subprocess.run(["git", "-C", str(bare), "update-ref", "--stdin"], input=updates.encode(),
                   check=True)
    ref = Ref("renku", "many", "")
    provider = world.provider()
    try:
        listed = await provider.branches(alice, ref, prefix)
        assert sorted(b.name for b in listed) == names  # each once, though page 2 repeats
        # the stand-in's own answer: page 1 holds all 150, and says page 2 follows
        headers = {"Authorization": f"Bearer {alice.git_token}"}
        url = (f"{world.standin.url}/api/v4/projects/renku%2Fmany/repository/branches"
               f"?search=%5E{quote(prefix, safe='')}&per_page=100&page=1")
        async with aiohttp.ClientSession(headers=headers) as session, session.get(url) as resp:
            assert len(await resp.json()) == 150 and resp.headers["X-Next-Page"] == "2"
            assert resp.headers["X-Total"] == "152"  # all branches, the default one too
        assert await provider.delete_branch(alice, ref, names[0]) is True
        # GitLab's cached list still holds it for 30 s; the listing asks the repository
        async with aiohttp.ClientSession(headers=headers) as session, session.get(url) as resp:
            assert names[0] in [b["name"] for b in await resp.json()]
        listed = await provider.branches(alice, ref, prefix)
        assert sorted(b.name for b in listed) == names[1:]
    finally:
        await provider.close()


async def test_group_access_from_a_pending_request_is_confirmed(world: World) -> None:
    """4. GitLab before 16.9 counted a pending request to join the project's group as
    Developer in `group_access`; `members/all/:user_id` leaves requests out."""
    world.standin.before_16_9 = True
    world.standin.add_group("renku", {"carol": 30})
    target = world.project("renku/open", visibility="internal")
    bob, carol = world.user("bob"), world.user("carol")
    world.standin.request_access("renku", "bob")
    body = await _project_json(world, bob, world.standin.projects["renku/open"].id)
    assert body["permissions"]["group_access"]["access_level"] == 30  # the over-report
    with pytest.raises(Forbidden) as info:
        await world.check(bob, target, launch=True)
    assert info.value.code == "insufficient_access"
    assert await world.check(carol, target, launch=True) is None  # a real member still may
    member_calls = [r.path for r in world.standin.requests if "/members/all/" in r.path]
    assert len(member_calls) == 2


async def test_guest_below_reporter_with_guest_minimum_is_refused_not_502(world: World) -> None:
    """6. minAccessLevel Guest lets a Guest past the access check; GitLab's 403 for the
    notebook (Guests read no code of a private project) is theirs, not an outage."""
    gus = world.user("gus")
    world.project("renku/private", members={"gus": 10})
    provider = world.provider(minAccessLevel=10)
    access = Access(provider, provider.min_level)
    notebook = Target("renku", "private", world.shas[0], "analysis.ipynb")
    try:
        assert await access.check(gus, notebook) == 10
        results = await asyncio.gather(
            access.check_launch(gus, notebook), provider.file_exists(gus, notebook),
            return_exceptions=True,
        )
    finally:
        await provider.close()
    for result in results:
        assert isinstance(result, Forbidden), result
        assert result.code == "insufficient_access" and result.status == 403


async def test_smaller_differences_admins_scopes_and_personal_projects(world: World) -> None:
    """7. An instance admin who is no member sees a private project with both fields null
    and is refused, saying so; a token without the scope gets GitLab's 403 without a
    challenge, still told apart; group_access is null in a personal namespace."""
    world.user("root")
    world.standin.users["root"].is_admin = True
    target = world.project("renku/private", members={"alice": 30})
    headers = {"Authorization": f"Bearer {world.tokens['root']}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{world.standin.url}/api/v4/user") as resp,
    ):
        record = await resp.json()  # what the hub keeps as auth_state["gitlab_user"]
    assert record["is_admin"] is True
    root = Caller.from_auth_state("root", {"access_token": world.tokens["root"],
                                           "gitlab_user": record})
    body = await _project_json(world, root, world.standin.projects["renku/private"].id)
    assert body["permissions"] == {"project_access": None, "group_access": None}
    assert await world.level(root, target) == 0  # visible, no role
    with pytest.raises(Forbidden) as info:
        await world.check(root, target, launch=True)
    assert info.value.code == "insufficient_access"
    assert "administrator" in info.value.message
    # the scope's 403 has no WWW-Authenticate, and is still the operator's problem
    narrow = world.user("narrow", scope="read_user")
    world.standin.projects["renku/private"].members["narrow"] = 30
    with pytest.raises(UpstreamError) as scope:
        await world.check(narrow, target)
    assert scope.value.code == "gitlab_scope_missing"
    # a personal project: group_access null, the owner's role from project_access
    olga = world.user("olga")
    notes = world.project("olga/notes", visibility="public")
    body = await _project_json(world, olga, world.standin.projects["olga/notes"].id)
    assert body["permissions"]["group_access"] is None
    assert await world.level(olga, notes) == 50
