"""Save a session's work to an autosave branch, and put it back on relaunch.

Representation on the remote, on branch `<prefix>/<user>/<sha>`
(`glue.core.contracts.autosave_branch`): the user's own commits on top of the
launched sha are pushed as they are; their uncommitted work (tracked changes and
untracked files; what git ignores, by `.gitignore` or the checkout's `.git/info/exclude`,
is not saved; files above `max_file_bytes` skipped and listed) becomes ONE extra commit
on top (also when nothing is uncommitted: it carries the signature), authored and
committed as the user (`--name`/`--email`: their GitLab `commit_email`, as the session's
own commits are, so that push rules such as "reject unverified users" accept it;
"renku-notebooks autosave" when none is given), whose message lists the skipped files
and ends with the trailers `Renku-Autosave: uncommitted` and
`Renku-Autosave-Signature: <hex>`. The push goes to that one branch, forced
(the branch is ours), never to another ref. A clean workspace (HEAD at the
launched sha, nothing uncommitted) pushes nothing.

The signature (`signature()`) is an HMAC of the branch, the commit's tree and
its parent under a key of that one branch (`branch_key()`), which only the
session's git component (glue/session/gitproxy.py, outside the session's reach) and
the restore hold: another user can push to this user's branch directly on
GitLab, but cannot sign for it. The save asks the component to sign
(`ComponentSigner`: `POST <remote>/renku-autosave/sign`, with the session's
git password), or signs with a key file (`KeySigner`: the Kubernetes restore,
which runs before the component).

`restore()` reverses it after the clone step, only for a tip whose signature
is right (`AutosaveRefused` otherwise: nothing restored, the branch kept): the
tip checked out detached, then reset (`--mixed`) to its parent, so those files
are uncommitted again and untracked files untracked.

The workspace belongs to the user and may be hostile: its `.git/config`,
hooks and attribute filters can name commands (`core.fsmonitor`,
`filter.<x>.clean`, `core.hooksPath`, `include.path`). Git therefore never
runs with them: every command gets a git directory of our own (a temporary
GIT_DIR whose alternates point at the workspace's object store, HEAD read
from the workspace's files without git, our own index file), no system or
global config, a temporary HOME and no hooks. `.gitignore` and
`.gitattributes` of the work tree are data to git (no driver is configured,
so no filter runs).

    python -m glue.session.autosave status  --workspace DIR --launched SHA [--max-file-bytes N]
    python -m glue.session.autosave save    --workspace DIR --launched SHA --remote URL --branch B
                                    [--max-file-bytes N] [--key-file FILE]
                                    [--name NAME --email EMAIL]
    python -m glue.session.autosave restore --workspace DIR --remote URL --branch B
                                    [--key-file FILE]
    python -m glue.session.autosave delete  --remote URL --branch B

Each prints one JSON object; a failure exits 1 with a sentence saying what was
not saved (for a refused push, the reason GitLab gave, e.g. a push rule's).
Credentials come as for the clone step: a file named by NOTEBOOKS_GIT_TOKEN_FILE,
read by a credential helper (no argument, no config file holds them). `step()`
builds the command line for both spawners.
Standard library only: it runs in the glue image.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from glue.core import contracts
from glue.session.clone import CREDENTIAL_HELPER, KEPT_GIT_ENV, TOKEN_FILE_ENV
from glue.session.steps import Step

AUTHOR_NAME = "renku-notebooks autosave"
AUTHOR_EMAIL = "autosave@renku-notebooks.invalid"
TRAILER_KEY = "Renku-Autosave"
TRAILER = f"{TRAILER_KEY}: uncommitted"
SIGNATURE_KEY = "Renku-Autosave-Signature"
SIGN_PATH = "renku-autosave/sign"  # below the project's URL at the component
KEY_CONTEXT = b"renku-notebooks autosave signing key v1\0"
SIGNATURE = re.compile(r"[0-9a-f]{64}")
OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
SIGN_TIMEOUT = 30
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_INDEX_BYTES = 512 * 1024 * 1024
SAFE_CONFIG = {
    # nothing of the workspace's config is read; these close what git would run by default
    "core.hooksPath": "/dev/null",
    "core.fsmonitor": "false",
    "core.autocrlf": "false",
    "core.untrackedCache": "false",
    "gc.auto": "0",
    # large files (data, images) are stored fast and sent without a delta search
    "core.bigFileThreshold": "1m",
    "core.compression": "1",
    "maintenance.auto": "false",
    "advice.detachedHead": "false",
    "protocol.file.allow": "always",
    "credential.useHttpPath": "false",
}


class AutosaveError(Exception):
    """The work could not be saved or restored; the message says what was not."""


class AutosaveRefused(AutosaveError):
    """The branch's tip is not an autosave this service signed for this branch: it is not
    restored (and not deleted); the launch goes on without it."""


class Status(NamedTuple):
    """What a stop would save: the Stop button shows it. (NamedTuples, not dataclasses: the
    step runs at every stop, twice, and `dataclasses` alone is a quarter of its imports.)"""

    clean: bool
    uncommitted: int  # changed, added or deleted paths not committed
    unpushed: int  # the user's commits on top of the launched sha
    skipped: list[str]  # uncommitted files above the size limit


class Saved(NamedTuple):
    """What `save` pushed: nothing for a clean workspace."""

    pushed: bool
    branch: str
    commit: str | None
    status: Status

    def answer(self) -> dict[str, Any]:
        return {**self._asdict(), "status": self.status._asdict()}


def step(
    action: str,
    *,
    workspace: str | None = None,
    launched: str | None = None,
    remote: str | None = None,
    branch: str | None = None,
    max_file_bytes: int | None = None,
    token_file: str | None = None,
    python: str = "python",
    identity: tuple[str, str] | None = None,
) -> Step:
    """The command line for one action, as the local spawner and the sidecar run it;
    `identity` (name, email) is whom a save's commit is authored and committed by."""
    argv = [python, "-m", "glue.session.autosave", action]
    name, email = identity if identity and all(identity) else (None, None)
    for flag, value in (
        ("--workspace", workspace),
        ("--launched", launched),
        ("--remote", remote),
        ("--branch", branch),
        ("--max-file-bytes", None if max_file_bytes is None else str(max_file_bytes)),
        ("--name", name),
        ("--email", email),
    ):
        if value is not None:
            argv += [flag, value]
    return Step(argv, {TOKEN_FILE_ENV: token_file} if token_file else {})


