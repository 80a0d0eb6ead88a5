"""Turn a fresh checkout into the user's working copy: their autosave back, git through the
session's component, their name on commits.

It runs right after the clone step, while the GitLab token is still at hand
(on Kubernetes: the `git-session` init container, glue image). Then:

- the autosave of this user and commit is restored (`autosave.restore`), or,
  when the launch asked to start clean, deleted on the remote; an autosave
  branch whose tip this service did not sign for the user is not restored
  (and kept): the answer's `restore_refused` says why, and the launch goes on;
- `origin` becomes the session's git token component
  (`http://127.0.0.1:PORT/<namespace>/<project>.git`, see glue/session/gitproxy.py),
  so the session's git never talks to GitLab itself;
- the component's per-server secret is copied into the checkout's `.git`
  (mode 0600, never committed, never autosaved) and a credential helper for
  the component's URL only reads it from there: `.git/config` names the file,
  holds no secret, and the GitLab token is nowhere in the workspace;
- `user.name` and `user.email` are set from the launch's caller.

    python -m glue.session.gitsession --workspace DIR --origin URL --secret-file FILE
        --name NAME --email EMAIL [--seen-as DIR]
        [--remote URL --branch B --launched SHA [--discard] [--key-file FILE]]
        [--report FILE]

The autosave's signature is checked by the session's git component (the
remote is the component in the embedded default), or with `--key-file` (on
Kubernetes, where this step runs before the component and fetches from GitLab).

A workspace that already holds a session of the launched commit (a paused server's,
glue.session.workspace) is reopened as it is: no restore, no discard (`reopened`); any
other is marked as holding one once set up.

It prints one JSON object (`restored_from`, `commit`, `discarded`,
`restore_refused`, `reopened`), also
written to `--report` (the container's termination message, which the
spawner reads). The GitLab token comes as for the clone step (a file named
by NOTEBOOKS_GIT_TOKEN_FILE). Standard library only: it runs in the glue image.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from glue.session import autosave, workspace
from glue.session.clone import TOKEN_FILE_ENV
from glue.session.steps import Step

SECRET_NAME = "renku-session-secret"


class SessionError(Exception):
    """The working copy could not be set up; the message is for people."""


def step(
    workspace: str,
    *,
    origin: str,
    secret_file: str,
    name: str,
    email: str,
    seen_as: str | None = None,
    remote: str | None = None,
    branch: str | None = None,
    launched: str | None = None,
    discard: bool = False,
    report: str | None = None,
    token_file: str | None = None,
    key_file: str | None = None,
    python: str = "python",
) -> Step:
    """The command line of this step, as a spawner runs it (names and paths, no secret)."""
    argv = [python, "-m", "glue.session.gitsession", "--workspace", workspace, "--origin", origin]
    argv += ["--secret-file", secret_file, "--name", name, "--email", email]
    for flag, value in (
        ("--seen-as", seen_as),
        ("--remote", remote),
        ("--branch", branch),
        ("--launched", launched),
        ("--report", report),
        ("--key-file", key_file),
    ):
        if value is not None:
            argv += [flag, value]
    return Step(
        argv + (["--discard"] if discard else []),
        {TOKEN_FILE_ENV: token_file} if token_file else {},
    )


def credential_helper(secret_path: str) -> str:
    """A git credential helper that answers `get` from the secret file, and ignores `store`
    and `erase` (a refused push must not make git forget the session's only credential)."""
    path = shlex.quote(secret_path)
    return (
        f'!f() {{ test "$1" = get || exit 0; echo username=oauth2; '
        f'read -r t < {path}; printf "password=%s\\n" "$t"; }}; f'
    )


def configure(
    workspace: Path, *, origin: str, secret: str, name: str, email: str, seen_as: Path
) -> None:
    """Point the checkout at the component, with its secret and the user's identity."""
    secret_file = workspace / ".git" / SECRET_NAME
    secret_file.unlink(missing_ok=True)
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    parts = urlsplit(origin)
    scope = f"credential.{parts.scheme}://{parts.netloc}"
    seen = str(seen_as / ".git" / SECRET_NAME)
    for args in (
        ("remote.origin.url", origin),
        ("--replace-all", f"{scope}.helper", ""),  # no helper of the image's config first
        ("--add", f"{scope}.helper", credential_helper(seen)),
        ("user.name", name),
        ("user.email", email),
    ):
        result = subprocess.run(
            ["git", "-C", str(workspace), "config", *args],
            env={**_plain_env(), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode:
            raise SessionError(f"git config {args[-2]} failed: {result.stderr.strip()}")


def _plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


def restore(args: argparse.Namespace) -> dict[str, object]:
    """The autosave back; a refused one (not signed for this user) is said, not fatal."""
    try:
        signer = autosave.signer_for(args.remote, args.branch, args.key_file)
        tip = autosave.restore(
            args.workspace, args.remote, args.branch, launched=args.launched, signer=signer
        )
    except autosave.AutosaveRefused as e:
        return {"restore_refused": str(e)}
    return {"restored_from": args.branch, "commit": tip} if tip is not None else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, required=True, help="the fresh checkout")
    parser.add_argument("--origin", required=True, help="the component's URL of the project")
    parser.add_argument("--secret-file", type=Path, required=True, help="the per-server secret")
    parser.add_argument("--name", required=True, help="git user.name")
    parser.add_argument("--email", required=True, help="git user.email")
    parser.add_argument("--seen-as", type=Path, help="the checkout's path in the notebook")
    parser.add_argument("--remote", help="where autosaves are (GitLab, with the token file)")
    parser.add_argument("--branch", help="the autosave branch of this user and commit")
    parser.add_argument("--launched", help="the launched commit's full sha")
    parser.add_argument("--discard", action="store_true", help="start clean, delete the autosave")
    parser.add_argument("--report", type=Path, help="also write the JSON answer here")
    parser.add_argument("--key-file", type=Path, help="the autosave branch's signing key")
    args = parser.parse_args(argv)
    if bool(args.remote) != bool(args.branch) or (args.remote and not args.launched):
        parser.error("--remote, --branch and --launched go together")
    out: dict[str, object] = {
        "restored_from": None,
        "commit": None,
        "discarded": False,
        "restore_refused": None,
        "reopened": False,
    }
    try:
        if args.launched and workspace.opened(args.workspace, args.launched):
            # a paused server's workspace: newer than any autosave, kept as it is
            out["reopened"] = True
        elif args.remote and args.discard:
            out["discarded"] = autosave.delete(args.remote, args.branch)
        elif args.remote:
            out.update(restore(args))
        configure(
            args.workspace,
            origin=args.origin,
            secret=args.secret_file.read_text().strip(),
            name=args.name,
            email=args.email,
            seen_as=args.seen_as or args.workspace,
        )
        if args.launched:
            workspace.mark_opened(args.workspace, args.launched)
    except (autosave.AutosaveError, SessionError, OSError, ValueError) as e:
        print(f"session: {e}", file=sys.stderr)
        return 1
    answer = json.dumps(out)
    if args.report:
        try:
            args.report.write_text(answer)
        except OSError as e:  # the answer is also on stdout: the step did its job
            print(f"session: could not write {args.report}: {e}", file=sys.stderr)
    print(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
