"""The worlds tests run in, built one way and typed: what a test module used to assemble as a
dict of its own.

- The local world: bare repositories under one root, read by the local provider, with an
  access list (`local_repos`, `local_config`); tests/conftest.py's session hub runs it.
- The GitLab world (`GitLabWorld.running`): the GitLab stand-in with its users and projects,
  the hub's OAuth application registered in it, a hub logging in with it, and a way to log
  users in through GitLab's OAuth as a browser does. Five modules set this up; the steps
  (start the stand-in, register the application at the hub's callback, start the hub, stop
  both) are the same, and so are the names they pass around.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from glue.core.config import validate
from glue.core.configtypes import Config
from glue.hub.setup import GITLAB_SCOPES
from testing.gitlab import GitLabStandIn, StandInThread
from testing.hub import Client, RunningHub
from testing.repos import make_repo

DEFAULT_IMAGE = "registry.example.org/renku/default:1"
# the stand-in's container registry, and the provider tests' default image in it
REGISTRY = "registry.gitlab.test"
PROVIDER_IMAGE = f"{REGISTRY}/renku/default:1"
SMALL = {"name": "small", "cpu": 0.5, "memory": "1G"}
# the hub's OAuth application in GitLab, as an operator registers it
CLIENT_ID, CLIENT_SECRET = "hub-client", "hub-secret-value"

# --- the local provider -----------------------------------------------------------------

# access list of the session hub: everyone is a developer on `demo/*` and the
# subgroup project; carol is only a reporter on demo/hello; only alice sees demo/private
ACCESS = {
    "*": {"demo/hello": 30, "demo/other": 30, "group/sub/deep": 30},
    "carol": {"demo/hello": 20},
    "alice": {"demo/private": 40},
}
LOCAL_PROJECTS = ("demo/hello", "demo/other", "demo/private", "group/sub/deep")


def local_repos(root: Path) -> dict[str, Any]:
    """The session's repositories: `{"root": root, "shas": {project: [sha, ...]}}`, three
    commits each, oldest first."""
    return {"root": root, "shas": {path: make_repo(root, path) for path in LOCAL_PROJECTS}}


def local_config(repos_root: Path) -> dict[str, Any]:
    """The session hub's notebooks config: the local provider over `repos_root`, ACCESS."""
    return {
        "images": {"default": DEFAULT_IMAGE},
        "profiles": [
            {**SMALL, "default": True},
            {"name": "large", "cpu": 2, "memory": "4G"},
        ],
        "provider": {"kind": "local", "root": str(repos_root), "access": ACCESS},
        "launch": {"serversPerUser": 3, "startTimeoutSeconds": 60, "stopTimeoutSeconds": 20},
    }


# --- GitLab -----------------------------------------------------------------------------


@dataclass
class GitLabWorld:
    """GitLab (the stand-in, on its own thread) with the hub's OAuth application, and a hub
    whose users log in with it."""

    gitlab: GitLabStandIn
    thread: StandInThread
    hub: RunningHub
    root: Path  # the repositories the stand-in's projects serve
    shas: list[str] = field(default_factory=list)  # the main project's commits, oldest first
    # who logged in through GitLab (the last login of each): their hub clients
    clients: dict[str, Client] = field(default_factory=dict)

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        workdir: Path,
        gitlab: GitLabStandIn,
        config: dict[str, Any],
        *,
        root: Path,
        shas: list[str] | None = None,
        hub_env: dict[str, str] | None = None,
    ) -> Iterator[GitLabWorld]:
        """Start the stand-in, register the hub's application at the hub's callback, start the
        hub (in `workdir`) with `config`, whose provider is pointed at the stand-in; stop
        both at the end. `config["provider"]` adds to `{"kind": "gitlab", "url": ...}`."""
        with StandInThread(gitlab) as thread:
            provider = {"kind": "gitlab", "url": gitlab.url, **config.get("provider", {})}
            env = {"GITLAB_CLIENT_ID": CLIENT_ID, "GITLAB_CLIENT_SECRET": CLIENT_SECRET,
                   **(hub_env or {})}
            hub = RunningHub(workdir, {**config, "provider": provider}, extra_env=env)
            # registered as the README says
            gitlab.add_oauth_app(CLIENT_ID, CLIENT_SECRET, f"{hub.url}/hub/oauth_callback",
                                 scopes=" ".join(GITLAB_SCOPES))
            try:
                hub.start()
                yield cls(gitlab, thread, hub, root, shas or [])
            finally:
                hub.stop()

    def login(self, user: str) -> Client:
        """Log in through GitLab OAuth (as a browser does), then act with a hub token of
        that user (kept in `clients`)."""
        self.clients[user] = login(self.hub, self.gitlab, user)
        return self.clients[user]

    def gitlab_token(self, user: str) -> str:
        """The GitLab access token the hub holds for `user` (from the OAuth login)."""
        return gitlab_token(self.hub, user)

    def bare(self, project: str) -> Path:
        """The bare repository a project serves."""
        repo = self.gitlab.projects[project].repo
        assert repo is not None, f"{project} has no repository"
        return Path(repo)