# --- signatures ----------------------------------------------------------------------------


def branch_key(master: bytes, branch_name: str) -> str:
    """The key of one autosave branch (of one user and commit), derived from a secret of the
    hub's that no session sees: its holder can sign for that branch only, which is harmless
    to give the branch's own user's component."""
    return hmac.new(master, KEY_CONTEXT + branch_name.encode(), hashlib.sha256).hexdigest()


def signature(key: str, branch_name: str, tree: str, parent: str) -> str:
    """What proves an autosave commit of `branch_name` with this tree on this parent."""
    data = f"{branch_name}\0{tree}\0{parent}".encode()
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()


class Signer(Protocol):
    def sign(self, tree: str, parent: str) -> str:
        """The signature of an autosave commit of the signer's branch."""
        ...


class KeySigner(NamedTuple):
    """Signs with the branch's key itself (the component; the Kubernetes restore)."""

    key: str
    branch: str

    def sign(self, tree: str, parent: str) -> str:
        return signature(self.key, self.branch, tree, parent)


class ComponentSigner(NamedTuple):
    """Asks the session's git component, which holds the key and decides the branch itself;
    authenticated like a push (the per-server secret, from NOTEBOOKS_GIT_TOKEN_FILE)."""

    remote: str  # the project's URL at the component
    branch: str  # the branch the caller means: refused when the component's differs

    def sign(self, tree: str, parent: str) -> str:
        import urllib.error  # only a save or a restore needs them: `status` stays quick
        import urllib.request

        secret_file = os.environ.get(TOKEN_FILE_ENV, "")
        try:
            secret = Path(secret_file).read_text().strip() if secret_file else ""
        except OSError:
            secret = ""
        if not self.remote.startswith(("http://", "https://")):
            raise AutosaveError("only the session's git component signs autosaves")
        auth = base64.b64encode(f"oauth2:{secret}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 (http only, checked above)
            f"{self.remote.rstrip('/')}/{SIGN_PATH}",
            data=json.dumps({"tree": tree, "parent": parent}).encode(),
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
            method="POST",
        )
        # straight to the component on loopback: no proxy of the environment in between
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=SIGN_TIMEOUT) as response:
                answer = json.loads(response.read(64 * 1024))
        except urllib.error.HTTPError as e:
            raise AutosaveError(f"the session's git component refused to sign ({e.code})") from None
        except (OSError, ValueError) as e:
            raise AutosaveError(f"the session's git component did not sign ({e})") from None
        if not isinstance(answer, dict) or answer.get("branch") != self.branch:
            raise AutosaveError("the session's git component signs for another branch")
        value = answer.get("signature")
        if not isinstance(value, str) or not SIGNATURE.fullmatch(value):
            raise AutosaveError("the session's git component gave no signature")
        return value


