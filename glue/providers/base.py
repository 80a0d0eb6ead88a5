"""The git provider interface: who may launch a project, which commits exist, what to clone and run.

Two providers implement it: `local` (bare repositories under one directory)
and `gitlab` (GitLab API v4). The glue and the hub-side hooks only see this
interface, so adding a provider touches no route or spawner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from glue.core.target import Ref, Target, Wanted

# GitLab's access levels; a provider answers in these units
NO_ACCESS, GUEST, PLANNER, REPORTER, DEVELOPER, MAINTAINER, OWNER = 0, 10, 15, 20, 30, 40, 50
# hub users of the local provider have no email: theirs is marked as not deliverable
LOCAL_EMAIL_DOMAIN = "users.renku-notebooks.invalid"
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
    """The person a request acts for: hub user name and, for GitLab, their git token and their
    GitLab user id (effective access through shares is asked per user id)."""

    name: str
    git_token: str | None = field(default=None, repr=False)
    git_user_id: int | None = None
    #: the name and email the user's commits carry, from their GitLab record when there is one
    git_name: str | None = None
    git_email: str | None = None
    #: a GitLab instance administrator (`is_admin`): GitLab shows them every project, but
    #: gives them no role in it, so they are refused like any non-member (said so)
    git_admin: bool = False

    def identity(self) -> tuple[str, str]:
        """`user.name` and `user.email` of the session's git: GitLab's, else the hub user's."""
        return self.git_name or self.name, self.git_email or f"{self.name}@{LOCAL_EMAIL_DOMAIN}"

    @classmethod
    def from_auth_state(cls, name: str, auth_state: dict[str, Any] | None) -> Caller:
        """The caller as the glue and the hub side both build it from the hub's auth_state;
        oauthenticator keeps the GitLab user record under `gitlab_user`."""
        state = auth_state or {}
        token = state.get("access_token")
        user = state.get("gitlab_user")
        record = user if isinstance(user, dict) else {}
        user_id = record.get("id")
        # GitLab's /user answer for its own user: `commit_email` is what they commit as
        emails = (record.get(k) for k in ("commit_email", "email", "public_email"))
        return cls(
            name,
            token if isinstance(token, str) and token else None,
            user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else None,
            _text(record.get("name")),
            next(filter(None, map(_text, emails)), None),
            record.get("is_admin") is True,
        )


@dataclass(frozen=True)
class Branch:
    """A branch of a project: its name, its tip and the tip's commit date (ISO 8601, UTC)."""

    name: str
    commit: str
    date: str | None


def _text(value: Any) -> str | None:
    """A one-line string for git config, or None."""
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())
    return value or None


class GitProvider(Protocol):
    #: whether calls need `Caller.git_token` (read from the hub's auth_state)
    needs_token: bool

    async def access_level(self, caller: Caller, target: Target | Ref) -> int | None:
        """The caller's access level on the project, or None if they cannot see it."""

    def current_target(self, caller: Caller, target: Wanted) -> Wanted:
        """The target at the project's current path, when the last access check of this
        caller saw the project moved (GitLab keeps old paths as redirects)."""

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

    async def branches(self, caller: Caller, project: Target | Ref, prefix: str) -> list[Branch]:
        """The project's branches whose names start with `prefix` (autosaves), as the caller
        sees them."""

    async def delete_branch(self, caller: Caller, project: Target | Ref, name: str) -> bool:
        """Delete the branch with the caller's own rights; False when there is none."""

    def clone_url(self, target: Target | Ref) -> str:
        """Where the clone step fetches from; never carries credentials."""

    async def close(self) -> None:
        """Release connections."""
