"""Decide whether a caller may see or launch a commit, with a short per-(user, project) cache.

Used by the glue before it asks the hub for anything, and again by the
hub-side spawner hooks, which trust no user_options.
"""

from __future__ import annotations

from cachetools import TTLCache

from .errors import Forbidden, NotFound
from .provider import LEVEL_NAMES, Caller, GitProvider
from .target import Target

CACHE_MAX = 8192
MISSING = object()


class Access:
    """Access checks through a provider; status reads may reuse a recent decision."""

    def __init__(self, provider: GitProvider, min_level: int, cache_seconds: float = 0):
        self.provider = provider
        self.min_level = min_level
        self.cache_seconds = cache_seconds
        # (user, project) -> access level (None: hidden); TTLCache wants a positive ttl
        self._cache: TTLCache[tuple[str, str], int | None] = TTLCache(CACHE_MAX, cache_seconds or 1)
        self.hits = 0
        self.misses = 0

    async def level(self, caller: Caller, target: Target, *, fresh: bool) -> int | None:
        key = (caller.name, target.full_path)
        cached = MISSING if fresh else self._cache.get(key, MISSING)
        if cached is not MISSING:
            self.hits += 1
            return cached
        self.misses += 1
        level = await self.provider.access_level(caller, target)
        if self.cache_seconds > 0:
            self._cache[key] = level
        return level

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