def signer_for(remote: str, branch_name: str, key_file: Path | None) -> Signer:
    """The key file's signer when one is given, else the component's at `remote`."""
    if key_file is None:
        return ComponentSigner(remote, branch_name)
    try:
        return KeySigner(key_file.read_text().strip(), branch_name)
    except OSError as e:
        # no restore, no save without it: the signature cannot be checked, nor made
        raise AutosaveRefused(
            f"The autosave {branch_name} was not restored or saved: its key could not be read "
            f"({e.strerror})."
        ) from None


# --- a git of our own -----------------------------------------------------------------------


class _Git(NamedTuple):
    """Git with our own git directory, config and index, on the workspace's work tree."""

    git_dir: Path
    env: dict[str, str]
    work_tree: Path | None

    def run(self, *args: str, check: bool = True, input: bytes | None = None) -> bytes:
        return self.result(*args, check=check, input=input).stdout

    def result(
        self, *args: str, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        config = [arg for k, v in SAFE_CONFIG.items() for arg in ("-c", f"{k}={v}")]
        tree = [f"--work-tree={self.work_tree}"] if self.work_tree else []
        result = subprocess.run(
            ["git", f"--git-dir={self.git_dir}", *tree, *config, *args],
            env=self.env,
            input=input,
            capture_output=True,
            check=False,
            cwd=self.work_tree or self.git_dir,
        )
        if check and result.returncode:
            error = result.stderr.decode(errors="replace").strip().splitlines()
            raise subprocess.CalledProcessError(
                result.returncode, args[0], result.stdout, error[-1] if error else ""
            )
        return result


def _env(home: Path, identity: tuple[str, str] | None = None, **extra: str) -> dict[str, str]:
    kept = ("PATH", "LANG", TOKEN_FILE_ENV, *KEPT_GIT_ENV)
    env = {k: os.environ[k] for k in kept if k in os.environ}
    name, email = identity if identity and all(identity) else (AUTHOR_NAME, AUTHOR_EMAIL)
    env.update(
        HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_TERMINAL_PROMPT="0",
        GIT_ATTR_NOSYSTEM="1",
        GIT_AUTHOR_NAME=name,
        GIT_AUTHOR_EMAIL=email,
        GIT_COMMITTER_NAME=name,
        GIT_COMMITTER_EMAIL=email,
        **extra,
    )
    if env.get(TOKEN_FILE_ENV):
        env.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="credential.helper",
            GIT_CONFIG_VALUE_0=CREDENTIAL_HELPER,
        )
    return env


