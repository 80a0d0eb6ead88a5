"""What a launch URL names: namespace, project, commit and notebook, validated.

This is the first step of every request (request -> validate): nothing that
fails here reaches the hub, the git provider or git.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from glue.core.errors import BadRequest, NotFound

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


# --- links by ref: `<namespace>/<project>/<ref>[/<notebook>]` ---------------------------------

MAX_REF_CHARS = 255
# git check-ref-format's refusals, for one path segment: no control characters, space,
# `~^:?*[\`, `..` or `@{`, no leading `-` or `.`, no trailing `.` or `.lock`
REF_RE = re.compile(
    r"^(?!-|\.)(?!.*\.\.)(?!.*@\{)(?!.*\.lock$)(?!@$)[^\x00-\x20\x7f~^:?*\[\\/]+(?<!\.)$"
)
# what a file name looks like (`analysis.ipynb`, `run.py`): a ref-less path ending in one is
# a launch URL whose `<sha>/..` the browser or the proxy has already removed
FILE_RE = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,9}$")
DOTDOT_REMOVED = (
    "The notebook path must stay inside the repository (no '..'): this address has no commit "
    "left in it, because '..' after the commit removed the commit itself."
)


@dataclass(frozen=True)
class Ref:
    """A project and a ref (branch, tag or short sha; '' for the default branch) to resolve."""

    namespace: str
    project: str
    ref: str
    notebook: str = ""

    @property
    def full_path(self) -> str:
        return f"{self.namespace}/{self.project}"

    def at(self, sha: str) -> Target:
        """The pinned target once the provider has named the ref's commit."""
        return Target(self.namespace, self.project, check_sha(sha), self.notebook)


# what an authorize step checks: a commit (launch, stop, show, an autosave) or a whole project
# (its list of autosaves, as a Ref without a ref)
Wanted = TypeVar("Wanted", Target, Ref)


def check_ref(ref: str) -> str:
    if len(ref) > MAX_REF_CHARS or not REF_RE.match(ref):
        raise BadRequest(
            f"{ref!r} is not a branch, tag or commit name git accepts.", code="invalid_ref"
        )
    return ref


def has_sha(tail: str) -> bool:
    """Whether a launch path names its commit (a 40-hex segment after the project)."""
    return any(SHA_RE.match(segment) for segment in tail.split("/")[2:])


def ref_candidates(tail: str) -> list[Ref]:
    """Every way to read a ref-less path as `<namespace...>/<project>/<ref>[/<notebook>]`,
    shortest namespace first; only the provider can tell which project exists."""
    segments = tail.removesuffix("/").split("/")
    found = []
    for index in range(2, min(len(segments), MAX_NAMESPACE_DEPTH + 2)):
        namespace, project = "/".join(segments[: index - 1]), segments[index - 1]
        try:
            check_project(namespace, project)
            ref = check_ref(segments[index])
            notebook = check_notebook("/".join(segments[index + 1 :]))
        except BadRequest:
            continue
        found.append(Ref(namespace, project, ref, notebook))
    return found


def looks_like_file(name: str) -> bool:
    """`analysis.ipynb`, `run.py`: where a ref should be, such a name means the path was a
    launch URL with `<sha>/..` in it, which the browser or the proxy resolved, sha and all."""
    return bool(FILE_RE.search(name))


def require_sha(tail: str) -> None:
    """Changes (POST, DELETE) name the exact commit: a ref must be resolved first."""
    if has_sha(tail):
        return
    readings = ref_candidates(tail)
    if readings and looks_like_file(readings[0].ref):
        raise BadRequest(DOTDOT_REMOVED, code="invalid_notebook")
    raise BadRequest(
        "Launching and stopping need the full 40-character commit sha; resolve the branch, "
        "tag or short sha first (GET this address answers a redirect to the pinned one).",
        code="invalid_commit",
    )


def ref_from_form(project: str, ref: str, notebook: str, host: str | None) -> Ref:
    """The launcher form's fields: a project as `namespace/project` or its GitLab URL (of
    `host`, when the provider has one), a ref ('' for the default branch), a notebook."""
    text = project.strip()
    if "://" in text:
        parts = urlsplit(text)
        if host is not None and parts.netloc.lower() != host.lower():
            raise BadRequest(f"{text!r} is not a project of {host}.", code="invalid_path")
        text = parts.path
    text = text.strip("/").split("/-/", 1)[0].removesuffix(".git")
    namespace, _, name = text.rpartition("/")
    if not namespace:
        raise BadRequest(
            "Name the project as <namespace>/<project> or by its URL.", code="invalid_path"
        )
    check_project(namespace, name)
    ref = ref.strip()
    return Ref(namespace, name, check_ref(ref) if ref else "", check_notebook(notebook.strip()))
