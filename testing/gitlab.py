"""A small GitLab stand-in: API v4, OAuth and git smart HTTP, written from GitLab's documentation.

Tests cannot reach a real GitLab, yet the provider, the clone step and the
hub's OAuth login must be checked against GitLab's real answers: field names,
status codes, which access a token grants and how git authenticates. This app
answers the small part of GitLab they use, from in-memory state built through
a Python API (or a YAML fixture when run standalone), and records every
request so tests can check where tokens travel.

    standin = GitLabStandIn()
    standin.add_user("alice", token="alice-token")
    standin.add_project("group/demo", members={"alice": 30}, repo=bare_repo)
    url = await standin.start()          # http://127.0.0.1:<port>
    ...
    await standin.stop()

Standalone (e.g. in a kind cluster):

    python -m testing.gitlab --port 8080 --fixture fixture.yaml
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import fnmatch
import hashlib
import itertools
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import yaml
from aiohttp import web

GUEST, REPORTER, DEVELOPER, MAINTAINER, OWNER = 10, 20, 30, 40, 50
NOTIFICATION_GLOBAL = 3
OAUTH_TOKEN_SECONDS = 7200
GITLAB_VERSION = "17.11.0"
# doc/api/pipelines.md: the statuses a pipeline can have
PIPELINE_STATUSES = frozenset({
    "created", "waiting_for_resource", "preparing", "pending", "running", "success", "failed",
    "canceled", "skipped", "manual", "scheduled",
})
NOT_FOUND_PAGE = (
    "The project you were looking for could not be found or you don't have permission to view it."
)
# an application registered as the README says; tests register others to see refusals
DEFAULT_APP_SCOPES = "read_user read_api read_repository write_repository"
# which token scopes allow what (lib/api/api.rb, lib/gitlab/auth.rb's abilities per scope)
API_READ_SCOPES = frozenset({"api", "read_api"})
USER_READ_SCOPES = API_READ_SCOPES | {"read_user"}
GIT_FETCH_SCOPES = frozenset({"api", "read_api", "read_repository", "write_repository"})
GIT_PUSH_SCOPES = frozenset({"api", "write_repository"})
PER_PAGE, MAX_PER_PAGE = 20, 100
MAX_GIT_BODY = 1 << 30
BLOCKED = "403 Forbidden - Your account has been blocked."
TERMS = (
    "403 Forbidden - You ({user}) must accept the Terms of Service in order to perform this "
    "action. Please access GitLab from a web browser to accept these terms."
)
EXPIRED = "Token is expired. You can either do re-authorization or token refresh."
REVOKED = "Token was revoked. You have to re-authorize from the user."
THROTTLED = "This endpoint has been requested too many times. Try again later."
# lib/gitlab/checks/branch_check.rb: pushes to protected branches (names or wildcards such
# as `notebooks/*`); by default only Maintainers push to one and nobody force-pushes
DELETE_PROTECTED = "You can only delete protected branches using the web interface."
DELETE_PROTECTED_ROLE = (
    "You are not allowed to delete protected branches from this project. Only a project "
    "maintainer or owner can delete a protected branch."
)
FORCE_PUSH_PROTECTED = (
    "You are not allowed to force push code to a protected branch on this project."
)
PUSH_PROTECTED = "You are not allowed to push code to protected branches on this project."
CREATE_PROTECTED = "You are not allowed to create protected branches on this project."
# ee/lib/ee/gitlab/checks/push_rules/commit_check.rb (Premium push rules)
PUSH_RULES = frozenset({"commit_committer_check", "member_check"})
COMMITTER_NOT_VERIFIED = "Committer email '{email}' is not verified."
COMMITTER_NOT_ALLOWED = (
    "You cannot push commits for '{email}'. You can only push commits that were committed "
    "with one of your own verified emails."
)
AUTHOR_NOT_MEMBER = "Author '{email}' is not a member of team"
MOVED_NOT_GET = "Non GET methods are not allowed for moved projects"
# lib/api/branches.rb: `cache_action([user_project, :branches, current_user, declared_params],
# expires_in: 30.seconds)`; these are the list's declared parameters
BRANCH_LIST_SECONDS = 30.0
BRANCH_LIST_PARAMS = ("search", "regex", "sort", "page_token", "page", "per_page", "pagination")
# Doorkeeper's error view, which GitLab renders itself (`doorkeeper/authorizations/error`)
INVALID_SCOPE = "The requested scope is invalid, unknown, or malformed."
ERROR_PAGE = """<!DOCTYPE html>
<html><head><title>An error has occurred</title></head>
<body><main><h3>An error has occurred</h3><p>{description}</p></main></body></html>
"""
# GitLab checks a push before it lands (gitlab-shell asks the API's /allowed from its
# pre-receive hook); this hook does the stand-in's part from what the request's handler put
# in its environment, then runs the repository's own
PRE_RECEIVE = f"""#!{sys.executable}
import fnmatch, os, subprocess, sys

ZERO = "0" * 40
data = sys.stdin.buffer.read()
env = os.environ
protected = [p for p in env.get("STANDIN_PROTECTED", "").split("\\n") if p]
rules = set(env.get("STANDIN_PUSH_RULES", "").split())
level = int(env.get("STANDIN_LEVEL") or 0)
mine = {{e.lower() for e in env.get("STANDIN_PUSHER_EMAILS", "").split()}}
unverified = {{e.lower() for e in env.get("STANDIN_PUSHER_UNVERIFIED", "").split()}}
known = {{e.lower() for e in env.get("STANDIN_USER_EMAILS", "").split()}}


def refuse(message):
    print("GitLab: " + message, file=sys.stderr)
    sys.exit(1)


def git(*args):
    out = subprocess.run(["git", *args], capture_output=True, text=True)
    return out.returncode, out.stdout


for line in data.decode().splitlines():
    old, new, ref = line.split()
    if not ref.startswith("refs/heads/"):
        continue
    name = ref[len("refs/heads/"):]
    if any(fnmatch.fnmatchcase(name, p) for p in protected):
        if new == ZERO:
            refuse({DELETE_PROTECTED_ROLE!r} if level < {MAINTAINER} else {DELETE_PROTECTED!r})
        if old != ZERO and git("merge-base", "--is-ancestor", old, new)[0]:
            refuse({FORCE_PUSH_PROTECTED!r})
        if level < {MAINTAINER}:
            refuse({CREATE_PROTECTED!r} if old == ZERO else {PUSH_PROTECTED!r})
    if new == ZERO or not rules:
        continue
    _, listed = git("rev-list", "--format=%ae%x00%ce", new, "--not", "--branches", "--tags")
    for entry in listed.splitlines():
        if entry.startswith("commit ") or "\\0" not in entry:
            continue
        author, committer = (e.lower() for e in entry.split("\\0", 1))
        if "commit_committer_check" in rules and committer not in mine:
            template = {COMMITTER_NOT_VERIFIED!r} if committer in unverified else (
                {COMMITTER_NOT_ALLOWED!r})
            refuse(template.format(email=committer))
        if "member_check" in rules and author not in known:
            refuse({AUTHOR_NOT_MEMBER!r}.format(email=author))
if os.access("hooks/pre-receive", os.X_OK):
    sys.exit(subprocess.run(["hooks/pre-receive"], input=data).returncode)