@contextmanager
def _own_git(
    workspace: Path | None,
    failure: str,
    *,
    objects: str = "alternate",
    head: str | None = None,
    identity: tuple[str, str] | None = None,
) -> Iterator[_Git]:
    """A temporary git directory: `objects="alternate"` reads the workspace's objects (new
    ones stay ours), `"shared"` writes into them (restore), `"none"` has only its own."""
    with tempfile.TemporaryDirectory(prefix="autosave-") as tmp:
        git_dir = Path(tmp, "git")
        for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags", "info"):
            (git_dir / sub).mkdir(parents=True)
        (git_dir / "config").write_text("[core]\n\trepositoryformatversion = 0\n")
        (git_dir / "HEAD").write_text(f"{head}\n" if head else "ref: refs/heads/autosave\n")
        extra = {"GIT_INDEX_FILE": str(Path(tmp, "index"))}
        if workspace is not None:
            store = _object_store(workspace, failure)
            # git's data files of the checkout, copied as data: its shallow boundary, and
            # its own list of ignored files (what `git status` hides is not saved either)
            for name in ("shallow", "info/exclude"):
                theirs = workspace / ".git" / name
                if theirs.is_file() and not theirs.is_symlink():
                    shutil.copyfile(theirs, git_dir / name)
            if objects == "shared":
                extra["GIT_OBJECT_DIRECTORY"] = str(store)
            elif objects == "alternate":
                (git_dir / "objects/info/alternates").write_text(f"{store}\n")
        yield _Git(git_dir, _env(Path(tmp), identity, **extra), workspace)


def _object_store(workspace: Path, failure: str) -> Path:
    """The workspace's object store, refused when it could reach objects outside it
    (alternates, symlinks): autosave may run where other workspaces are readable."""
    dot_git = workspace / ".git"
    store = dot_git / "objects"
    for path in (workspace, dot_git, store):
        if path.is_symlink() or not path.is_dir():
            raise AutosaveError(f"{failure}: {path} is not the launched checkout's git directory.")
    if (store / "info" / "alternates").exists() or (store / "info" / "alternates").is_symlink():
        raise AutosaveError(f"{failure}: {store} borrows objects from elsewhere (alternates).")
    stack = [store]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    raise AutosaveError(
                        f"{failure}: {entry.path} is a symbolic link in the object store."
                    )
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
    return store.resolve()


def _read_small(path: Path) -> str | None:
    if path.is_symlink() or not path.is_file():
        return None
    with path.open("rb") as f:
        return f.read(4096).decode(errors="replace")


def read_head(workspace: Path) -> str | None:
    """The workspace's HEAD commit, read from its files (no git runs in the workspace)."""
    dot_git = workspace / ".git"
    content = (_read_small(dot_git / "HEAD") or "").strip()
    for _ in range(5):  # a symbolic ref chain, as git follows it
        if contracts.SHA.fullmatch(content):
            return content
        if not content.startswith("ref: refs/"):
            return None
        ref = content[5:].strip()
        if ".." in ref.split("/"):
            return None
        loose = _read_small(dot_git / ref)
        if loose is not None:
            content = loose.strip()
            continue
        packed = _read_small_file(dot_git / "packed-refs")
        match = re.search(rf"^([0-9a-f]{{40}}) {re.escape(ref)}$", packed, re.MULTILINE)
        return match.group(1) if match else None
    return None


def _read_small_file(path: Path, limit: int = 16 * 1024 * 1024) -> str:
    if path.is_symlink() or not path.is_file():
        return ""
    with path.open("rb") as f:
        return f.read(limit).decode(errors="replace")


# --- status and save ------------------------------------------------------------------------


