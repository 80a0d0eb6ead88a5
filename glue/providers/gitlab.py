"""The GitLab provider: access, commits and per-commit images from GitLab API v4.

Every call acts with the user's own GitLab token (`Caller.git_token`, from the
hub's auth_state), so GitLab decides what the user may see; we never hold a
token of our own. The calls go through glue.providers.gitlabapi, the HTTP
transport, which puts the token only in the Authorization header (never in a
URL, a log line or an exception message) and follows a redirect only to the
same GitLab host (a moved project answers 301 to its numeric id), so the token
is never sent anywhere else. This module decides what GitLab's answers mean,
as GitLab really gives them: an old path answers 405 to anything but GET (HEAD
included), `group_access` over-reports before GitLab 16.9, and branch lists are
cached for 30 s.
The one call that is not HTTP, a branch's deletion, pushes with git and hands
it the token in a private file, never in an argument or URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import tempfile
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cachetools import TTLCache

from glue.core.config import Config
from glue.core.errors import (
    Forbidden,
    NotFound,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from glue.core.target import Ref, Target, Wanted
from glue.providers.base import Branch, Caller
from glue.providers.gitlabapi import (
    LOGIN_AGAIN,
    PER_PAGE,
    GitLabAPI,
    expect_ok,
    json_or_none,
)
from glue.session import autosave

log = logging.getLogger(__name__)

# the registry's and the branches' lists, PER_PAGE a page: at most this many pages are read
MAX_REGISTRY_PAGES = 50
MAX_BRANCH_PAGES = 50
# how long a moved project's old path is remembered as its id, per user
MOVED_CACHE_SECONDS = 60
MOVED_CACHE_MAX = 4096
# GitLab caches a branch list per user and query for 30 s (lib/api/branches.rb): a branch
# this service deleted is confirmed gone with the repository while a list may still hold it
BRANCH_LIST_CACHE_SECONDS = 30
DELETED_CACHE_SECONDS = BRANCH_LIST_CACHE_SECONDS + 15

def below_reporter(target: Target, what: str) -> Forbidden:
    """GitLab's 403 on a project the caller can see: a role below Reporter (a Guest) reads
    neither code nor files, whatever `minAccessLevel` lets in."""
    return Forbidden(
        f"Your access to {target.full_path} does not include reading {what}; "
        "ask a maintainer for the Reporter role or higher.",
        code="insufficient_access",
    )


class GitLabProvider:
    """Asks GitLab, as the caller, what they may do with a project and which image to run."""

    needs_token = True

    def __init__(self, config: Config):
        provider = config["provider"]
        self.url = provider["url"].rstrip("/")
        self.registry: str | None = (provider.get("registry") or "").rstrip("/") or None
        self.min_level: int = provider["minAccessLevel"]
        self.config = config
        self.client = GitLabAPI(
            self.url, timeout=float(provider["timeoutSeconds"]), ca_bundle=provider["caBundle"]
        )
        # (user, old path lower-cased) -> (project id, current path) of a moved project
        self._moved: TTLCache[tuple[str, str], tuple[int, str]] = TTLCache(
            MOVED_CACHE_MAX, MOVED_CACHE_SECONDS
        )
        # (user, project path lower-cased, branch) this service deleted lately
        self._deleted: TTLCache[tuple[str, str, str], bool] = TTLCache(
            MOVED_CACHE_MAX, DELETED_CACHE_SECONDS
        )

    # ---- GitProvider -----------------------------------------------------------------------

    async def access_level(self, caller: Caller, target: Target | Ref) -> int | None:
        """The caller's effective role; None when GitLab hides the project (404).

        `permissions` in the project only counts direct membership and the project's own
        group and its ancestors; a role through a group share or an invited group shows
        only in `members/all/:user_id`, which is asked when the first answer is too low.
        It is also asked when `group_access` alone reaches the level needed: GitLab before
        16.9 counted a pending request to join the group there as Developer (MR 141364),
        and `members/all` leaves requests out. Instance admins who are not members get
        null in both fields, and no role: they are refused like any non-member.
        """
        answer = await self.client.get(caller, self._project_api(caller, target))
        if answer.status == 404:
            return None
        if answer.status == 403:
            raise Forbidden(
                f"GitLab refuses you access to {target.full_path}.", code="insufficient_access"
            )
        expect_ok(answer, f"reading project {target.full_path}")
        project = answer.body if isinstance(answer.body, dict) else {}
        self._remember_path(caller, target, project)
        level = _level(project)
        if not isinstance(project.get("id"), int):
            return level
        if level < self.min_level:
            level = max(level, await self._member_level(caller, project["id"]))
        elif _level(project, "project_access") < self.min_level:
            # only group_access grants it: confirmed by the membership itself
            level = await self._member_level(caller, project["id"])
        return level

    def current_target(self, caller: Caller, target: Wanted) -> Wanted:
        """The target at the project's current path, if a lookup saw it was moved."""
        moved = self._moved.get((caller.name, target.full_path.lower()))
        if moved is None:
            return target
        namespace, _, project = moved[1].rpartition("/")
        return dataclasses.replace(target, namespace=namespace, project=project)

    async def commit_exists(self, caller: Caller, target: Target) -> bool:
        path = f"{self._project_api(caller, target)}/repository/commits/{target.commit_sha}"
        answer = await self.client.get(caller, path)
        if answer.status == 404:
            return False
        if answer.status == 403:
            raise below_reporter(target, "its code")
        expect_ok(answer, f"reading commit {target.commit_sha[:7]}")
        # this endpoint also takes branch and tag names: only the exact sha counts
        commit = answer.body
        return isinstance(commit, dict) and commit.get("id") == target.commit_sha

    def clone_url(self, target: Target | Ref) -> str:
        return f"{self.url}/{target.full_path}.git"

    async def close(self) -> None:
        await self.client.close()

    # ---- registry --------------------------------------------------------------------------

    def commit_tag(self, sha: str) -> str:
        tag: str = self.config["images"]["commitTag"]
        return tag.replace("{sha}", sha).replace("{sha7}", sha[:7])

    async def commit_image(self, caller: Caller, target: Target) -> str | None:
        """The image reference if the commit's tag exists in the project's root repository."""
        base = f"{self._project_api(caller, target)}/registry/repositories"
        root = await self._root_repository(caller, target, base)
        if root is None:
            return None
        tag = self.commit_tag(target.commit_sha)
        answer = await self.client.get(caller, f"{base}/{root['id']}/tags/{quote(tag, safe='')}")
        if answer.status in (403, 404):
            return None
        expect_ok(answer, f"reading image tag {tag} of {target.full_path}")
        if self.registry:
            return f"{self.registry}/{root.get('path') or target.full_path.lower()}:{tag}"
        details = answer.body
        location = details.get("location") if isinstance(details, dict) else None
        return location or (f"{root['location']}:{tag}" if root.get("location") else None)

    async def _root_repository(
        self, caller: Caller, target: Target, base: str
    ) -> dict[str, Any] | None:
        """The project's root image repository, page by page until it is found."""
        async with aclosing(
            self.client.pages(caller, base, max_pages=MAX_REGISTRY_PAGES)
        ) as pages:
            async for answer in pages:
                if answer.status in (403, 404):  # registry disabled, private, or project hidden
                    return None
                expect_ok(answer, f"listing the registry of {target.full_path}")
                root = _root_repository(answer.body, target)
                if root is not None:
                    return root
                if answer.next_page is None:
                    return None
        log.warning(
            "%s has over %d image repositories", target.full_path, PER_PAGE * MAX_REGISTRY_PAGES
        )
        return None

    # ---- refs, files and pipelines (links by ref, checks before a launch, image status) ----

    async def resolve_ref(self, caller: Caller, ref: Ref) -> str | None:
        """GitLab's commits API takes a branch, a tag or a short sha; '' asks the project
        for its default branch first. None: no such ref, or a project hidden from the caller."""
        name = ref.ref
        project = self._project_api(caller, ref)
        if not name:
            answer = await self.client.get(caller, project)
            if answer.status == 404:
                return None
            expect_ok(answer, f"reading project {ref.full_path}")
            body = answer.body if isinstance(answer.body, dict) else {}
            name = body.get("default_branch") or ""
            if not name:
                return None  # an empty repository
        answer = await self.client.get(
            caller, f"{project}/repository/commits/{quote(name, safe='')}"
        )
        if answer.status in (403, 404):
            return None
        expect_ok(answer, f"resolving {name} in {ref.full_path}")
        sha = answer.body.get("id") if isinstance(answer.body, dict) else None
        return sha if isinstance(sha, str) else None

    async def file_exists(self, caller: Caller, target: Target) -> bool:
        """`HEAD /projects/:id/repository/files/:path?ref=<sha>`: 200 or 404, no content.

        GitLab redirects an old path of a moved project for GET only: a HEAD there answers
        405 "Non GET methods are not allowed for moved projects". This runs beside the access
        check, before the move is known, so a 405 asks the project (a GET, which follows the
        move to its id) and sends the HEAD again, by id. A 403 is the role's (a Guest may
        not read the code of a private project)."""
        if not target.notebook:
            return True

        def path() -> str:
            return (
                f"{self._project_api(caller, target)}/repository/files/"
                f"{quote(target.notebook, safe='')}?ref={target.commit_sha}"
            )

        answer = await self.client.get(caller, path(), method="HEAD")
        if answer.status == 405 and await self._follow_move(caller, target):
            answer = await self.client.get(caller, path(), method="HEAD")
        if answer.status == 404:
            return False
        if answer.status == 403:
            raise below_reporter(target, "its files")
        expect_ok(answer, f"looking for {target.notebook} in {target.full_path}")
        return True

    async def _follow_move(self, caller: Caller, target: Target | Ref) -> bool:
        """Learn whether the project at the target's path moved (a GET follows GitLab's 301
        to its id); True when it did and calls by id now reach it."""
        answer = await self.client.get(caller, self._project_api(caller, target))
        if answer.status != 200 or not isinstance(answer.body, dict):
            return False
        self._remember_path(caller, target, answer.body)
        return (caller.name, target.full_path.lower()) in self._moved

    async def pipeline_status(self, caller: Caller, target: Target) -> str | None:
        """The newest pipeline for the sha (GitLab lists them newest first); None when there
        is none or the caller may not read pipelines (CI disabled, not a member)."""
        path = (
            f"{self._project_api(caller, target)}/pipelines?sha={target.commit_sha}"
            "&order_by=id&sort=desc&per_page=1"
        )
        answer = await self.client.get(caller, path)
        if answer.status in (403, 404):
            return None
        expect_ok(answer, f"listing the pipelines of {target.full_path}")
        pipelines = answer.body
        if not isinstance(pipelines, list) or not pipelines:
            return None
        newest = pipelines[0].get("status") if isinstance(pipelines[0], dict) else None
        return newest if isinstance(newest, str) else None

    # ---- branches (autosaves) --------------------------------------------------------------

    async def branches(
        self, caller: Caller, project: Target | Ref, prefix: str
    ) -> list[Branch]:
        """`GET /projects/:id/repository/branches?search=^<prefix>`, page by page; GitLab's
        search is a substring match, so the prefix is checked again here.

        GitLab's first page with `search` holds every match while its X-Next-Page counts
        all branches, so later pages repeat matches: each name counts once, and a page
        larger than asked for is the whole list. The list is cached for 30 s per user and
        query: a branch this service deleted since is asked of the repository itself."""
        base = f"{self._project_api(caller, project)}/repository/branches"
        search = quote(f"^{prefix}", safe="")
        found: dict[str, Branch] = {}
        seen: set[str] = set()
        async with aclosing(
            self.client.pages(caller, f"{base}?search={search}", max_pages=MAX_BRANCH_PAGES)
        ) as pages:
            async for answer in pages:
                if answer.status == 404:
                    raise NotFound(
                        f"Project {project.full_path} was not found, or you cannot see it.",
                        code="project_not_found",
                    )
                if answer.status == 403:
                    raise Forbidden(
                        f"Your access to {project.full_path} does not include reading its "
                        "branches.",
                        code="insufficient_access",
                    )
                expect_ok(answer, f"listing the branches of {project.full_path}")
                items = answer.body if isinstance(answer.body, list) else []
                branches = [b for b in map(_branch, items) if b]
                repeated = bool(branches) and all(b.name in seen for b in branches)
                seen.update(b.name for b in branches)
                found.update((b.name, b) for b in branches if b.name.startswith(prefix))
                if answer.next_page is None or len(items) > PER_PAGE or repeated:
                    return await self._without_deleted(caller, project, base, found)
        log.warning("%s has over %d branches below %s", project.full_path, len(found), prefix)
        return await self._without_deleted(caller, project, base, found)

    async def _without_deleted(
        self, caller: Caller, project: Target | Ref, base: str, found: dict[str, Branch]
    ) -> list[Branch]:
        """The list, with each branch this service deleted lately for the caller asked of
        `GET …/branches/:branch` (read from the repository, not cached): gone, or its tip
        now (a new autosave since)."""
        path = project.full_path.lower()
        for name in [n for n in found if (caller.name, path, n) in self._deleted]:
            answer = await self.client.get(caller, f"{base}/{quote(name, safe='')}")
            if answer.status == 404:
                del found[name]
                continue
            expect_ok(answer, f"reading branch {name} of {project.full_path}")
            fresh = _branch(answer.body)
            if fresh is not None:
                found[name] = fresh
        return list(found.values())

    async def delete_branch(self, caller: Caller, project: Target | Ref, name: str) -> bool:
        """A push deleting the branch, as the caller: GitLab's REST `DELETE .../branches/:branch`
        needs the `api` scope (all of the API), which the hub does not ask for; a push needs
        `write_repository`, and the Developer role and branch protection apply to it.

        The glue's own `autosave delete` step does it, the token in a private file read by
        git's credential helper, never in an argument or URL.
        """
        if not caller.git_token:
            raise Unauthorized(
                "No GitLab login is stored for you; log in again.", code="gitlab_token_expired"
            )
        seconds = float(self.config["autosave"]["timeoutSeconds"])
        with tempfile.TemporaryDirectory(prefix="notebooks-branch-") as tmp:
            token_file = Path(tmp, "token")
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(caller.git_token)
            argv, env = autosave.step(
                "delete",
                remote=self.clone_url(project),
                branch=name,
                token_file=str(token_file),
                python=sys.executable,
            )
            process = await asyncio.create_subprocess_exec(
                *argv,
                env={**os.environ, **env},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await asyncio.wait_for(process.communicate(), seconds)
            except TimeoutError:
                process.kill()
                await process.wait()
                raise UpstreamTimeout(
                    f"GitLab did not delete {name} within {seconds:g} seconds; try again.",
                    code="gitlab_timeout",
                ) from None
        if process.returncode == 0:
            # gone either way now; GitLab's cached branch list may still show it
            self._deleted[(caller.name, project.full_path.lower(), name)] = True
            answer = json_or_none(out.decode(errors="replace"))
            return bool(answer.get("deleted")) if isinstance(answer, dict) else False
        why = err.decode(errors="replace").strip().splitlines()[-1:] or ["no reason given"]
        log.warning("deleting %s of %s for %s failed: %s", name, project.full_path,
                    caller.name, why[0])
        if "Authentication failed" in why[0]:
            raise Unauthorized(LOGIN_AGAIN, code="gitlab_token_expired")
        if any(word in why[0] for word in ("403", "rejected", "failed to push")):
            raise Forbidden(
                f"GitLab refused to delete {name}: deleting a branch needs the Developer role "
                "and a branch that is not protected.",
                code="branch_not_deleted",
            )
        raise UpstreamError(
            f"GitLab did not delete {name}; try again shortly.", code="branch_not_deleted"
        )

    # ---- projects --------------------------------------------------------------------------

    def _project_api(self, caller: Caller, target: Target | Ref) -> str:
        """`projects/<path>`, or `projects/<id>` once this user's lookup saw the project moved."""
        moved = self._moved.get((caller.name, target.full_path.lower()))
        if moved is not None:
            return f"projects/{moved[0]}"
        return f"projects/{quote(target.full_path, safe='')}"

    def _remember_path(
        self, caller: Caller, target: Target | Ref, project: dict[str, Any]
    ) -> None:
        """Note a moved project's id and current path (case-only differences are no move)."""
        current, ident = project.get("path_with_namespace"), project.get("id")
        key = (caller.name, target.full_path.lower())
        if isinstance(current, str) and isinstance(ident, int) and current.lower() != key[1]:
            self._moved[key] = (ident, current)

    async def _member_level(self, caller: Caller, project_id: int) -> int:
        """The role GitLab's `members/all/:user_id` gives: the highest over direct, inherited,
        shared and invited-group membership (0 when none: 404)."""
        user_id = caller.git_user_id or await self._user_id(caller)
        answer = await self.client.get(caller, f"projects/{project_id}/members/all/{user_id}")
        if answer.status in (403, 404):
            return 0
        expect_ok(answer, "reading your membership")
        level = answer.body.get("access_level") if isinstance(answer.body, dict) else None
        return level if isinstance(level, int) else 0

    async def _user_id(self, caller: Caller) -> int:
        """The token's GitLab user id, for a login stored without the user record."""
        answer = await self.client.get(caller, "user")
        expect_ok(answer, "reading your GitLab user")
        user_id = answer.body.get("id") if isinstance(answer.body, dict) else None
        if not isinstance(user_id, int):
            raise UpstreamError("GitLab answered /user without an id.", code="gitlab_error")
        return user_id


def _branch(item: Any) -> Branch | None:
    """A branch of GitLab's branches API: name, tip commit and the tip's commit date."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return None
    commit = item.get("commit")
    if not isinstance(commit, dict):
        return None
    sha = commit.get("id")
    if not isinstance(sha, str):
        return None
    return Branch(item["name"], sha, _utc(commit.get("committed_date")))


def _utc(value: Any) -> str | None:
    """An ISO 8601 date as UTC with `Z`, seconds precision; None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _level(project: Any, *keys: str) -> int:
    """Highest non-null of project_access and group_access (or of `keys`); a visible
    non-member (an instance admin too) has 0."""
    permissions = (project or {}).get("permissions") or {}
    levels = [
        (permissions.get(key) or {}).get("access_level")
        for key in keys or ("project_access", "group_access")
    ]
    return max((lvl for lvl in levels if isinstance(lvl, int)), default=0)


def _root_repository(repositories: Any, target: Target) -> dict[str, Any] | None:
    """The repository named after the project itself (GitLab gives it the empty name)."""
    if not isinstance(repositories, list):
        return None
    wanted = target.full_path.lower()
    for repository in repositories:
        if not isinstance(repository, dict) or not isinstance(repository.get("id"), int):
            continue
        if repository.get("name") == "" or repository.get("path") == wanted:
            return repository
    return None
