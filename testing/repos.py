"""git for the tests: commands with a fixed identity, and bare repositories with history.

Launches are pinned to commits, so every test needs repositories whose shas it knows.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.org",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.org",
}


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def workspace_git(workspace: Path, *args: str) -> str:
    """git in a server's workspace, which belongs to the server's sandbox user, not to us."""
    return git(workspace, "-c", f"safe.directory={workspace}", *args)


def make_repo(root: Path, full_path: str, versions: int = 3) -> list[str]:
    """A bare repo `<root>/<full_path>.git` with `versions` commits; shas oldest first.

    Commit i has README.md "version i" and a notebook `notebooks/analysis.ipynb`.
    """
    bare = root / f"{full_path}.git"
    work = root / ".work" / full_path
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", "main")
    (work / "notebooks").mkdir()
    for i in range(1, versions + 1):
        (work / "README.md").write_text(f"version {i}\n")
        (work / "notebooks" / "analysis.ipynb").write_text(
            '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n'
        )
        git(work, "add", ".")
        git(work, "commit", "-q", "-m", f"version {i}")
    bare.parent.mkdir(parents=True, exist_ok=True)
    git(root, "clone", "-q", "--bare", str(work), str(bare))
    return git(bare, "rev-list", "--reverse", "main").splitlines()