"""
_ids = itertools.count(1)


@dataclass
class User:
    id: int
    username: str
    name: str
    email: str
    state: str = "active"  # or "blocked": every API call answers 403
    terms_accepted: bool = True  # False: 403 until the user accepts (when terms are enforced)
    is_admin: bool = False  # an instance admin sees every project, with no role in it
    commit_email: str | None = None  # `commit_email` in /user (the primary email when unset)
    # verified secondary addresses; `unverified` ones are known but not yet confirmed
    emails: set[str] = field(default_factory=set)
    unverified: set[str] = field(default_factory=set)

    def verified_emails(self) -> set[str]:
        return {self.email, *self.emails, *([self.commit_email] if self.commit_email else [])}


@dataclass
class Token:
    """A personal or OAuth access token; expired or revoked tokens answer 401."""

    value: str
    username: str
    expires_at: float | None = None
    revoked: bool = False
    scope: str = "api"

    def valid(self) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > time.time())

    def allows(self, scopes: frozenset[str]) -> bool:
        return bool(scopes & set(self.scope.split()))


@dataclass
class Group:
    id: int
    full_path: str
    members: dict[str, int]
    # groups invited into this group (Members > Invite a group): path -> maximum role
    shared_with: dict[str, int] = field(default_factory=dict)
    requests: set[str] = field(default_factory=set)  # users whose request to join is pending


@dataclass
class RegistryRepository:
    id: int
    name: str
    path: str
    location: str
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest


@dataclass
class Project:
    id: int
    full_path: str
    visibility: str
    members: dict[str, int]
    repo: Path | None
    registry_access: str = "enabled"  # enabled | private | disabled
    # groups the project is shared with (`shared_with_groups`): path -> maximum role
    shared_with: dict[str, int] = field(default_factory=dict)
    registry: dict[str, RegistryRepository] = field(default_factory=dict)  # name -> repository
    personal: bool = False  # in a user's namespace, not a group's
    protected: set[str] = field(default_factory=set)  # protected branch names or wildcards
    push_rules: set[str] = field(default_factory=set)  # some of PUSH_RULES (Premium)

    @property
    def namespace(self) -> str:
        return self.full_path.rpartition("/")[0]

    @property
    def path(self) -> str:
        return self.full_path.rpartition("/")[2]


@dataclass
class Pipeline:
    """A CI pipeline of one commit; tests move it through GitLab's statuses."""

    id: int
    iid: int
    sha: str
    ref: str
    status: str = "pending"
    created_at: str = "2024-01-01T00:00:00.000Z"


@dataclass
class OAuthApp:
    client_id: str
    client_secret: str
    redirect_uri: str
    scopes: str = DEFAULT_APP_SCOPES


@dataclass
class Grant:
    """An authorization code or refresh token, bound to its client (and redirect for codes)."""

    client_id: str
    username: str
    scope: str
    redirect_uri: str = ""
    code_challenge: str = ""  # PKCE (RFC 7636), as oauthenticator sends by default
    challenge_method: str = "plain"
    access_token: str = ""  # for a refresh grant: the access token a refresh invalidates

    def verifier_matches(self, verifier: str) -> bool:
        if not self.code_challenge:
            return True
        if self.challenge_method == "S256":
            digest = hashlib.sha256(verifier.encode()).digest()
            verifier = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        return secrets.compare_digest(verifier, self.code_challenge)


@dataclass
class RecordedRequest:
    method: str
    path: str  # raw path with query string, as sent
    headers: list[tuple[str, str]]


