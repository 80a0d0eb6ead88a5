"""Decide whether a caller may see or launch a commit, with a short per-(user, project) cache.

Used by the glue before it asks the hub for anything, and again by the
hub-side spawner hooks, which trust no user_options.
"""

from __future__ import annotations

import asyncio

from cachetools import TTLCache

from glue.core import metrics
from glue.core.errors import Forbidden, NotFound
from glue.core.target import Ref, Target, Wanted
from glue.providers.base import LEVEL_NAMES, NO_ACCESS, Caller, GitProvider

CACHE_MAX = 8192


class Access:
    """Access checks through a provider; status reads may reuse a recent decision."""

    def __init__(self, provider: GitProvider, min_level: int, cache_seconds: float = 0):
        self.provider = provider
        self.min_level = min_level
        self.cache_seconds = cache_seconds
        # (user, project) -> access level (None: hidden); TTLCache wants a positive ttl
        self._cache: TTLCache[tuple[str, str], int | None] = TTLCache(
            CACHE_MAX, cache_seconds or 1
        )

    async def level(self, caller: Caller, target: Target | Ref, *, fresh: bool) -> int | None:
        key = (caller.name, target.full_path)
        if not fresh:
            try:
                cached = self._cache[key]
            except KeyError:
                pass
            else:
                metrics.ACCESS_CACHE_HITS.inc()
                return cached
        metrics.ACCESS_CACHE_MISSES.inc()
        level = await self.provider.access_level(caller, target)
        if self.cache_seconds > 0:
            self._cache[key] = level
        return level

    async def check(self, caller: Caller, target: Target | Ref, *, fresh: bool = False) -> int:
        """Raise NotFound (project hidden) or Forbidden (below the level needed)."""
        level = await self.level(caller, target, fresh=fresh)
        if level is None:
            raise NotFound(
                f"Project {target.full_path} was not found, or you cannot see it.",
                code="project_not_found",
            )
        if level < self.min_level:
            needed = LEVEL_NAMES.get(self.min_level, str(self.min_level))
            admin = ""
            if caller.git_admin and level == NO_ACCESS:
                admin = (
                    " Being a GitLab administrator is not enough: GitLab gives administrators "
                    "no role in projects they are not members of; ask a maintainer to add you."
                )
            raise Forbidden(
                f"Launching {target.full_path} needs {needed} access ({self.min_level}) "
                f"or higher; you have {LEVEL_NAMES.get(level, 'no')} access.{admin}",
                code="insufficient_access",
            )
        return level

    def current(self, caller: Caller, target: Wanted) -> Wanted:
        """The target at the project's current path: a check may have found it moved (GitLab
        answers old paths with a redirect), and servers are named after where it lives now."""
        return self.provider.current_target(caller, target)

    async def check_launch(self, caller: Caller, target: Target) -> None:
        """A launch always asks the provider again, and whether the commit exists.

        Both questions go out at once (they do not depend on each other); an
        access refusal wins over a missing commit, which a hidden project also
        looks like, so nobody learns about commits of projects they cannot see.
        """
        level, commit = await asyncio.gather(
            self.check(caller, target, fresh=True),
            self.provider.commit_exists(caller, target),
            return_exceptions=True,
        )
        if isinstance(level, BaseException):
            raise level
        if isinstance(commit, BaseException):
            raise commit
        if not commit:
            raise NotFound(
                f"Commit {target.commit_sha} was not found in {target.full_path}.",
                code="commit_not_found",
            )
