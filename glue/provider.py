"""The git provider interface: who may launch a project, which commits exist, what to clone and run.

Two providers implement it: `local` (bare repositories under one directory)
and `gitlab` (GitLab API v4). The glue and the hub-side hooks only see this
interface, so adding a provider touches no route or spawner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import Config
from .target import Ref, Target

# GitLab's access levels; a provider answers in these units
NO_ACCESS, GUEST, PLANNER, REPORTER, DEVELOPER, MAINTAINER, OWNER = 0, 10, 15, 20, 30, 40, 50
LEVEL_NAMES = {
    GUEST: "Guest",
    PLANNER: "Planner",
    REPORTER: "Reporter",
    DEVELOPER: "Developer",
    MAINTAINER: "Maintainer",
    OWNER: "Owner",
}


@dataclass(frozen=True)
class Caller:
    """The person a request acts for: hub user name and, for GitLab, their git token."""

    name: str
    git_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_auth_state(cls, name: str, auth_state: dict[str, Any] | None) -> Caller:
        """The caller as the glue and the hub side both build it from the hub's auth_state."""
        token = (auth_state or {}).get("access_token")
        return cls(name, token if isinstance(token, str) and token else None)


class GitProvider(Protocol):
    #: whether calls need `Caller.git_token` (read from the hub's auth_state)
    needs_token: bool

    async def access_level(self, caller: Caller, target: Target) -> int | None:
        """The caller's access level on the project, or None if they cannot see it."""

    async def commit_exists(self, caller: Caller, target: Target) -> bool:
        """Whether the commit is in the project."""

    async def commit_image(self, caller: Caller, target: Target) -> str | None:
        """The image built for this commit, if the provider knows one; the policy of which
        images may run (and the fallback) is `launch.choose_image`'s, not the provider's."""

    async def resolve_ref(self, caller: Caller, ref: Ref) -> str | None:
        """The full sha a branch, tag or short sha names ('': the default branch); None when
        the project has no such ref or the caller cannot see the project."""

    async def file_exists(self, caller: Caller, target: Target) -> bool:
        """Whether `target.notebook` is a file in the repository at that commit."""

    async def pipeline_status(self, caller: Caller, target: Target) -> str | None:
        """The status of the newest CI pipeline for the commit (GitLab's names: pending,
        running, success, failed, ...), None when there is none or no CI to ask."""

    def clone_url(self, target: Target) -> str:
        """Where the clone step fetches from; never carries credentials."""

    async def close(self) -> None:
        """Release connections."""


def make_provider(config: Config) -> GitProvider:
    kind = config["provider"]["kind"]
    if kind == "local":
        from .local import LocalProvider

        return LocalProvider(config)
    from .gitlab import GitLabProvider

    return GitLabProvider(config)