def login(hub: RunningHub, gitlab: GitLabStandIn, user: str) -> Client:
    """Log in through GitLab OAuth (as a browser does), then act with a hub token of that user."""
    gitlab.oauth_user = user
    browser = requests.Session()
    browser.get(f"{hub.url}/hub/oauth_login", timeout=30)
    assert "jupyterhub-session-id" in browser.cookies, "GitLab login did not complete"
    return Client(hub, user)


def gitlab_token(hub: RunningHub, user: str) -> str:
    """The GitLab access token the hub holds for `user`, from its auth state."""
    model = hub.admin("GET", f"users/{user}").json()
    return str(model["auth_state"]["access_token"])


# --- the GitLab provider alone, without a hub ------------------------------------------------


def token() -> str:
    """Distinctive tokens, so a leak check cannot match anything by accident."""
    return "glpat-" + secrets.token_hex(16)


def provider_config(url: str, *, images: dict[str, Any] | None = None, **provider: Any) -> Config:
    """A validated config for the GitLab provider at `url` (the stand-in), as the glue loads it."""
    return validate({
        "images": {"default": PROVIDER_IMAGE, "allowedRegistries": [REGISTRY], **(images or {})},
        "profiles": [{"name": "small", "cpu": 1, "memory": "1G"}],
        "provider": {"kind": "gitlab", "url": url, "timeoutSeconds": 5, **provider},
    })


# --- the GitLab flow's world: every kind of member, group and share ----------------------------

FLOW_USERS = ("dev", "guest", "reporter", "maint", "owner", "outsider", "grouped", "shared-dev",
              "shared-rep", "invited", "solo", "blocked", "narrow", "short", "mover", "counted",
              "halted")


def flow_gitlab(root: Path) -> tuple[GitLabStandIn, list[str]]:
    """The stand-in of the GitLab flow tests: renku/demo (three commits, an image for the
    first) with a member of every role, a subgroup's project, a project shared with two
    groups, a group invited into renku, a personal project and one to rename; its shas."""
    shas = make_repo(root, "renku/demo")
    for path in ("renku/sub/deep", "renku/shared", "solo/notes", "renku/old-name"):
        make_repo(root, path)
    standin = GitLabStandIn(registry_host=REGISTRY)
    for user in FLOW_USERS:
        standin.add_user(user)
    standin.add_project(
        "renku/demo",
        repo=root / "renku/demo.git",
        members={"dev": 30, "guest": 10, "reporter": 20, "maint": 40, "owner": 50,
                 "blocked": 30, "narrow": 30, "short": 30, "counted": 30, "halted": 30},
    )
    standin.add_group("renku/sub", members={"grouped": 30})
    standin.add_project("renku/sub/deep", repo=root / "renku/sub/deep.git")
    standin.add_project("public/open", visibility="public", repo=root / "renku/demo.git")
    # a project shared with two groups, one capped at Developer and one at Reporter
    standin.add_group("team-dev", members={"shared-dev": 40})
    standin.add_group("team-rep", members={"shared-rep": 30})
    standin.add_project("renku/shared", repo=root / "renku/shared.git",
                        shared_with={"team-dev": 30, "team-rep": 20})
    # a group invited into the project's group
    standin.add_group("partners", members={"invited": 30})
    standin.add_group("renku", shared_with={"partners": 30})
    standin.add_project("solo/notes", repo=root / "solo/notes.git")  # personal namespace
    standin.add_project("renku/old-name", repo=root / "renku/old-name.git", members={"mover": 30})
    standin.add_registry_tag("renku/demo", shas[0][:7])
    return standin, shas


FLOW_CONFIG: dict[str, Any] = {
    "images": {"default": DEFAULT_IMAGE, "allowedRegistries": [REGISTRY]},
    "profiles": [SMALL],
    "provider": {"timeoutSeconds": 2, "cacheSeconds": 60},
    "launch": {"startTimeoutSeconds": 60},
}


@contextlib.contextmanager
def flow_world(
    factory: pytest.TempPathFactory, hub_env: dict[str, str]
) -> Iterator[GitLabWorld]:
    """The GitLab flow's world (`flow_gitlab`) with a hub of its own, `hub_env` added to the
    hub's environment."""
    root = factory.mktemp("gitlab-repos")
    standin, shas = flow_gitlab(root)
    with GitLabWorld.running(factory.mktemp("gitlab-hub"), standin, FLOW_CONFIG, root=root,
                             shas=shas, hub_env=hub_env) as world:
        yield world