class GitLabStandIn:
    """In-memory GitLab: users, tokens, groups, projects, registry tags, OAuth apps."""

    def __init__(
        self, *, registry_host: str = "registry.gitlab.test", external_url: str | None = None
    ):
        self.registry_host = registry_host
        self.external_url = external_url  # None: the URL the request came in on
        self.users: dict[str, User] = {}
        self.tokens: dict[str, Token] = {}
        self.groups: dict[str, Group] = {}
        self.projects: dict[str, Project] = {}  # lower-cased full path -> project
        self.redirects: dict[str, Project] = {}  # lower-cased old path -> moved project
        self.oauth_apps: dict[str, OAuthApp] = {}
        self.oauth_user: str | None = None  # who /oauth/authorize approves for
        self.oauth_token_seconds = OAUTH_TOKEN_SECONDS
        self._codes: dict[str, Grant] = {}
        self._refresh: dict[str, Grant] = {}
        self.requests: list[RecordedRequest] = []
        self.pipelines: dict[str, list[Pipeline]] = {}  # lower-cased project path -> newest last
        self.ci_fail_status: int | None = None  # the pipelines API alone answers this status
        self.fail_status: int | None = None  # answer every request with this status
        self.delay = 0.0  # seconds every request waits before it is answered
        # a git fetch whose request names these bytes (a branch it asks for) is held until
        # `release_fetch` is set; `fetch_held` says one is waiting (a test interrupts then)
        self.hold_fetch: bytes | None = None
        self.fetch_held = threading.Event()
        self.release_fetch = threading.Event()
        self.throttled = 0  # how many of the next API requests answer 429
        # the scheme GitLab believes it serves (behind a TLS terminator Rack sees `http`):
        # the Locations it makes carry it; None: the scheme the request came in with
        self.external_scheme: str | None = None
        # GitLab before 16.9 counted a pending request to join the project's group as
        # Developer in `permissions.group_access` (MR 141364); True emulates such a release
        self.before_16_9 = False
        self.branch_list_seconds = BRANCH_LIST_SECONDS
        # (user, project id, declared params) -> (when, body, headers) of a branch list
        self._branch_lists: dict[tuple[str, int, tuple[tuple[str, str], ...]], Any] = {}
        self.retry_after: int | None = 1  # their Retry-After (None: sent without it)
        self._runner: web.AppRunner | None = None
        self._hooks: str | None = None  # the directory of PRE_RECEIVE while serving
        self.url = ""

    # ---- state -----------------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        token: str | None = None,
        *,
        expires_in: float | None = None,
        name: str | None = None,
        is_admin: bool = False,
    ) -> User:
        user = User(next(_ids), username, name or username.title(), f"{username}@example.test")
        user.is_admin = is_admin
        self.users[username] = user
        if token:
            self.add_token(username, token, expires_in=expires_in)
        return user

    def add_token(
        self,
        username: str,
        token: str | None = None,
        *,
        expires_in: float | None = None,
        scope: str = "api",
    ) -> str:
        """A personal access token (or any token) for `username`; returns its value."""
        value = token or secrets.token_hex(20)
        expires = time.time() + expires_in if expires_in is not None else None
        self.tokens[value] = Token(value, username, expires, scope=scope)
        return value

    def revoke_token(self, token: str) -> None:
        self.tokens[token].revoked = True

    def revoke_refresh_tokens(self, username: str) -> None:
        """As when a user revokes the application: no refresh grant works any more."""
        self._refresh = {k: g for k, g in self._refresh.items() if g.username != username}

    def expire_token(self, token: str) -> None:
        self.tokens[token].expires_at = time.time() - 1

    def add_group(
        self,
        full_path: str,
        members: dict[str, int] | None = None,
        *,
        shared_with: dict[str, int] | None = None,
    ) -> Group:
        """A group; missing parent groups are created without members.

        `shared_with` invites other groups into this one, each with a maximum role.
        """
        parent = full_path.rpartition("/")[0]
        if parent and parent not in self.groups:
            self.add_group(parent)
        group = self.groups.get(full_path) or Group(next(_ids), full_path, {})
        group.members.update(members or {})
        group.shared_with.update(shared_with or {})
        self.groups[full_path] = group
        return group

    def add_project(
        self,
        full_path: str,
        *,
        visibility: str = "private",
        members: dict[str, int] | None = None,
        repo: str | Path | None = None,
        registry_access: str = "enabled",
        shared_with: dict[str, int] | None = None,
    ) -> Project:
        """A project in a group namespace (created if missing) or in a user's own namespace,
        optionally backed by a bare repo. The owner of a personal namespace is the project's
        Owner, as GitLab makes them."""
        if visibility not in {"private", "internal", "public"}:
            raise ValueError(f"unknown visibility {visibility!r}")
        namespace = full_path.rpartition("/")[0]
        if not namespace:
            raise ValueError("a project path needs a namespace: <group>/<project>")
        personal = namespace in self.users and namespace not in self.groups
        if personal:
            members = {namespace: OWNER, **(members or {})}
        elif namespace not in self.groups:
            self.add_group(namespace)
        project = Project(
            next(_ids),
            full_path,
            visibility,
            dict(members or {}),
            Path(repo).resolve() if repo else None,
            registry_access,
            dict(shared_with or {}),
            personal=personal,
        )
        self.projects[full_path.lower()] = project
        self.redirects.pop(full_path.lower(), None)  # a new project takes over an old path
        return project

    def protect_branch(self, project: str, name: str) -> None:
        """Protect a branch or a wildcard of them such as `notebooks/*`
        (doc/api/protected_branches.md, GitLab's defaults): only Maintainers push to one,
        nobody force-pushes to one or deletes one by a push."""
        self.projects[project.lower()].protected.add(name)

    def set_push_rules(self, project: str, *rules: str) -> None:
        """Premium push rules: `commit_committer_check` ("Reject unverified users": every
        new commit's committer email must be a verified email of the pusher) and
        `member_check` (every author email must belong to a GitLab user)."""
        unknown = set(rules) - PUSH_RULES
        if unknown:
            raise ValueError(f"unknown push rules {sorted(unknown)}")
        self.projects[project.lower()].push_rules = set(rules)

    def request_access(self, group: str, username: str) -> None:
        """A pending request to join the group (no role until a maintainer approves it)."""
        self.groups[group].requests.add(username)

    def rename_project(self, old: str, new: str) -> Project:
        """Rename or move a project; GitLab keeps a redirect from the old path."""
        project = self.projects[old.lower()]
        if project.registry:  # GitLab refuses to move a project that has images
            raise ValueError(f"{old} has container registry images: GitLab refuses to move it")
        namespace = new.rpartition("/")[0]
        if namespace not in self.groups and namespace not in self.users:
            self.add_group(namespace)
        del self.projects[old.lower()]
        project.full_path = new
        project.personal = namespace in self.users and namespace not in self.groups
        self.projects[new.lower()] = project
        self.redirects[old.lower()] = project
        return project

    def throttle(self, requests: int = 1, retry_after: int | None = 1) -> None:
        """Answer the next `requests` API calls with 429, as GitLab's rate limits do."""
        self.throttled, self.retry_after = requests, retry_after

    def add_registry_tag(self, project: str, tag: str, *, name: str = "") -> RegistryRepository:
        """Pretend an image `<registry>/<project path>[/<name>]:<tag>` was pushed."""
        proj = self.projects[project.lower()]
        repository = proj.registry.get(name)
        if repository is None:
            path = "/".join(p for p in (proj.full_path.lower(), name) if p)
            repository = RegistryRepository(next(_ids), name, path, f"{self.registry_host}/{path}")
            proj.registry[name] = repository
        repository.tags[tag] = "sha256:" + secrets.token_hex(32)
        return repository

    def add_oauth_app(
        self,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        scopes: str = DEFAULT_APP_SCOPES,
    ) -> OAuthApp:
        """An OAuth application registered with `scopes`; it refuses to grant any other."""
        app = OAuthApp(client_id, client_secret, redirect_uri, scopes)
        self.oauth_apps[client_id] = app
        return app

    # ---- who sees what ---------------------------------------------------------------------

    def _group_level(self, username: str, group_path: str) -> int | None:
        """Highest membership in the group or any parent group (GitLab inherits downwards)."""
        levels = []
        parts = group_path.split("/")
        for depth in range(1, len(parts) + 1):
            group = self.groups.get("/".join(parts[:depth]))
            if group and username in group.members:
                levels.append(group.members[username])
        return max(levels, default=None)

    def group_access(self, username: str | None, project: Project) -> int | None:
        """`permissions.group_access`: the project's own group and its ancestors only.

        Shares and invited groups do not count here (GitLab issues 223832, 3754).
        """
        if username is None or project.personal:
            return None
        level = self._group_level(username, project.namespace)
        if self.before_16_9 and self._requested(username, project.namespace):
            level = max(level or 0, DEVELOPER)  # highest_group_member counted the request
        return level

    def _requested(self, username: str, group_path: str) -> bool:
        parts = group_path.split("/")
        groups = (self.groups.get("/".join(parts[:depth])) for depth in range(1, len(parts) + 1))
        return any(group is not None and username in group.requests for group in groups)

    def project_access(self, username: str | None, project: Project) -> int | None:
        return project.members.get(username) if username else None

    def _shared_levels(self, username: str, project: Project) -> list[int]:
        """Access through a share of the project, or a group invited into its group or an
        ancestor group: the user's role in the shared group, capped at the share's maximum."""
        shares = list(project.shared_with.items())
        if not project.personal:
            parts = project.namespace.split("/")
            for depth in range(1, len(parts) + 1):
                group = self.groups.get("/".join(parts[:depth]))
                shares += list(group.shared_with.items()) if group else []
        levels = []
        for group_path, max_level in shares:
            level = self._group_level(username, group_path)
            if level is not None:
                levels.append(min(level, max_level))
        return levels

    def effective_level(self, username: str | None, project: Project) -> int | None:
        """The highest role from any source (GitLab's project_authorizations); None: none."""
        if username is None:
            return None
        levels = [
            self.project_access(username, project),
            None if project.personal else self._group_level(username, project.namespace),
            *self._shared_levels(username, project),
        ]
        return max((lvl for lvl in levels if lvl is not None), default=None)

    def level(self, username: str | None, project: Project) -> int:
        return self.effective_level(username, project) or 0

    def can_see(self, username: str | None, project: Project) -> bool:
        if project.visibility == "public":
            return True
        if username is None:
            return False
        if self.users[username].is_admin:
            return True  # an admin sees every project, without a role in it
        return project.visibility == "internal" or self.level(username, project) >= GUEST

    def can_read_code(self, username: str | None, project: Project) -> bool:
        """Guests read code of public and internal projects only (GitLab's permissions table)."""
        if not self.can_see(username, project):
            return False
        if username is not None and self.users[username].is_admin:
            return True
        return project.visibility != "private" or self.level(username, project) >= REPORTER

    def can_read_registry(self, username: str | None, project: Project) -> bool:
        if project.registry_access == "disabled" or not self.can_see(username, project):
            return False
        if project.registry_access == "private" or project.visibility == "private":
            return self.level(username, project) >= REPORTER
        return True

    # ---- request log -----------------------------------------------------------------------

    def token_leaks(self, token: str) -> list[str]:
        """Where `token` was sent other than in an Authorization or PRIVATE-TOKEN header."""
        leaks = []
        for req in self.requests:
            where = f"{req.method} {req.path.replace(token, '<token>')}"  # never print it
            if token in req.path:
                leaks.append(f"{where}: in the URL")
            for name, value in req.headers:
                if token in value and name.lower() not in {"authorization", "private-token"}:
                    leaks.append(f"{where}: in header {name}")
        return leaks

    def token_sent_in_header(self, token: str, path_prefix: str = "") -> int:
        """How many requests (under `path_prefix`) carried `token` in Authorization (Bearer or
        Basic) or PRIVATE-TOKEN."""
        return sum(
            1
            for req in self.requests
            if req.path.startswith(path_prefix) and _header_token(req.headers) == token
        )

    # ---- serving ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        # git pushes are bodies of many megabytes (GitLab's default limit is far above these)
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_GIT_BODY)
        api = "/api/v4"
        app.router.add_get(f"{api}/version", self._version)
        app.router.add_get(f"{api}/user", self._user)
        app.router.add_get(f"{api}/projects/{{id}}", self._project)
        app.router.add_get(f"{api}/projects/{{id}}/repository/commits/{{sha}}", self._commit)
        app.router.add_get(f"{api}/projects/{{id}}/repository/branches", self._branches)
        app.router.add_get(
            f"{api}/projects/{{id}}/repository/branches/{{branch:.+}}", self._branch
        )
        app.router.add_get(f"{api}/projects/{{id}}/members/all/{{uid}}", self._member)
        app.router.add_get(f"{api}/projects/{{id}}/registry/repositories", self._registry_repos)
        app.router.add_get(
            f"{api}/projects/{{id}}/registry/repositories/{{rid}}/tags/{{tag}}", self._registry_tag
        )
        self._add_ci_and_files_routes(app, api)
        # any other method below a project: GitLab's write endpoints, which the stand-in does
        # not serve, but whose answer for an old path of a moved project matters (405)
        app.router.add_route("*", f"{api}/projects/{{id}}/{{rest:.*}}", self._other_method)
        app.router.add_get("/oauth/authorize", self._authorize)
        app.router.add_post("/oauth/token", self._token)
        app.router.add_get(r"/{repo:.+\.git}/info/refs", self._git)
        services = "{service:git-upload-pack|git-receive-pack}"
        app.router.add_post(rf"/{{repo:.+\.git}}/{services}", self._git)
        return app

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> str:
        """Serve on host:port (0 picks a free port), over TLS with `ssl_context` (an in-house
        GitLab with a private CA); returns the base URL."""
        self._hooks = tempfile.mkdtemp(prefix="standin-hooks-")
        hook = Path(self._hooks, "pre-receive")
        hook.write_text(PRE_RECEIVE)
        hook.chmod(0o755)
        self._runner = web.AppRunner(self.app(), shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"{'https' if ssl_context else 'http'}://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        if self._hooks:
            shutil.rmtree(self._hooks, ignore_errors=True)
            self._hooks = None

    async def __aenter__(self) -> GitLabStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(
            RecordedRequest(request.method, request.raw_path, list(request.headers.items()))
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_status:
            phrase = HTTPStatus(self.fail_status).phrase
            return _message(self.fail_status, f"{self.fail_status} {phrase}")
        if self.throttled and request.path.startswith("/api/"):
            self.throttled -= 1
            headers = {"RateLimit-Limit": "400", "RateLimit-Remaining": "0"}
            if self.retry_after is not None:
                headers["Retry-After"] = str(self.retry_after)
            return web.json_response({"message": THROTTLED}, status=429, headers=headers)
        return await handler(request)

    def _base_url(self, request: web.Request) -> str:
        return (self.external_url or str(request.url.origin())).rstrip("/")

    # ---- API authentication ----------------------------------------------------------------

    def _api_user(
        self, request: web.Request, scopes: frozenset[str] = API_READ_SCOPES
    ) -> str | None:
        """The token's user, None for anonymous; raises like GitLab's API guard: 401 for an
        unknown, expired or revoked token, 403 for a missing scope, a blocked account or
        terms not accepted."""
        value = _header_token(list(request.headers.items()), basic=False)
        if value is None:
            return None
        token = self.tokens.get(value)
        if token is None:
            raise _unauthorized()
        if token.revoked:
            raise _invalid_token(REVOKED)
        if not token.valid():
            raise _invalid_token(EXPIRED)
        if not token.allows(scopes):
            raise _insufficient_scope(scopes)
        user = self.users[token.username]
        if user.state == "blocked":
            raise _forbidden(BLOCKED)
        if not user.terms_accepted:
            raise _forbidden(TERMS.format(user=f"@{user.username}"))
        return token.username

    def _visible_project(self, request: web.Request) -> tuple[str | None, Project]:
        """The project the URL names, by id or path; an old path of a moved project answers
        301 to the same call by id (GitLab 16.7+, GET only), as `find_project!` does."""
        username = self._api_user(request)
        ident = request.match_info["id"]
        if ident.isdigit():
            project = next((p for p in self.projects.values() if p.id == int(ident)), None)
        else:
            project = self.projects.get(ident.lower())
            moved = None if project else self.redirects.get(ident.lower())
            if moved is not None and self.can_see(username, moved):
                if request.method != "GET":  # `request.get?`: HEAD is not GET either
                    raise web.HTTPMethodNotAllowed(
                        request.method,
                        ["GET"],
                        text=json.dumps({"message": MOVED_NOT_GET}),
                        content_type="application/json",
                    )
                raise web.HTTPMovedPermanently(self._moved_location(request, moved))
        if project is None or not self.can_see(username, project):
            raise _not_found("404 Project Not Found")
        return username, project

    def _moved_location(self, request: web.Request, project: Project) -> str:
        """`…/api/v4/projects/<id>` plus the rest of the requested path and its query, at
        the scheme GitLab believes it serves (`external_scheme`)."""
        prefix = "/api/v4/projects/"
        rest = request.raw_path[len(prefix) :]
        rest = rest[len(rest.split("/", 1)[0].split("?", 1)[0]) :]
        base = self._base_url(request)
        if self.external_scheme:
            base = f"{self.external_scheme}://{base.partition('://')[2]}"
        return f"{base}{prefix}{project.id}{rest}"

    # ---- API endpoints ---------------------------------------------------------------------

    async def _version(self, request: web.Request) -> web.Response:
        if self._api_user(request) is None:
            raise _unauthorized()
        return web.json_response({"version": GITLAB_VERSION, "revision": "standin"})

    async def _user(self, request: web.Request) -> web.Response:
        username = self._api_user(request, USER_READ_SCOPES)
        if username is None:
            raise _unauthorized()
        user = self.users[username]
        body = {
            **self._user_json(user, request),
            "email": user.email,
            "commit_email": user.commit_email or user.email,  # commit_email_or_default
            "is_admin": user.is_admin,
        }
        return web.json_response(body)

    def _user_json(self, user: User, request: web.Request) -> dict[str, Any]:
        """The fields GitLab's user and member answers share."""
        return {
            "id": user.id,
            "username": user.username,
            "name": user.name,
            "state": user.state,
            "avatar_url": None,
            "web_url": f"{self._base_url(request)}/{user.username}",
            "created_at": "2024-01-01T00:00:00.000Z",
        }

    async def _project(self, request: web.Request) -> web.Response:
        username, project = self._visible_project(request)
        body = self._project_json(project, self._base_url(request))
        if username is not None:  # GitLab leaves `permissions` out for anonymous requests
            body["permissions"] = {  # group_access is null in a personal namespace
                "project_access": _access(self.project_access(username, project)),
                "group_access": _access(self.group_access(username, project)),
            }
        return web.json_response(body)

    async def _other_method(self, request: web.Request) -> web.Response:
        self._visible_project(request)
        return web.json_response({"error": "404 Not Found"}, status=404)

    async def _member(self, request: web.Request) -> web.Response:
        """`members/all/:user_id`: direct, inherited, shared and invited-group membership, at
        the user's effective role (MembersFinder takes it from project_authorizations)."""
        username, project = self._visible_project(request)
        if username is None:
            raise _unauthorized()
        uid = request.match_info["uid"]
        user = next((u for u in self.users.values() if str(u.id) == uid), None)
        level = self.effective_level(user.username, project) if user else None
        if user is None or level is None:
            return _message(404, "404 Not found")
        member = {"access_level": level, "expires_at": None, "membership_state": "active"}
        return web.json_response({**self._user_json(user, request), **member})

    def _project_json(self, project: Project, base: str) -> dict[str, Any]:
        if project.personal:
            owner = self.users[project.namespace]
            namespace = {
                "id": owner.id,
                "name": owner.name,
                "path": owner.username,
                "kind": "user",
                "full_path": owner.username,
            }
        else:
            group = self.groups[project.namespace]
            name = group.full_path.rpartition("/")[2]
            namespace = {
                "id": group.id,
                "name": name,
                "path": name,
                "kind": "group",
                "full_path": group.full_path,
            }
        return {
            "id": project.id,
            "name": project.path,
            "name_with_namespace": project.full_path.replace("/", " / "),
            "path": project.path,
            "path_with_namespace": project.full_path,
            "namespace": namespace,
            "visibility": project.visibility,
            "default_branch": _default_branch(project.repo),
            "http_url_to_repo": f"{base}/{project.full_path}.git",
            "web_url": f"{base}/{project.full_path}",
            "container_registry_enabled": project.registry_access != "disabled",
            "container_registry_access_level": project.registry_access,
            "container_registry_image_prefix": f"{self.registry_host}/{project.full_path.lower()}",
        }

    async def _commit(self, request: web.Request) -> web.Response:
        username, project = self._visible_project(request)
        if not self.can_read_code(username, project):
            return _message(403, "403 Forbidden")
        commit = await _read_commit(project.repo, request.match_info["sha"])
        if commit is None:
            return _message(404, "404 Commit Not Found")
        commit["web_url"] = f"{self._base_url(request)}/{project.full_path}/-/commit/{commit['id']}"
        return web.json_response(commit)

    async def _branches(self, request: web.Request) -> web.Response:
        """doc/api/branches.md: the project's branches sorted by name; `search` is a
        case-insensitive substring, `^term` a prefix and `term$` a suffix.

        As GitLab does it: the answer is cached per user, project and declared parameters
        for 30 s (`cache_action`), so a branch created or deleted meanwhile is missing or
        still listed; the first page comes from Gitaly (GitalyKeysetPager): with `search`
        it holds every match, and its headers always say page 2 follows, counted from all
        of the repository's branches; later pages are offset pages of the matches."""
        username, project = self._visible_project(request)
        if not self.can_read_code(username, project):
            return _message(403, "403 Forbidden")
        key = (
            username or "",
            project.id,
            tuple((k, request.query[k]) for k in BRANCH_LIST_PARAMS if k in request.query),
        )
        cached = self._branch_lists.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.branch_list_seconds:
            return web.json_response(cached[1], headers=cached[2])
        term = request.query.get("search", "")
        start, end = term.startswith("^"), term.endswith("$") and len(term) > 1
        needle = term.removeprefix("^").removesuffix("$") if term else ""
        heads = await _branch_heads(project.repo)
        names = list(heads)

        def wanted(name: str) -> bool:
            lower, key = name.lower(), needle.lower()
            if start and end:
                return lower == key
            if start:
                return lower.startswith(key)
            if end:
                return lower.endswith(key)
            return key in lower

        found = [n for n in names if wanted(n)]
        page_param = request.query.get("page", "")
        if not page_param.isdigit() or int(page_param) <= 1:
            per_page = _per_page(request)
            shown = found if term else found[:per_page]
            headers = _offset_headers(
                request, per_page, 1, "2", len(names), len(names) // per_page + 1
            )
        else:
            page, headers = _paginate(request, len(found))
            shown = found[page]
        default = _default_branch(project.repo)
        body = [self._branch_json(request, username, project, n, heads[n], default) for n in shown]
        self._branch_lists[key] = (time.monotonic(), body, headers)
        return web.json_response(body, headers=headers)

    async def _branch(self, request: web.Request) -> web.Response:
        """`GET /projects/:id/repository/branches/:branch`: read from the repository itself
        (no cache), 404 "404 Branch Not Found" when there is none."""
        username, project = self._visible_project(request)
        if not self.can_read_code(username, project):
            return _message(403, "403 Forbidden")
        name = unquote(request.match_info["branch"])
        commit = (await _branch_heads(project.repo)).get(name)
        if commit is None:
            return _message(404, "404 Branch Not Found")
        default = _default_branch(project.repo)
        return web.json_response(
            self._branch_json(request, username, project, name, commit, default)
        )

    def _branch_json(
        self,
        request: web.Request,
        username: str | None,
        project: Project,
        name: str,
        commit: dict[str, Any],
        default: str | None,
    ) -> dict[str, Any]:
        commit = dict(commit)
        base = self._base_url(request)
        commit["web_url"] = f"{base}/{project.full_path}/-/commit/{commit['id']}"
        return {
            "name": name,
            "merged": False,
            "protected": any(fnmatch.fnmatchcase(name, p) for p in project.protected),
            "default": name == default,
            "developers_can_push": False,
            "developers_can_merge": False,
            "can_push": self.level(username, project) >= DEVELOPER,
            "web_url": f"{base}/{project.full_path}/-/tree/{name}",
            "commit": commit,
        }

    async def _registry_repos(self, request: web.Request) -> web.Response:
        username, project = self._visible_project(request)
        if not self.can_read_registry(username, project):
            return _message(403, "403 Forbidden")
        with_tags = request.query.get("tags") == "true"
        with_count = request.query.get("tags_count") == "true"
        repos = sorted(project.registry.values(), key=lambda r: r.id)
        page, headers = _paginate(request, len(repos))
        return web.json_response(
            [_repository_json(r, project, with_tags, with_count) for r in repos[page]],
            headers=headers,
        )

    async def _registry_tag(self, request: web.Request) -> web.Response:
        username, project = self._visible_project(request)
        if not self.can_read_registry(username, project):
            return _message(403, "403 Forbidden")
        rid = request.match_info["rid"]
        repo = next((r for r in project.registry.values() if str(r.id) == rid), None)
        if repo is None:
            return _message(404, "404 Repository Not Found")
        tag = request.match_info["tag"]
        if tag not in repo.tags:
            return _message(404, "404 Tag Not Found")
        digest = repo.tags[tag]
        return web.json_response(
            {
                **_tag_json(repo, tag),
                "revision": digest[7:],
                "short_revision": digest[7:16],
                "digest": digest,
                "created_at": "2024-01-01T00:00:00.000+00:00",
                "total_size": 1024,
            }
        )

    # ---- CI pipelines and repository files ---------------------------------------------------

    def add_pipeline(self, project: str, sha: str, status: str = "pending", ref: str = "main"
                     ) -> Pipeline:
        """A pipeline for `sha`, as a push would create; `status` one of PIPELINE_STATUSES."""
        if status not in PIPELINE_STATUSES:
            raise ValueError(f"unknown pipeline status {status!r}")
        pipelines = self.pipelines.setdefault(project.lower(), [])
        pipeline = Pipeline(next(_ids), len(pipelines) + 1, sha, ref, status)
        pipelines.append(pipeline)
        return pipeline

    def _add_ci_and_files_routes(self, app: web.Application, api: str) -> None:
        app.router.add_get(f"{api}/projects/{{id}}/pipelines", self._pipelines)
        # aiohttp answers HEAD through the GET route, as Rails does
        app.router.add_get(f"{api}/projects/{{id}}/repository/files/{{path:.+}}", self._file)

    async def _pipelines(self, request: web.Request) -> web.Response:
        """`GET /projects/:id/pipelines` with `sha`, `ref`, `status`, `order_by=id`, `sort`,
        `per_page` and `page` (doc/api/pipelines.md); newest first by default."""
        if self.ci_fail_status:
            return _message(self.ci_fail_status, HTTPStatus(self.ci_fail_status).phrase)
        username, project = self._visible_project(request)
        if not self.can_read_code(username, project):
            return _message(403, "403 Forbidden")
        query = request.query
        status = query.get("status")
        if status is not None and status not in PIPELINE_STATUSES:
            return web.json_response({"error": "status does not have a valid value"}, status=400)
        if query.get("sort", "desc") not in ("asc", "desc"):
            return web.json_response({"error": "sort does not have a valid value"}, status=400)
        found = [
            p for p in self.pipelines.get(project.full_path.lower(), [])
            if query.get("sha", p.sha) == p.sha
            and query.get("ref", p.ref) == p.ref
            and (status or p.status) == p.status
        ]
        found.sort(key=lambda p: p.id, reverse=query.get("sort", "desc") == "desc")
        per_page = min(max(int(query.get("per_page", "20") or 20), 1), 100)
        page = max(int(query.get("page", "1") or 1), 1)
        base = self._base_url(request)
        return web.json_response([
            {
                "id": p.id,
                "iid": p.iid,
                "project_id": project.id,
                "sha": p.sha,
                "ref": p.ref,
                "status": p.status,
                "source": "push",
                "created_at": p.created_at,
                "updated_at": p.created_at,
                "web_url": f"{base}/{project.full_path}/-/pipelines/{p.id}",
            }
            for p in found[(page - 1) * per_page : page * per_page]
        ])

    async def _file(self, request: web.Request) -> web.Response:
        """`HEAD`/`GET /projects/:id/repository/files/:file_path?ref=`
        (doc/api/repository_files.md): the path must arrive URL-encoded (`a%2Fb.ipynb`),
        `ref` is required; 404 when absent."""
        username, project = self._visible_project(request)
        if not self.can_read_code(username, project):
            return _message(403, "403 Forbidden")
        raw = request.raw_path.split("?", 1)[0].split("/repository/files/", 1)[1]
        ref = request.query.get("ref")
        if not ref:
            return web.json_response({"error": "ref is missing, ref is empty"}, status=400)
        if "/" in raw or project.repo is None:  # an unencoded path matches no GitLab route
            return _message(404, "404 File Not Found")
        path = unquote(raw)
        commit = await _read_commit(project.repo, ref)
        if commit is None:
            return _message(404, "404 File Not Found")
        status, kind = await _run_git(project.repo, "cat-file", "-t", f"{commit['id']}:{path}")
        if status or kind.strip() != "blob":
            return _message(404, "404 File Not Found")
        _, size = await _run_git(project.repo, "cat-file", "-s", f"{commit['id']}:{path}")
        _, blob = await _run_git(project.repo, "rev-parse", f"{commit['id']}:{path}")
        headers = {
            "X-Gitlab-File-Name": path.rpartition("/")[2],
            "X-Gitlab-File-Path": path,
            "X-Gitlab-Size": size.strip(),
            "X-Gitlab-Encoding": "base64",
            "X-Gitlab-Blob-Id": blob.strip(),
            "X-Gitlab-Commit-Id": commit["id"],
            "X-Gitlab-Last-Commit-Id": commit["id"],
            "X-Gitlab-Ref": ref,
        }
        body = {
            "file_name": headers["X-Gitlab-File-Name"],
            "file_path": path,
            "size": int(size.strip() or 0),
            "encoding": "base64",
            "ref": ref,
            "blob_id": blob.strip(),
            "commit_id": commit["id"],
            "last_commit_id": commit["id"],
        }
        return web.json_response(body, headers=headers)

    # ---- OAuth -----------------------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        """Approves at once for `oauth_user`, as if they were logged in and clicked Authorize."""
        query = request.query
        app = self.oauth_apps.get(query.get("client_id", ""))
        if app is None or query.get("redirect_uri") != app.redirect_uri:
            return web.Response(status=400, text="The redirect URI or client is not valid.")
        if query.get("response_type") != "code":
            raise _redirect(
                app.redirect_uri, error="unsupported_response_type", state=query.get("state")
            )
        scope = query.get("scope") or app.scopes
        if not set(scope.split()) <= set(app.scopes.split()):
            # Oauth::AuthorizationsController#new: a scope the application was not
            # registered with issues no code, and GitLab renders the error on its own page
            # (200, HTML): nothing goes back to the client's redirect URI
            return web.Response(
                text=ERROR_PAGE.format(description=INVALID_SCOPE), content_type="text/html"
            )
        if self.oauth_user is None:
            return web.Response(status=401, text="No GitLab user is logged in to the stand-in.")
        code = secrets.token_hex(16)
        self._codes[code] = Grant(
            app.client_id,
            self.oauth_user,
            " ".join(scope.split()),
            app.redirect_uri,
            query.get("code_challenge", ""),
            query.get("code_challenge_method", "plain"),
        )
        raise _redirect(app.redirect_uri, code=code, state=query.get("state"))

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        client_id, secret = _client_credentials(request, form)
        app = self.oauth_apps.get(client_id or "")
        if app is None or secret != app.client_secret:
            return _oauth_error(401, "invalid_client", "Client authentication failed.")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            grant = self._codes.pop(str(form.get("code", "")), None)
            verifier = str(form.get("code_verifier", ""))
            if grant and (
                grant.redirect_uri != form.get("redirect_uri")
                or not grant.verifier_matches(verifier)
            ):
                grant = None
        elif grant_type == "refresh_token":
            grant = self._refresh.pop(str(form.get("refresh_token", "")), None)
            if grant and grant.client_id == client_id and grant.access_token in self.tokens:
                self.revoke_token(grant.access_token)  # Doorkeeper revokes the previous token
        else:
            return _oauth_error(400, "unsupported_grant_type", "The grant type is not supported.")
        if grant is None or grant.client_id != client_id:
            return _oauth_error(
                400,
                "invalid_grant",
                "The provided authorization grant is "
                "invalid, expired, revoked, or was issued to another client.",
            )
        return web.json_response(self._issue(grant))

    def _issue(self, grant: Grant) -> dict[str, Any]:
        access = self.add_token(
            grant.username, expires_in=self.oauth_token_seconds, scope=grant.scope
        )
        refresh = secrets.token_hex(32)
        self._refresh[refresh] = Grant(
            grant.client_id, grant.username, grant.scope, access_token=access
        )
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.oauth_token_seconds,
            "refresh_token": refresh,
            "created_at": int(time.time()),
            "scope": grant.scope,
        }

    # ---- git smart HTTP --------------------------------------------------------------------

    def _git_user(self, request: web.Request) -> tuple[str | None, Token | None]:
        """(user, token) from HTTP Basic, (None, None) without; 401 for bad credentials."""
        value = _header_token(list(request.headers.items()), basic=True)
        if value is None:
            return None, None
        token = self.tokens.get(value)
        if token is None or not token.valid():
            raise _git_challenge()
        if self.users[token.username].state == "blocked":
            raise _git_challenge()  # GitLab's git login refuses blocked users like bad passwords
        return token.username, token

    async def _git(self, request: web.Request) -> web.StreamResponse:
        """Fetch needs a token that may read code; push needs write_repository (or api) and
        the Developer role; an old path of a moved project is served like the new one."""
        username, token = self._git_user(request)
        path = request.match_info["repo"].removesuffix(".git").lower()
        project = self.projects.get(path) or self.redirects.get(path)
        service = request.match_info.get("service") or request.query.get("service", "")
        if service not in ("git-upload-pack", "git-receive-pack"):
            return web.Response(status=403, text="Git over HTTP needs a smart client.")
        if token is not None and not token.allows(GIT_FETCH_SCOPES):
            return web.Response(status=403, text="You are not allowed to download code.")
        if project is None or not self.can_read_code(username, project):
            if token is None:
                raise _git_challenge()  # git retries with credentials from its helper
            if project is None or not self.can_see(username, project):
                return web.Response(status=404, text=NOT_FOUND_PAGE)
            return web.Response(status=403, text="You are not allowed to download code.")
        if service == "git-receive-pack":
            if token is None:
                raise _git_challenge()
            if not token.allows(GIT_PUSH_SCOPES) or self.level(username, project) < DEVELOPER:
                return web.Response(status=403, text="You are not allowed to upload code.")
        if project.repo is None:
            return web.Response(status=404, text=NOT_FOUND_PAGE)
        if self.hold_fetch and request.method == "POST" and self.hold_fetch in await request.read():
            self.fetch_held.set()
            while not self.release_fetch.is_set():
                await asyncio.sleep(0.05)
        suffix = "info/refs" if request.method == "GET" else service
        checks = {
            "GIT_CONFIG_KEY_1": "core.hooksPath",
            "GIT_CONFIG_VALUE_1": self._hooks or "hooks",
            "STANDIN_PROTECTED": "\n".join(sorted(project.protected)),
            "STANDIN_PUSH_RULES": " ".join(sorted(project.push_rules)),
            "STANDIN_LEVEL": str(self.level(username, project)),
        }
        pusher = self.users.get(username or "")
        if pusher is not None:
            checks["STANDIN_PUSHER_EMAILS"] = " ".join(sorted(pusher.verified_emails()))
            checks["STANDIN_PUSHER_UNVERIFIED"] = " ".join(sorted(pusher.unverified))
        checks["STANDIN_USER_EMAILS"] = " ".join(
            sorted(e for u in self.users.values() for e in (*u.verified_emails(), *u.unverified))
        )
        return await _http_backend(request, project.repo, suffix, username or "", checks)


# ---- helpers -------------------------------------------------------------------------------


class StandInThread:
    """The stand-in on its own event loop, so sync tests can change it between requests."""

    def __init__(self, standin: GitLabStandIn, ssl_context: ssl.SSLContext | None = None):
        self.standin = standin
        self.ssl_context = ssl_context
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def __enter__(self) -> StandInThread:
        self.thread.start()
        self.run(self.standin.start(ssl_context=self.ssl_context))
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self.standin.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _message(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def _unauthorized() -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=json.dumps({"message": "401 Unauthorized"}), content_type="application/json"
    )


def _invalid_token(description: str) -> web.HTTPUnauthorized:
    """An expired or revoked OAuth token: RFC 6750's body and challenge, as GitLab sends."""
    challenge = (
        'Bearer realm="Protected by OAuth 2.0", error="invalid_token", '
        f'error_description="{description}"'
    )
    return web.HTTPUnauthorized(
        headers={"WWW-Authenticate": challenge},
        text=json.dumps({"error": "invalid_token", "error_description": description}),
        content_type="application/json",
    )


def _insufficient_scope(scopes: frozenset[str]) -> web.HTTPForbidden:
    """lib/api/api_guard.rb: RFC 6750's body, but no WWW-Authenticate (a FIXME there)."""
    wanted = " ".join(sorted(scopes))
    description = "The request requires higher privileges than provided by the access token."
    return web.HTTPForbidden(
        text=json.dumps(
            {"error": "insufficient_scope", "error_description": description, "scope": wanted}
        ),
        content_type="application/json",
    )


def _forbidden(message: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(text=json.dumps({"message": message}), content_type="application/json")


def _not_found(message: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=json.dumps({"message": message}), content_type="application/json")


def _number(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name, "")
    return int(value) if value.isdigit() and int(value) > 0 else default


def _per_page(request: web.Request) -> int:
    return min(_number(request, "per_page", PER_PAGE), MAX_PER_PAGE)


def _paginate(request: web.Request, total: int) -> tuple[slice, dict[str, str]]:
    """Offset pagination as GitLab's API does it: `page`, `per_page` (20, at most 100), and
    X-Page, X-Per-Page, X-Next-Page, X-Prev-Page, X-Total, X-Total-Pages and Link headers."""
    per_page = _per_page(request)
    page = _number(request, "page", 1)
    pages = max(1, -(-total // per_page))
    headers = _offset_headers(
        request,
        per_page,
        page,
        str(page + 1) if page < pages else "",
        total,
        pages,
        str(page - 1) if 1 < page <= pages + 1 else "",
    )
    start = (page - 1) * per_page
    return slice(start, start + per_page), headers


def _offset_headers(
    request: web.Request,
    per_page: int,
    page: int,
    next_page: str,
    total: int,
    pages: int,
    prev_page: str = "",
) -> dict[str, str]:
    """lib/gitlab/pagination/offset_header_builder.rb's headers."""
    headers = {
        "X-Page": str(page),
        "X-Per-Page": str(per_page),
        "X-Next-Page": next_page,
        "X-Prev-Page": prev_page,
        "X-Total": str(total),
        "X-Total-Pages": str(pages),
    }
    links = []
    for rel, number_ in (
        ("prev", headers["X-Prev-Page"]),
        ("next", headers["X-Next-Page"]),
        ("first", "1"),
        ("last", str(pages)),
    ):
        if number_:
            url = request.url.update_query(page=number_, per_page=str(per_page))
            links.append(f'<{url}>; rel="{rel}"')
    headers["Link"] = ", ".join(links)
    return headers


def _git_challenge() -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        headers={"WWW-Authenticate": 'Basic realm="GitLab"'},
        text="HTTP Basic: Access denied. If a password was provided for Git authentication, "
        "the password was incorrect or you're required to use a token instead of a password.",
    )


def _access(level: int | None) -> dict[str, int] | None:
    if level is None:
        return None
    return {"access_level": level, "notification_level": NOTIFICATION_GLOBAL}


def _redirect(uri: str, **params: str | None) -> web.HTTPFound:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return web.HTTPFound(f"{uri}{'&' if '?' in uri else '?'}{query}")


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def _basic(value: str) -> tuple[str, str] | None:
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _header_token(headers: list[tuple[str, str]], basic: bool | None = None) -> str | None:
    """The token in Authorization (Bearer; Basic password) or PRIVATE-TOKEN; None if absent.

    basic=False accepts only API forms, basic=True only HTTP Basic, None either.
    """
    for name, value in headers:
        lname = name.lower()
        if lname == "private-token" and basic is not True:
            return value
        if lname != "authorization":
            continue
        scheme, _, rest = value.partition(" ")
        if scheme.lower() == "bearer" and basic is not True:
            return rest.strip()
        if scheme.lower() == "basic" and basic is not False:
            pair = _basic(rest.strip())
            return pair[1] if pair else ""
    return None


def _client_credentials(request: web.Request, form: Any) -> tuple[str | None, str | None]:
    """OAuth clients authenticate by HTTP Basic or by form fields; both are accepted."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        pair = _basic(header[6:].strip())
        if pair:
            return pair
    return form.get("client_id"), form.get("client_secret")


def _tag_json(repo: RegistryRepository, tag: str) -> dict[str, str]:
    return {"name": tag, "path": f"{repo.path}:{tag}", "location": f"{repo.location}:{tag}"}


def _repository_json(
    repo: RegistryRepository, project: Project, with_tags: bool, with_count: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": repo.id,
        "name": repo.name,
        "path": repo.path,
        "project_id": project.id,
        "location": repo.location,
        "created_at": "2024-01-01T00:00:00.000+00:00",
        "cleanup_policy_started_at": None,
        "status": None,
    }
    if with_count:
        body["tags_count"] = len(repo.tags)
    if with_tags:
        body["tags"] = [_tag_json(repo, tag) for tag in sorted(repo.tags)]
    return body


# ---- git -----------------------------------------------------------------------------------


def _git_env(**extra: str) -> dict[str, str]:
    """A clean environment: nothing from the caller's GIT_* settings leaks into the server."""
    env = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    env.update(extra)
    return env


def _default_branch(repo: Path | None) -> str | None:
    if repo is None:
        return None
    result = subprocess.run(
        ["git", "-C", str(repo), "symbolic-ref", "--short", "HEAD"],
        capture_output=True,
        text=True,
        env=_git_env(),
        check=False,
    )
    return result.stdout.strip() or None


# one record per branch: its name, its object's type, then the commit as `_COMMIT_FORMAT` has it
_HEADS_FORMAT = (
    "%(refname:short)%00%(objecttype)%00%(objectname)%00%(parent)%00%(authorname)%00"
    "%(authoremail:trim)%00%(authordate:iso-strict)%00%(committername)%00"
    "%(committeremail:trim)%00%(committerdate:iso-strict)%00%(contents)%00"
)
_COMMIT_FORMAT = "%H%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B"


async def _branch_heads(repo: Path | None) -> dict[str, dict[str, Any]]:
    """Every branch and its commit, sorted by name, read with one `git for-each-ref`:
    as Gitaly answers a branch list in one call, so a project with hundreds of branches
    answers quickly (a `git show` per branch took seconds on a loaded machine)."""
    if repo is None:
        return {}
    status, out = await _run_git(repo, "for-each-ref", f"--format={_HEADS_FORMAT}", "refs/heads")
    if status:
        return {}
    fields = out.split("\0")
    heads = {}
    for at in range(0, len(fields) - 10, 11):
        name, kind, *commit = fields[at : at + 11]
        if kind == "commit":
            heads[name.lstrip("\n")] = _commit_json(commit)
    return dict(sorted(heads.items()))


async def _run_git(repo: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "git",
        "-C",
        str(repo),
        *args,
        env=_git_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def _read_commit(repo: Path | None, ref: str) -> dict[str, Any] | None:
    """The commit as GitLab's API shows it; like GitLab, a branch or tag name also resolves."""
    if repo is None or ref.startswith("-"):
        return None
    status, out = await _run_git(
        repo, "show", "-s", f"--format={_COMMIT_FORMAT}", f"{ref}^{{commit}}", "--"
    )
    if status:
        return None
    return _commit_json(out.removesuffix("\n").split("\0", 8))


def _commit_json(fields: list[str]) -> dict[str, Any]:
    """GitLab's commit entity from the nine fields of `_COMMIT_FORMAT`."""
    sha, parents, an, ae, ad, cn, ce, cd, message = fields
    message = message.rstrip("\n")
    return {
        "id": sha,
        "short_id": sha[:8],
        "title": message.split("\n", 1)[0],
        "message": message,
        "parent_ids": parents.split(),
        "author_name": an,
        "author_email": ae,
        "authored_date": ad,
        "committer_name": cn,
        "committer_email": ce,
        "committed_date": cd,
        "created_at": cd,
    }


async def _http_backend(
    request: web.Request, repo: Path, suffix: str, user: str, checks: dict[str, str]
) -> web.Response:
    """Run `git http-backend` as a CGI for one request, like GitLab's workhorse serves fetches;
    `checks` adds the second git config entry (the hooks) and what the hooks read."""
    body = await request.read()
    env = _git_env(
        GIT_PROJECT_ROOT=str(repo.parent),
        GIT_HTTP_EXPORT_ALL="1",
        PATH_INFO=f"/{repo.name}/{suffix}",
        REQUEST_METHOD=request.method,
        QUERY_STRING=request.query_string,
        CONTENT_TYPE=request.headers.get("Content-Type", ""),
        CONTENT_LENGTH=str(len(body)),
        REMOTE_USER=user,
        REMOTE_ADDR="127.0.0.1",
        HTTP_GIT_PROTOCOL=request.headers.get("Git-Protocol", ""),
        # GitLab lets clients fetch any commit by sha, which a one-commit clone relies on
        GIT_CONFIG_COUNT="2",
        GIT_CONFIG_KEY_0="uploadpack.allowAnySHA1InWant",
        GIT_CONFIG_VALUE_0="true",
        **checks,
    )
    if body[:2] == b"\x1f\x8b":  # still gzipped (aiohttp normally inflates request bodies)
        env["HTTP_CONTENT_ENCODING"] = "gzip"
    proc = await asyncio.create_subprocess_exec(
        "git",
        "http-backend",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(body)
    return _cgi_response(out, err)


def _cgi_response(out: bytes, err: bytes) -> web.Response:
    head, sep, payload = out.partition(b"\r\n\r\n")
    if not sep:
        head, sep, payload = out.partition(b"\n\n")
    if not sep:
        return web.Response(status=500, text=f"git http-backend failed: {err.decode()[:500]}")
    status, headers = 200, {}
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            headers[name.strip()] = value.strip()
    return web.Response(status=status, body=payload, headers=headers)


def create_bare_repo(
    path: str | Path, commits: list[dict[str, str]], branch: str = "main"
) -> list[str]:
    """A bare repository at `path` with one commit per {file: content} dict; returns their shas."""
    path = Path(path)
    env = _git_env(
        GIT_AUTHOR_NAME="Stand In",
        GIT_AUTHOR_EMAIL="standin@example.test",
        GIT_COMMITTER_NAME="Stand In",
        GIT_COMMITTER_EMAIL="standin@example.test",
    )
    shas = []
    with tempfile.TemporaryDirectory(prefix="standin-work-") as work:
        subprocess.run(["git", "init", "-q", "-b", branch, work], env=env, check=True)
        for number, files in enumerate(commits, 1):
            for name, content in files.items():
                target = Path(work, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
            subprocess.run(["git", "-C", work, "add", "-A"], env=env, check=True)
            subprocess.run(
                ["git", "-C", work, "commit", "-q", "--allow-empty", "-m", f"commit {number}"],
                env=env,
                check=True,
            )
            shas.append(
                subprocess.run(
                    ["git", "-C", work, "rev-parse", "HEAD"],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.strip()
            )
        subprocess.run(["git", "clone", "-q", "--bare", work, str(path)], env=env, check=True)
    return shas


def bare_repo_from_directory(source: Path, dest: Path) -> Path:
    """A bare copy of a git work tree, or a one-commit bare repo holding a plain directory."""
    if dest.exists():
        shutil.rmtree(dest)
    if (source / ".git").exists() or (source / "HEAD").is_file():
        subprocess.run(
            ["git", "clone", "-q", "--bare", str(source), str(dest)], env=_git_env(), check=True
        )
        return dest
    files = {
        str(p.relative_to(source)): p.read_text() for p in sorted(source.rglob("*")) if p.is_file()
    }
    create_bare_repo(dest, [files])
    return dest


# ---- standalone ----------------------------------------------------------------------------


def load_fixture(standin: GitLabStandIn, fixture: Path, repos_dir: Path) -> None:
    """Fill the stand-in from YAML; relative paths are relative to the fixture file.

    users: [{username, token?, name?, isAdmin?, commitEmail?}]
    groups: [{path, members: {user: level}, sharedWith?: {invited group: max level},
              requests?: [user]}]
    projects: [{path, visibility?, members?, repo? (bare repo) | source? (a directory),
                registryAccess?, sharedWith?: {group: level}, registryTags?: [tag],
                protected?: [name or wildcard], pushRules?: [rule]}]
    oauth: {user: <username>, clients: [{id, secret, redirectUri, scopes?}]}
    registryHost, externalUrl, externalScheme, before16_9: optional
    """
    data = yaml.safe_load(fixture.read_text()) or {}
    base = fixture.resolve().parent
    standin.registry_host = data.get("registryHost", standin.registry_host)
    standin.external_url = data.get("externalUrl", standin.external_url)
    standin.external_scheme = data.get("externalScheme", standin.external_scheme)
    standin.before_16_9 = bool(data.get("before16_9", standin.before_16_9))
    for user in data.get("users", []):
        added = standin.add_user(
            user["username"], user.get("token"), name=user.get("name"),
            is_admin=bool(user.get("isAdmin")),
        )
        added.commit_email = user.get("commitEmail")
    for group in data.get("groups", []):
        added_group = standin.add_group(
            group["path"], group.get("members"), shared_with=group.get("sharedWith")
        )
        added_group.requests.update(group.get("requests", []))
    for spec in data.get("projects", []):
        _fixture_project(standin, spec, base, repos_dir)
    oauth = data.get("oauth") or {}
    standin.oauth_user = oauth.get("user")
    for client in oauth.get("clients", []):
        standin.add_oauth_app(
            client["id"],
            client["secret"],
            client["redirectUri"],
            client.get("scopes", DEFAULT_APP_SCOPES),
        )


def _fixture_project(
    standin: GitLabStandIn, spec: dict[str, Any], base: Path, repos_dir: Path
) -> None:
    repo = base / spec["repo"] if spec.get("repo") else None
    if spec.get("source"):
        repo = bare_repo_from_directory(base / spec["source"], repos_dir / f"{spec['path']}.git")
    standin.add_project(
        spec["path"],
        visibility=spec.get("visibility", "private"),
        members=spec.get("members"),
        repo=repo,
        registry_access=spec.get("registryAccess", "enabled"),
        shared_with=spec.get("sharedWith"),
    )
    for tag in spec.get("registryTags", []):
        standin.add_registry_tag(spec["path"], str(tag))
    for name in spec.get("protected", []):
        standin.protect_branch(spec["path"], name)
    standin.set_push_rules(spec["path"], *spec.get("pushRules", []))


async def _serve(standin: GitLabStandIn, host: str, port: int) -> None:
    url = await standin.start(host, port)
    print(f"gitlab stand-in listening on {url}", flush=True)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    try:
        await stopping.wait()
    finally:
        await standin.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a GitLab API v4 stand-in.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--fixture", type=Path, help="YAML with users, groups, projects, oauth")
    parser.add_argument("--repos-dir", type=Path, help="where bare repos made from `source` go")
    parser.add_argument("--external-url", help="base URL clients use, if not the one they call")
    parser.add_argument("--external-scheme", help="the scheme of redirect Locations (http)")
    parser.add_argument("--before-16-9", action="store_true",
                        help="count pending group access requests in group_access")
    args = parser.parse_args(argv)
    standin = GitLabStandIn(external_url=args.external_url)
    standin.external_scheme = args.external_scheme
    standin.before_16_9 = args.before_16_9
    with tempfile.TemporaryDirectory(prefix="standin-repos-") as tmp:
        if args.fixture:
            load_fixture(standin, args.fixture, args.repos_dir or Path(tmp))
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(standin, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