def _stage(git: _Git, workspace: Path, max_file_bytes: int) -> list[str]:
    """Put the work tree into our index (starting from a copy of the workspace's, whose stat
    data spares rehashing unchanged files); returns the files skipped for their size."""
    index = Path(git.env["GIT_INDEX_FILE"])
    theirs = workspace / ".git" / "index"
    copied = False
    if theirs.is_file() and not theirs.is_symlink() and theirs.stat().st_size < MAX_INDEX_BYTES:
        shutil.copyfile(theirs, index)
        copied = _index_readable(git)
    if not copied:
        index.unlink(missing_ok=True)
        git.run("read-tree", "HEAD")
    changed = git.run("ls-files", "-z", "--modified", "--others", "--exclude-standard")
    skipped = []
    for name in sorted(set(filter(None, changed.decode(errors="surrogateescape").split("\0")))):
        path = workspace / name
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue  # deleted: nothing to measure
        if path.is_file() and not path.is_symlink() and info.st_size > max_file_bytes:
            skipped.append(name)
    specs = [".", *(f":(exclude,literal){name}" for name in skipped)]
    git.run(
        "add",
        "-A",
        "--pathspec-from-file=-",
        "--pathspec-file-nul",
        input="\0".join(specs).encode(errors="surrogateescape"),
    )
    return skipped


def _index_readable(git: _Git) -> bool:
    try:
        git.run("ls-files", "--cached", "--", ":(literal).")
        # flags the user may have set to hide changes from themselves do not hide them from us
        git.run("update-index", "-q", "--no-skip-worktree", "--no-assume-unchanged", "--refresh")
    except subprocess.CalledProcessError:
        return False
    return True


def _inspect(git: _Git, workspace: Path, launched: str, head: str, max_bytes: int) -> Status:
    skipped = _stage(git, workspace, max_bytes)
    changes = git.run("diff", "--cached", "--name-only", "-z", "--no-renames", "HEAD")
    uncommitted = len([n for n in changes.split(b"\0") if n])
    unpushed = 0
    if head != launched:
        unpushed = int(git.run("rev-list", "--count", head, f"^{launched}").strip() or 0)
    clean = not uncommitted and not unpushed and not skipped and head == launched
    return Status(clean, uncommitted, unpushed, skipped)


def _head_or_fail(workspace: Path, what: str) -> str:
    head = read_head(workspace)
    if head is None:
        raise AutosaveError(f"{what}: {workspace} has no commit checked out.")
    return head


