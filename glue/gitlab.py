"""The GitLab provider: access, commits and per-commit images from GitLab API v4.

Every call acts with the user's own GitLab token (`Caller.git_token`, from the
hub's auth_state), so GitLab decides what the user may see; we never hold a
token of our own. The token travels only in the Authorization header: it is
never put in a URL, a log line or an exception message, and redirects are not
followed so it cannot be forwarded to another host.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from . import metrics
from .config import Config
from .errors import (
    Forbidden,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .provider import Caller
from .target import Ref, Target

log = logging.getLogger(__name__)

LOGIN_AGAIN = "Your GitLab login has expired or was revoked; log in again to renew it."


class GitLabProvider:
    """Asks GitLab, as the caller, what they may do with a project and which image to run."""

    needs_token = True

    def __init__(self, config: Config):
        provider = config["provider"]
        self.url = provider["url"].rstrip("/")
        self.api = f"{self.url}/api/v4"
        self.registry: str | None = (provider.get("registry") or "").rstrip("/") or None
        self.timeout = float(provider["timeoutSeconds"])
        self.config = config
        # created on first use: the provider may be built outside a running event loop
        self._session: aiohttp.ClientSession | None = None

    # ---- GitProvider -----------------------------------------------------------------------

    async def access_level(self, caller: Caller, target: Target) -> int | None:
        """Highest of project and group access; None when GitLab hides the project (404)."""
        status, project = await self._get(caller, _project_path(target))
        if status == 404:
            return None
        self._expect_ok(status, f"reading project {target.full_path}")
        return _level(project)

    async def commit_exists(self, caller: Caller, target: Target) -> bool:
        path = f"{_project_path(target)}/repository/commits/{target.commit_sha}"
        status, commit = await self._get(caller, path)
        if status == 404:
            return False
        if status == 403:
            raise Forbidden(
                f"Your access to {target.full_path} does not include reading its code; "
                "ask a maintainer for the Reporter role or higher.",
                code="insufficient_access",
            )
        self._expect_ok(status, f"reading commit {target.commit_sha[:7]}")
        # this endpoint also takes branch and tag names: only the exact sha counts
        return isinstance(commit, dict) and commit.get("id") == target.commit_sha

    def clone_url(self, target: Target) -> str:
        return f"{self.url}/{target.full_path}.git"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- registry --------------------------------------------------------------------------

    def commit_tag(self, sha: str) -> str:
        tag: str = self.config["images"]["commitTag"]
        return tag.replace("{sha}", sha).replace("{sha7}", sha[:7])

    async def commit_image(self, caller: Caller, target: Target) -> str | None:
        """The image reference if the commit's tag exists in the project's root repository."""
        base = f"{_project_path(target)}/registry/repositories"
        status, repositories = await self._get(caller, base)
        if status in (403, 404):  # registry disabled, private, or project hidden
            return None
        self._expect_ok(status, f"listing the registry of {target.full_path}")
        root = _root_repository(repositories, target)
        if root is None:
            return None
        tag = self.commit_tag(target.commit_sha)
        status, details = await self._get(caller, f"{base}/{root['id']}/tags/{quote(tag, safe='')}")
        if status in (403, 404):
            return None
        self._expect_ok(status, f"reading image tag {tag} of {target.full_path}")
        if self.registry:
            return f"{self.registry}/{root.get('path') or target.full_path.lower()}:{tag}"
        location = details.get("location") if isinstance(details, dict) else None
        return location or (f"{root['location']}:{tag}" if root.get("location") else None)

    # ---- HTTP ------------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"Accept": "application/json"},
            )
        return self._session

    async def _get(self, caller: Caller, path: str) -> tuple[int, Any]:
        """GET an API path as the caller: (status, JSON body or None); raises on outages and 401."""
        if not caller.git_token:
            raise Unauthorized(
                "No GitLab login is stored for you; log in again.", code="gitlab_token_expired"
            )
        url = URL(f"{self.api}/{path}", encoded=True)  # keep %2F in project paths
        headers = {"Authorization": f"Bearer {caller.git_token}"}
        started = time.monotonic()
        try:
            async with self._client().get(url, headers=headers, allow_redirects=False) as resp:
                body = await resp.json(content_type=None) if resp.status < 300 else None
                status = resp.status
        except TimeoutError:
            raise self._failed(started, "timeout", UpstreamTimeout(
                f"GitLab did not answer within {self.timeout:g} seconds; try again shortly.",
                code="gitlab_timeout",
            )) from None
        except (aiohttp.ClientConnectionError, OSError):
            raise self._failed(started, "unavailable", UpstreamUnavailable(
                f"GitLab at {self.url} cannot be reached; try again shortly.",
                code="gitlab_unavailable",
            )) from None
        except (aiohttp.ClientError, ValueError):
            raise self._failed(started, "invalid_response", UpstreamError(
                "GitLab answered with something that is not valid JSON.", code="gitlab_error"
            )) from None
        error = "server_error" if status >= 500 else "rate_limited" if status == 429 else None
        metrics.observe_upstream("gitlab", "GET", time.monotonic() - started, error)
        log.debug("GitLab GET %s for %s: %s", url.path, caller.name, status)
        self._checked(status)
        return status, body

    @staticmethod
    def _failed(started: float, kind: str, error: UpstreamError) -> UpstreamError:
        """Count a call that got no usable answer, and give back the error to raise."""
        metrics.observe_upstream("gitlab", "GET", time.monotonic() - started, kind)
        return error

    def _checked(self, status: int) -> None:
        """Turn answers every call treats alike into errors; the caller handles the rest."""
        if status == 401:
            raise Unauthorized(LOGIN_AGAIN, code="gitlab_token_expired")
        if status == 429:
            raise UpstreamUnavailable(
                "GitLab is limiting requests right now; try again in a minute.",
                code="gitlab_unavailable",
            )
        if status >= 500:
            raise UpstreamError(
                f"GitLab failed to answer (HTTP {status}); try again shortly.", code="gitlab_error"
            )

    def _expect_ok(self, status: int, doing: str) -> None:
        if status != 200:
            raise UpstreamError(
                f"GitLab answered HTTP {status} when {doing}.", code="gitlab_error"
            )


    # ---- refs, files and pipelines (links by ref, checks before a launch, image status) ----

    async def resolve_ref(self, caller: Caller, ref: Ref) -> str | None:
        """GitLab's commits API takes a branch, a tag or a short sha; '' asks the project
        for its default branch first. None: no such ref, or a project hidden from the caller."""
        name = ref.ref
        if not name:
            status, project = await self._get(caller, _project_path(ref))
            if status == 404:
                return None
            self._expect_ok(status, f"reading project {ref.full_path}")
            name = (project or {}).get("default_branch") or ""
            if not name:
                return None  # an empty repository
        path = f"{_project_path(ref)}/repository/commits/{quote(name, safe='')}"
        status, commit = await self._get(caller, path)
        if status in (403, 404):
            return None
        self._expect_ok(status, f"resolving {name} in {ref.full_path}")
        sha = commit.get("id") if isinstance(commit, dict) else None
        return sha if isinstance(sha, str) else None

    async def file_exists(self, caller: Caller, target: Target) -> bool:
        """`HEAD /projects/:id/repository/files/:path?ref=<sha>`: 200 or 404, no content."""
        if not target.notebook:
            return True
        path = (
            f"{_project_path(target)}/repository/files/{quote(target.notebook, safe='')}"
            f"?ref={target.commit_sha}"
        )
        status = await self._head(caller, path)
        if status == 404:
            return False
        self._expect_ok(status, f"looking for {target.notebook} in {target.full_path}")
        return True

    async def pipeline_status(self, caller: Caller, target: Target) -> str | None:
        """The newest pipeline for the sha (GitLab lists them newest first); None when there
        is none or the caller may not read pipelines (CI disabled, not a member)."""
        path = (
            f"{_project_path(target)}/pipelines?sha={target.commit_sha}"
            "&order_by=id&sort=desc&per_page=1"
        )
        status, pipelines = await self._get(caller, path)
        if status in (403, 404):
            return None
        self._expect_ok(status, f"listing the pipelines of {target.full_path}")
        if not isinstance(pipelines, list) or not pipelines:
            return None
        newest = pipelines[0].get("status") if isinstance(pipelines[0], dict) else None
        return newest if isinstance(newest, str) else None

    async def _head(self, caller: Caller, path: str) -> int:
        """HEAD an API path as the caller: only its status; outages and 401 raise as `_get`'s."""
        if not caller.git_token:
            raise Unauthorized(
                "No GitLab login is stored for you; log in again.", code="gitlab_token_expired"
            )
        url = URL(f"{self.api}/{path}", encoded=True)
        headers = {"Authorization": f"Bearer {caller.git_token}"}
        started = time.monotonic()
        try:
            async with self._client().head(url, headers=headers, allow_redirects=False) as resp:
                status = resp.status
        except TimeoutError:
            raise self._failed(started, "timeout", UpstreamTimeout(
                f"GitLab did not answer within {self.timeout:g} seconds; try again shortly.",
                code="gitlab_timeout",
            )) from None
        except (aiohttp.ClientError, OSError):
            raise self._failed(started, "unavailable", UpstreamUnavailable(
                f"GitLab at {self.url} cannot be reached; try again shortly.",
                code="gitlab_unavailable",
            )) from None
        error = "server_error" if status >= 500 else "rate_limited" if status == 429 else None
        metrics.observe_upstream("gitlab", "HEAD", time.monotonic() - started, error)
        self._checked(status)
        return status


def _project_path(target: Target | Ref) -> str:
    return f"projects/{quote(target.full_path, safe='')}"


def _level(project: Any) -> int:
    """Highest non-null of project_access and group_access; a visible non-member has 0."""
    permissions = (project or {}).get("permissions") or {}
    levels = [
        (permissions.get(key) or {}).get("access_level")
        for key in ("project_access", "group_access")
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
