"""The local git provider: bare repositories under one directory, access from the config."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .config import Config
from .provider import DEVELOPER, Caller
from .target import Target


class LocalProvider:
    """Projects are `<root>/<namespace>/<project>.git`; the embedded default and tests use it."""

    needs_token = False

    def __init__(self, config: Config):
        self.root = Path(config["provider"]["root"]).resolve()
        self.access = config["provider"].get("access")

    def _repo(self, target: Target) -> Path | None:
        path = (self.root / target.namespace / f"{target.project}.git").resolve()
        # target segments are validated already; this guards against symlinks leading out
        if not path.is_relative_to(self.root) or not path.is_dir():
            return None
        return path

    async def access_level(self, caller: Caller, target: Target) -> int | None:
        if self._repo(target) is None:
            return None
        if self.access is None:
            return DEVELOPER
        for user in (caller.name, "*"):
            levels = self.access.get(user, {})
            for project in (target.full_path, "*"):
                if project in levels:
                    return levels[project]
        return None

    def current_target(self, caller: Caller, target: Target) -> Target:
        """Local repositories are never moved."""
        return target

    async def commit_exists(self, caller: Caller, target: Target) -> bool:
        repo = self._repo(target)
        if repo is None:
            return False
        process = await asyncio.create_subprocess_exec(
            "git",
            "-C",
            str(repo),
            "cat-file",
            "-e",
            f"{target.commit_sha}^{{commit}}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return await process.wait() == 0

    async def commit_image(self, caller: Caller, target: Target) -> str | None:
        """Local repositories have no registry: every launch runs the default image."""
        return None

    def clone_url(self, target: Target) -> str:
        return (self.root / target.namespace / f"{target.project}.git").as_uri()

    async def close(self) -> None:
        return None
