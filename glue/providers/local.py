"""The local git provider: bare repositories under one directory, access from the config."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from glue.core.config import Config
from glue.core.errors import UpstreamError
from glue.core.target import Ref, Target, Wanted
from glue.providers.base import DEVELOPER, Branch, Caller


class LocalProvider:
    """Projects are `<root>/<namespace>/<project>.git`; the embedded default and tests use it."""

    needs_token = False

    def __init__(self, config: Config):
        self.root = Path(config["provider"]["root"]).resolve()
        self.access = config["provider"].get("access")

    def _repo(self, target: Target | Ref) -> Path | None:
        path = (self.root / target.namespace / f"{target.project}.git").resolve()
        # target segments are validated already; this guards against symlinks leading out
        if not path.is_relative_to(self.root) or not path.is_dir():
            return None
        return path

    async def access_level(self, caller: Caller, target: Target | Ref) -> int | None:
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

    def current_target(self, caller: Caller, target: Wanted) -> Wanted:
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

    async def resolve_ref(self, caller: Caller, ref: Ref) -> str | None:
        """`git rev-parse` in the project's repository; '' is HEAD, the default branch."""
        repo = self._repo(ref)
        if repo is None:
            return None
        status, out = await _git(
            repo, "rev-parse", "--verify", "--quiet", "--end-of-options",
            f"{ref.ref or 'HEAD'}^{{commit}}",
        )
        return out.strip() if status == 0 and out.strip() else None

    async def file_exists(self, caller: Caller, target: Target) -> bool:
        """A blob at that path in that commit (`git cat-file`), as GitLab's files API says."""
        repo = self._repo(target)
        if repo is None or not target.notebook:
            return repo is not None
        status, out = await _git(repo, "cat-file", "-t", f"{target.commit_sha}:{target.notebook}")
        return status == 0 and out.strip() == "blob"

    async def pipeline_status(self, caller: Caller, target: Target) -> str | None:
        """Local repositories have no CI."""
        return None

    async def branches(
        self, caller: Caller, project: Target | Ref, prefix: str
    ) -> list[Branch]:
        """`git for-each-ref` below `refs/heads/<prefix>`, in the bare repository itself."""
        repo = self._repo(project)
        if repo is None:
            return []
        status, out = await _git(
            repo, "for-each-ref", "--format=%(refname)%00%(objectname)%00%(committerdate:unix)",
            f"refs/heads/{prefix}",
        )
        found = []
        for line in out.splitlines() if status == 0 else []:
            ref, commit, when = line.split("\0")
            date = datetime.fromtimestamp(int(when), UTC) if when.isdigit() else None
            found.append(Branch(ref.removeprefix("refs/heads/"), commit, _iso(date)))
        return found

    async def delete_branch(self, caller: Caller, project: Target | Ref, name: str) -> bool:
        """`git update-ref -d`, only if the branch is there (the ref's value is checked)."""
        repo = self._repo(project)
        if repo is None:
            return False
        ref = f"refs/heads/{name}"
        status, out = await _git(repo, "rev-parse", "--verify", "--quiet", ref)
        if status != 0 or not out.strip():
            return False
        status, _ = await _git(repo, "update-ref", "-d", ref, out.strip())
        if status != 0:
            raise UpstreamError(
                f"The branch {name} could not be deleted from the repository; try again.",
                code="branch_not_deleted",
            )
        return True

    def clone_url(self, target: Target | Ref) -> str:
        return (self.root / target.namespace / f"{target.project}.git").as_uri()

    async def close(self) -> None:
        return None


def _iso(date: datetime | None) -> str | None:
    return date.isoformat(timespec="seconds").replace("+00:00", "Z") if date else None


async def _git(repo: Path, *args: str) -> tuple[int, str]:
    """Run a git command in `repo`: (exit status, stdout)."""
    process = await asyncio.create_subprocess_exec(
        "git", "-C", str(repo), *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode(errors="replace")