def status(
    workspace: Path, launched: str, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> Status:
    """What `save` would push; pushes nothing, writes nothing in the workspace."""
    failure = "The workspace could not be inspected"
    head = _head_or_fail(workspace, failure)
    try:
        with _own_git(workspace, failure, head=head) as git:
            return _inspect(git, workspace, launched, head, max_file_bytes)
    except subprocess.CalledProcessError as e:
        raise AutosaveError(f"{failure}: {e.stderr}") from None


def save(
    workspace: Path,
    launched: str,
    remote: str,
    branch_name: str,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    signer: Signer | None = None,
    identity: tuple[str, str] | None = None,
) -> Saved:
    """Push unpushed commits and uncommitted work to `branch_name`, under one signed
    autosave commit (`signer`; default: the component at `remote`) by `identity` (name,
    email); nothing when clean. A refused push says why, in GitLab's words."""
    not_saved = "Uncommitted changes and unpushed commits were NOT saved"
    head = _head_or_fail(workspace, not_saved)
    signer = signer or ComponentSigner(remote, branch_name)
    try:
        with _own_git(workspace, not_saved, head=head, identity=identity) as git:
            state = _inspect(git, workspace, launched, head, max_file_bytes)
            if state.clean:
                return Saved(False, branch_name, None, state)
            tree = git.run("write-tree").decode().strip()
            try:
                signed = signer.sign(tree, head)
            except AutosaveError as e:
                raise AutosaveError(f"{not_saved}: {e}.") from None
            message = _message(state.skipped, max_file_bytes, signed)
            commit = git.run("commit-tree", tree, "-p", head, input=message.encode())
            tip = commit.decode().strip()
            push = git.result(
                "push",
                "--porcelain",
                "--no-verify",
                remote,
                f"+{tip}:refs/heads/{branch_name}",
                check=False,
            )
            # `=`: the branch already holds this tip (an autosave just before the stop)
            if not re.search(
                rf"^[ +*=]\t[^\t]*refs/heads/{re.escape(branch_name)}\t",
                push.stdout.decode(errors="replace"),
                re.M,
            ):
                raise AutosaveError(
                    f"{not_saved}: the push of {branch_name} was refused or failed"
                    f"{_refusal(push.stderr)}."
                )
            return Saved(True, branch_name, tip, state)
    except subprocess.CalledProcessError as e:
        raise AutosaveError(f"{not_saved}: git {e.cmd} failed: {e.stderr}") from None


def _refusal(stderr: bytes) -> str:
    """What the remote said against the push (`remote: GitLab: <reason>` from its
    pre-receive checks: a push rule, a protected branch), as `: GitLab says: <reason>`;
    '' when it said nothing of the kind."""
    said = []
    for line in stderr.decode(errors="replace").splitlines():
        text = line.removeprefix("remote:").strip()
        if line.startswith("remote:") and text.startswith("GitLab:"):
            said.append(text.removeprefix("GitLab:").strip())
    reasons = [r.rstrip(".") for r in said if r][:3]
    return f": GitLab says: {'; '.join(reasons)}" if reasons else ""


def _message(skipped: list[str], max_file_bytes: int, signed: str) -> str:
    lines = ["Autosave of uncommitted work", ""]
    if skipped:
        lines += [f"Not saved (larger than {max_file_bytes} bytes):"]
        lines += [f"  {name}" for name in skipped] + [""]
    return "\n".join([*lines, TRAILER, f"{SIGNATURE_KEY}: {signed}", ""])


# --- restore and delete ---------------------------------------------------------------------


def restore(
    workspace: Path,
    remote: str,
    branch_name: str,
    *,
    launched: str,
    signer: Signer | None = None,
) -> str | None:
    """Check out the branch's tip detached, its uncommitted part back as uncommitted.

    Only onto a fresh checkout (HEAD at `launched`, nothing changed): a restarted
    server's workspace keeps its own state. Returns the restored tip, or None when
    the branch does not exist or the workspace is not fresh. A tip that is not an
    autosave `signer` (default: the component at `remote`) signed for this branch is
    AutosaveRefused, the workspace untouched.
    """
    failure = f"The autosave {branch_name} was not restored"
    signer = signer or ComponentSigner(remote, branch_name)
    head = _head_or_fail(workspace, failure)
    if head != launched or not status(workspace, launched).clean:
        return None
    try:
        with _own_git(workspace, failure, objects="shared", head=head) as git:
            index = Path(git.env["GIT_INDEX_FILE"])
            git.run(
                "fetch",
                "--no-tags",
                "--no-write-fetch-head",
                remote,
                f"+refs/heads/{branch_name}:refs/heads/restored",
                check=False,
            )
            tip = git.run(
                "rev-parse", "--verify", "-q", "refs/heads/restored", check=False
            ).decode().strip()
            if not tip:
                if _remote_has(git, remote, branch_name):
                    raise AutosaveError(f"{failure}: it could not be fetched.")
                return None
            parent = _verified(git, tip, signer, failure)
            git.run("read-tree", "HEAD")  # the workspace was found clean at HEAD just now
            git.run("checkout", "-q", "-f", "--detach", tip)
            restored = tip
            git.run("reset", "-q", "--mixed", parent)
            final = git.run("rev-parse", "HEAD").decode().strip()
            _write_back(workspace, git, index, final)
            return restored
    except subprocess.CalledProcessError as e:
        raise AutosaveError(f"{failure}: {e.stderr}") from None


def _remote_has(git: _Git, remote: str, branch_name: str) -> bool:
    out = git.run("ls-remote", "--heads", remote, f"refs/heads/{branch_name}", check=True)
    return bool(out.strip())


def _verified(git: _Git, tip: str, signer: Signer, failure: str) -> str:
    """The parent of `tip` when `tip` is an autosave commit signed for this branch; else
    AutosaveRefused (the branch is left as it is: it may be someone's evidence)."""
    kept = "it stays on the remote, untouched"
    out = git.run(
        "log", "-1", f"--format=%T%n%P%n%(trailers:key={SIGNATURE_KEY},valueonly)", tip
    ).decode()
    lines = [*out.split("\n"), "", ""]
    tree, parent_list = lines[0].strip(), lines[1].split()
    found = [value.strip() for value in lines[2:] if value.strip()]
    if not found:
        raise AutosaveRefused(
            f"{failure}: its last commit carries no signature of renku-notebooks (an autosave "
            f"from before autosaves were signed, or a commit someone else pushed); {kept}."
        )
    if len(found) != 1 or len(parent_list) != 1 or not OBJECT_ID.fullmatch(tree):
        raise AutosaveRefused(f"{failure}: its last commit is not an autosave commit; {kept}.")
    try:
        expected = signer.sign(tree, parent_list[0])
    except AutosaveError as e:
        raise AutosaveRefused(
            f"{failure}: its signature could not be checked ({e}); {kept}."
        ) from None
    if not hmac.compare_digest(expected, found[0]):
        raise AutosaveRefused(
            f"{failure}: it was not written by renku-notebooks' autosave of your session "
            f"(changed or pushed by someone else); {kept}."
        )
    return parent_list[0]


def _write_back(workspace: Path, git: _Git, index: Path, head: str) -> None:
    """Our index, HEAD and shallow list become the workspace's (objects are already there)."""
    dot_git = workspace / ".git"
    shutil.copyfile(index, dot_git / "index")
    shallow = git.git_dir / "shallow"
    if shallow.exists():
        shutil.copyfile(shallow, dot_git / "shallow")
    tmp = dot_git / "HEAD.autosave"
    tmp.write_text(f"{head}\n")
    tmp.replace(dot_git / "HEAD")


def delete(remote: str, branch_name: str) -> bool:
    """Remove the branch on the remote; False when it was not there."""
    failure = f"The autosave {branch_name} was not deleted"
    try:
        with _own_git(None, failure) as git:
            if not _remote_has(git, remote, branch_name):
                return False
            git.run("push", "--no-verify", remote, f":refs/heads/{branch_name}")
            return True
    except subprocess.CalledProcessError as e:
        raise AutosaveError(f"{failure}: {e.stderr}") from None


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for action in ("status", "save", "restore", "delete"):
        p = sub.add_parser(action)
        if action != "delete":
            p.add_argument("--workspace", type=Path, required=True)
            p.add_argument("--launched", required=True, help="the launched commit's full sha")
        if action != "status":
            p.add_argument("--remote", required=True, help="repository URL, no credentials")
            p.add_argument("--branch", required=True, help="the autosave branch")
        if action in ("status", "save"):
            p.add_argument("--max-file-bytes", type=int, default=DEFAULT_MAX_FILE_BYTES)
        if action in ("save", "restore"):
            p.add_argument("--key-file", type=Path, help="sign with this key, not the component")
        if action == "save":
            p.add_argument("--name", help="the autosave commit's author and committer")
            p.add_argument("--email", help="their email (their GitLab commit_email)")
    args = parser.parse_args(argv)
    if getattr(args, "launched", None) is not None and not contracts.SHA.fullmatch(args.launched):
        print("autosave: --launched must be a full 40-character lowercase sha", file=sys.stderr)
        return 2
    try:
        if args.action == "status":
            out: object = status(
                args.workspace, args.launched, max_file_bytes=args.max_file_bytes
            )._asdict()
        elif args.action == "save":
            saved = save(
                args.workspace,
                args.launched,
                args.remote,
                args.branch,
                max_file_bytes=args.max_file_bytes,
                signer=signer_for(args.remote, args.branch, args.key_file),
                identity=(args.name, args.email) if args.name and args.email else None,
            )
            out = saved.answer()
        elif args.action == "restore":
            signer = signer_for(args.remote, args.branch, args.key_file)
            tip = restore(
                args.workspace, args.remote, args.branch, launched=args.launched, signer=signer
            )
            out = {"restored": tip is not None, "branch": args.branch, "commit": tip}
        else:
            out = {"deleted": delete(args.remote, args.branch), "branch": args.branch}
    except AutosaveError as e:
        print(f"autosave: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
