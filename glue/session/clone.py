"""Put one commit of a repository in place: the one clone routine every spawner runs.

Locally the spawner runs it as a step before the server starts; on Kubernetes
it is the init container's command. It fetches only the wanted commit (no
history), checks it out detached at that sha, and never writes credentials
anywhere: a token is read from the file named by NOTEBOOKS_GIT_TOKEN_FILE by a
credential helper that git calls through the environment, so it appears in no
process argument and no `.git/config`.

    python -m glue.session.clone --source URL --commit SHA --dest DIR [--lfs]

`step()` builds that command line for both spawners, next to the parser that
reads it, so the two cannot drift apart. This module runs in the clone image
and imports nothing but the standard library.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from glue.session import workspace
from glue.session.steps import Step

TOKEN_FILE_ENV = "NOTEBOOKS_GIT_TOKEN_FILE"
# the one git variable of the environment kept: a pod's CA bundle (provider.caBundle)
KEPT_GIT_ENV = ("GIT_SSL_CAINFO",)
# git reads this helper from the environment (GIT_CONFIG_*); it prints the
# token file's content with shell builtins only, so no process shows it
CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; echo username=oauth2; '
    'read -r t < "$NOTEBOOKS_GIT_TOKEN_FILE"; printf "password=%s\\n" "$t"; }; f'
)
_MISSING_COMMIT = re.compile(
    r"not our ref|couldn't find remote ref|no such remote ref|unadvertised object|"
    r"upload-pack: not our ref|not a valid object|bad object",
    re.IGNORECASE,
)
# git's own words for a refused login or a refused token (HTTP 401/403): the status as git
# prints it, never a bare number, which a URL's port or path may hold (`:40109`)
_AUTH_FAILED = re.compile(
    r"authentication failed|could not read username|returned error: 40[13]\b", re.IGNORECASE
)


class CloneError(Exception):
    """The commit could not be put in place; the message is for people."""


def step(
    source: str,
    commit: str,
    dest: str,
    *,
    lfs: bool,
    token_file: str | None,
    python: str = "python",
) -> Step:
    """The clone step for one launch, as the local spawner runs it and the init container does.

    The token is named by a file path in the environment, never given itself,
    so no process listing or pod spec shows it; `python` is the interpreter
    (the hub's own locally, the clone image's on Kubernetes).
    """
    argv = [python, "-m", "glue.session.clone", "--source", source, "--commit", commit]
    argv += ["--dest", dest]
    return Step(
        argv + (["--lfs"] if lfs else []), {TOKEN_FILE_ENV: token_file} if token_file else {}
    )


def _env(lfs: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in KEPT_GIT_ENV}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_LFS_SKIP_SMUDGE="0" if lfs else "1")
    if os.environ.get(TOKEN_FILE_ENV):
        env.update(
            GIT_CONFIG_COUNT="2",
            GIT_CONFIG_KEY_0="credential.helper",
            GIT_CONFIG_VALUE_0=CREDENTIAL_HELPER,
            GIT_CONFIG_KEY_1="credential.useHttpPath",
            GIT_CONFIG_VALUE_1="false",
        )
    return env


def _git(dest: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(dest), *args], env=env, capture_output=True, text=True, check=False
    )


def head(dest: Path) -> str | None:
    result = _git(dest, "rev-parse", "--verify", "-q", "HEAD", env=_env(False))
    return result.stdout.strip() if result.returncode == 0 else None


def clone(source: str, commit: str, dest: Path, *, lfs: bool = False) -> None:
    """Fetch exactly `commit` from `source` into `dest` and check it out detached; nothing
    when `dest` holds an opened session of `commit` (a paused server's, glue.session.workspace)."""
    if workspace.opened(dest, commit):
        return
    env = _env(lfs)
    if (dest / ".git").is_dir():
        checked_out = head(dest)
        if checked_out == commit:
            return  # a restarted server keeps its workspace and its changes
        if checked_out is None:
            _forget_unfinished(dest, source, env)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise CloneError(f"The workspace {dest} is not empty and holds another checkout.")
    for args in (("init", "-q"), ("remote", "add", "origin", source)):
        result = _git(dest, *args, env=env)
        if result.returncode:
            raise CloneError(f"git {args[0]} failed: {result.stderr.strip()}")
    fetch = _git(dest, "fetch", "-q", "--depth", "1", "--no-tags", "origin", commit, env=env)
    if fetch.returncode:
        raise CloneError(_fetch_failure(fetch.stderr, source, commit))
    checkout = _git(
        dest, "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit, env=env
    )
    if checkout.returncode:
        raise CloneError(f"Could not check out {commit}: {checkout.stderr.strip()}")
    if lfs:
        pull = _git(dest, "lfs", "pull", env=env)
        if pull.returncode:
            raise CloneError(f"Could not fetch Git LFS objects: {pull.stderr.strip()}")
    if head(dest) != commit:
        raise CloneError(f"The checkout is not at {commit}.")


# `git remote get-url`'s exit status for a repository without that remote
NO_SUCH_REMOTE = 2


def _forget_unfinished(dest: Path, source: str, env: dict[str, str]) -> None:
    """Empty a workspace (no commit checked out) where an earlier clone of `source` was killed:
    its origin is `source`, or it has none yet (killed between `git init` and adding it).

    Without a checkout no server ever ran on it, so nobody's work can be in it;
    a repository of another origin, or one git cannot read, is left for the caller's
    "not empty" refusal.
    """
    origin = _git(dest, "remote", "get-url", "origin", env=env)
    ours = origin.returncode == NO_SUCH_REMOTE or (
        origin.returncode == 0 and origin.stdout.strip() == source
    )
    if not ours:
        return
    for entry in dest.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _fetch_failure(stderr: str, source: str, commit: str) -> str:
    if _MISSING_COMMIT.search(stderr):
        return f"Commit {commit} was not found in {source}."
    if _AUTH_FAILED.search(stderr):
        return f"Access to {source} was refused; log in again to renew your token."
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return f"Could not fetch {commit} from {source}: {lines[-1] if lines else 'git failed'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="repository URL, without credentials")
    parser.add_argument("--commit", required=True, help="full 40-character sha")
    parser.add_argument("--dest", required=True, type=Path, help="workspace directory")
    parser.add_argument("--lfs", action="store_true", help="also fetch Git LFS objects")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[0-9a-f]{40}", args.commit):
        print("clone: --commit must be a full 40-character lowercase sha", file=sys.stderr)
        return 2
    if workspace.opened(args.dest, args.commit):
        print(f"clone: {args.dest} holds its session of {args.commit} already; kept as it is")
        return 0
    try:
        clone(args.source, args.commit, args.dest, lfs=args.lfs)
    except CloneError as e:
        print(f"clone: {e}", file=sys.stderr)
        return 1
    print(f"clone: {args.source} at {args.commit} is in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
