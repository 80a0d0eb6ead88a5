"""Whether a workspace already holds an opened session of a commit: the one decision, kept
in the workspace itself, by which a start reopens it as it is (no clone, no autosave restore).

A paused server keeps its whole workspace (glue.core.contracts.HIBERNATED_AT): ignored
files, installed packages, unpushed commits. Its next start must not clone over it nor
restore an older autosave onto it. The session step (glue.session.gitsession) marks the
workspace once it is set up for a commit, in `.git/<OPENED_MARK>` (never committed, never
autosaved: git ignores its own directory); the clone step, the session step and the local
spawner ask `opened()` and skip their work when it holds. Keyed on the workspace rather
than on the hub's state, so it holds wherever the workspace goes (a Kubernetes volume that
outlives its pod, a directory that outlives a hub restart), and a fresh or emptied
workspace is cloned again. Standard library only: it runs in the clone image too.
"""

from __future__ import annotations

from pathlib import Path

from glue.core.contracts import OPENED_MARK, SHA


def _mark(workspace: Path) -> Path:
    return workspace / ".git" / OPENED_MARK


def opened(workspace: Path, commit: str) -> bool:
    """A session of `commit` was set up on this workspace, so it holds the user's work."""
    try:
        return _mark(workspace).read_text().strip() == commit
    except OSError:
        return False


def mark_opened(workspace: Path, commit: str) -> None:
    """Say that this workspace now holds a session of `commit` (the session step, at its end)."""
    if not SHA.fullmatch(commit):
        raise ValueError("a launched commit is a full 40-character lowercase sha")
    _mark(workspace).write_text(commit + "\n")
