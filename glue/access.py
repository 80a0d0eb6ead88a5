"""Decide whether a caller may see or launch a commit, with a short per-(user, project) cache.

Used by the glue before it asks the hub for anything, and again by the
hub-side spawner hooks, which trust no user_options.
"""

from __future__ import annotations

import time

from .errors import Forbidden, NotFound
from .provider import LEVEL_NAMES, Caller, GitProvider
from .target import Target


class Access:
    """Access checks through a provider; status reads may reuse a recent decision."""

    def __init__(self, provider: GitProvider, min_level: int, cache_seconds: float = 0):
        self.provider = provider
        self.min_level = min_level
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[str, str], tuple[float, int | None]] = {}
        self.hits = 0
        self.misses = 0

    async def level(self, caller: Caller, target: Target, *, fresh: bool) -> int | None:
        key = (caller.name, target.full_path)
        now = time.monotonic()
        cached = self._cache.get(key)
        if not fresh and cached and now - cached[0] < self.cache_seconds:
            self.hits += 1
            return cached[1]
        self.misses += 1
        level = await self.provider.access_level(caller, target)
        if self.cache_seconds > 0:
            self._prune(now)
            self._cache[key] = (now, level)
        return level

    def _prune(self, now: float) -> None:
        """Drop expired decisions so the cache stays as small as the active user set."""
        if len(self._cache) > 1024:
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < self.cache_seconds}

    async def check(self, caller: Caller, target: Target, *, fresh: bool = False) -> int:
        """Raise NotFound (project hidden) or Forbidden (below the level needed)."""
        level = await self.level(caller, target, fresh=fresh)
        if level is None:
            raise NotFound(
                f"Project {target.full_path} was not found, or you cannot see it.",
                code="project_not_found",
            )
        if level < self.min_level:
            needed = LEVEL_NAMES.get(self.min_level, str(self.min_level))
            raise Forbidden(
                f"Launching {target.full_path} needs {needed} access ({self.min_level}) "
                f"or higher; you have {LEVEL_NAMES.get(level, 'no')} access.",
                code="insufficient_access",
            )
        return level

    async def check_launch(self, caller: Caller, target: Target) -> None:
        """A launch always asks the provider again, then checks the commit exists."""
        await self.check(caller, target, fresh=True)
        if not await self.provider.commit_exists(caller, target):
            raise NotFound(
                f"Commit {target.commit_sha} was not found in {target.full_path}.",
                code="commit_not_found",
            )
