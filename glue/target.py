"""What a launch URL names: namespace, project, commit and notebook, validated.

This is the first step of every request (request -> validate): nothing that
fails here reaches the hub, the git provider or git.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import BadRequest, NotFound

SHA_RE = re.compile(r"^[0-9a-fA-F]{40}$")
# GitLab path segments: letters, digits, '_', '.', '-'; not starting with '-'
SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,254}$")
MAX_NAMESPACE_DEPTH = 20
# GitLab's Route#path: a project's full path (namespace/project) is 1..255 characters
MAX_FULL_PATH_CHARS = 255
MAX_NOTEBOOK_CHARS = 4096
SERVER_NAME_MAX = 30


@dataclass(frozen=True)
class Target:
    """One commit of one project, and optionally a notebook inside it."""

    namespace: str
    project: str
    commit_sha: str
    notebook: str = ""

    @property
    def full_path(self) -> str:
        return f"{self.namespace}/{self.project}"

    @property
    def server_name(self) -> str:
        """Deterministic hub server name, valid for JupyterHub 5 and 6 and short for pod names."""
        digest = hashlib.sha256(f"{self.full_path}@{self.commit_sha}".encode()).hexdigest()[:12]
        slug = re.sub(r"[^a-z0-9]+", "-", self.project.lower()).strip("-")
        slug = re.sub(r"^[^a-z]+", "", slug)[: SERVER_NAME_MAX - len(digest) - 1].rstrip("-")
        return f"{slug or 'nb'}-{digest}"

    def options(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "project": self.project,
            "commit_sha": self.commit_sha,
            "notebook": self.notebook,
        }


def _check_segment(segment: str, what: str) -> None:
    if (
        not SEGMENT_RE.match(segment)
        or segment.endswith((".git", ".atom"))
        or segment in {".", ".."}
    ):
        raise BadRequest(
            f"{what} {segment!r} is not a valid project path segment "
            "(letters, digits, '_', '.' and '-', not starting with '-').",
            code="invalid_path",
        )


def check_notebook(notebook: str) -> str:
    """A relative path inside the repository, or '' for none."""
    if not notebook:
        return ""
    if len(notebook) > MAX_NOTEBOOK_CHARS:
        raise BadRequest(
            f"The notebook path is longer than {MAX_NOTEBOOK_CHARS} characters.",
            code="invalid_notebook",
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in notebook):
        raise BadRequest("The notebook path contains control characters.", code="invalid_notebook")
    if notebook.startswith("/") or "\\" in notebook:
        raise BadRequest(
            "The notebook path must be relative to the repository.", code="invalid_notebook"
        )
    parts = notebook.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise BadRequest(
            "The notebook path must stay inside the repository (no '..', '.' or empty parts).",
            code="invalid_notebook",
        )
    return notebook


def check_project(namespace: str, project: str) -> None:
    """GitLab's path rules, so that no name GitLab could not hold reaches a provider or disk."""
    parts = namespace.split("/")
    if len(parts) > MAX_NAMESPACE_DEPTH:
        raise BadRequest("The namespace is nested too deeply.", code="invalid_path")
    if len(namespace) + 1 + len(project) > MAX_FULL_PATH_CHARS:
        raise BadRequest(
            f"The project's full path is longer than GitLab's {MAX_FULL_PATH_CHARS} characters.",
            code="invalid_path",
        )
    for part in parts:
        _check_segment(part, "namespace part")
    _check_segment(project, "project")


def check_sha(sha: str) -> str:
    if not SHA_RE.match(sha):
        raise BadRequest(
            "The commit must be a full 40-character hexadecimal sha.", code="invalid_commit"
        )
    return sha.lower()


def parse(tail: str) -> Target:
    """Split `<namespace...>/<project>/<sha>[/<notebook>]`; the sha is the first 40-hex segment."""
    segments = tail.split("/")
    if len(segments) < 3:
        raise NotFound("There is nothing at this address.", code="no_route")
    for index in range(2, len(segments)):
        if SHA_RE.match(segments[index]):
            namespace, project = "/".join(segments[: index - 1]), segments[index - 1]
            check_project(namespace, project)
            notebook = check_notebook(
                "/".join(segments[index + 1 :]).removesuffix("/")
                if index + 1 < len(segments)
                else ""
            )
            return Target(namespace, project, check_sha(segments[index]), notebook)
    raise BadRequest(
        "Expected <namespace>/<project>/<commit sha>[/<notebook path>] with a full "
        "40-character hexadecimal commit sha.",
        code="invalid_commit",
    )


def from_options(options: dict[str, object]) -> Target:
    """Rebuild and re-validate a target from hub user_options (the hub-side hooks trust nothing)."""
    try:
        namespace = str(options["namespace"])
        project = str(options["project"])
        sha = str(options["commit_sha"])
    except KeyError as e:
        raise BadRequest(
            f"Launch option {e.args[0]!r} is missing.", code="invalid_options"
        ) from None
    check_project(namespace, project)
    return Target(
        namespace, project, check_sha(sha), check_notebook(str(options.get("notebook", "")))
    )
