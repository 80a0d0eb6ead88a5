"""The session's git in the embedded default: its token component beside the sandbox, the
session step and the autosave inside it.

Kubernetes runs these as an init container and a sidecar (glue/hub/podspec.py); here
the local spawner runs them as processes:

- the component (glue/session/gitproxy.py) runs as the hub's user, OUTSIDE the
  sandbox, on a free loopback port; its files (the per-server secret, the
  GitLab token, the component key, the server's hub token, the signing key
  of the server's autosave branch) are in a private 0700 directory of the
  hub's state that no sandbox can see;
- the session step (glue/session/gitsession.py) and the autosave (glue/session/autosave.py) run
  inside the server's sandbox, as its user, and reach the remote only through
  the component, with the per-server secret (never the GitLab token) as
  their password.

A workspace whose autosave failed is marked here (`kept`): the hub's removal
then keeps it, and the next launch of that server works on it as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

from glue.core.contracts import AUTOSAVE_KEY, LISTEN_FD_ENV, component_key
from glue.hub.sandbox import Sandbox
from glue.session import autosave, gitproxy
from glue.session import gitsession as session
from glue.session.clone import TOKEN_FILE_ENV
from glue.session.steprunner import run_step

SECRET, TOKEN, KEY, HUB_TOKEN, KEPT = "secret", "token", "component-key", "hub-token", "kept"
COMPONENT_STOP_SECONDS = 10
INSPECT_SECONDS = 30


def write_private(path: Path, content: str) -> Path:
    """A file only the hub's user reads (mode 0600 from its creation)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    return path


@dataclass(frozen=True)
class SessionGit:
    """One server's git outside its sandbox: the private directory and what it holds."""

    private: Path  # <hub state>/sessions/<user id>-<server>, 0700, the hub's user's
    project: str  # namespace/project
    source: str  # the provider's clone URL (GitLab's https URL, or file:// a bare repo)
    user: str
    server: str

    @property
    def kept(self) -> bool:
        """The last autosave of this workspace failed: nothing may delete it."""
        return (self.private / KEPT).exists()

    def mark_kept(self, reason: str) -> None:
        self.private.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.private / KEPT).write_text(reason + "\n")

    def unmark_kept(self) -> None:
        (self.private / KEPT).unlink(missing_ok=True)

    @property
    def secret_file(self) -> Path:
        """The per-server secret's file: also what names this server's component (its
        `--secret-file`), which `components` finds by it."""
        return self.private / SECRET

    def secret(self) -> str:
        return self.secret_file.read_text().strip()

    def prepare(
        self,
        *,
        git_token: str | None,
        hub_token: str,
        service_api_token: str,
        token_endpoint: str,
        autosave_prefix: str,
        autosave_branch: str,
        autosave_key: str,
    ) -> gitproxy.Settings:
        """Write this launch's files (a fresh secret each launch) and say what the component
        serves: GitLab through the token, or the local provider's bare repository; which
        autosave branches it lets the session write, and the one it signs for."""
        self.private.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.private.mkdir(mode=0o700, exist_ok=True)
        self.private.chmod(0o700)
        write_private(self.secret_file, secrets.token_urlsafe(32))
        write_private(self.private / AUTOSAVE_KEY, autosave_key)
        upstream, repo, token_file = None, None, None
        if self.source.startswith("file://"):
            repo = Path(self.source.removeprefix("file://"))
        else:
            upstream = self.source.removesuffix(f"/{self.project}.git")
            token_file = write_private(self.private / TOKEN, git_token or "")
        refresh = bool(upstream and service_api_token and token_endpoint)
        if refresh:
            key = component_key(service_api_token, self.user, self.server)
            write_private(self.private / KEY, key)
            write_private(self.private / HUB_TOKEN, hub_token)
        return gitproxy.Settings(
            project=self.project,
            secret_file=self.secret_file,
            upstream=upstream,
            token_file=token_file,
            repo=repo,
            token_endpoint=token_endpoint if refresh else None,
            key_file=self.private / KEY if refresh else None,
            hub_token_file=self.private / HUB_TOKEN if refresh else None,
            user=self.user,
            server=self.server,
            autosave_prefix=autosave_prefix,
            autosave_branch=autosave_branch,
            signing_key_file=self.private / AUTOSAVE_KEY,
        )

    def forget_secrets(self) -> None:
        """The stopped server's files go; the `kept` mark stays."""
        for name in (SECRET, TOKEN, KEY, HUB_TOKEN, AUTOSAVE_KEY):
            (self.private / name).unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.private, ignore_errors=True)


def origin(port: int, project: str) -> str:
    """The project's URL for the session's git: the component's, on loopback."""
    return f"http://127.0.0.1:{port}/{project}.git"


def start_component(settings: gitproxy.Settings, listener: socket.socket) -> Popen[bytes]:
    """The component as the hub's user (it reads the private files), in its own session,
    serving on `listener`, the socket the spawner holds (glue.hub.listeners); it logs to the
    hub's log (never a token or the secret)."""
    port = listener.getsockname()[1]
    argv, _ = gitproxy.step(settings, listen=f"127.0.0.1:{port}", python=sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "GIT_"))}
    env[LISTEN_FD_ENV] = str(listener.fileno())
    return Popen(argv, env=env, start_new_session=True, pass_fds=(listener.fileno(),))


async def stop_component(process: Popen[bytes] | None, secret_file: Path) -> None:
    """Stop the component we started, and any other of this server: the one a restarted hub
    holds no handle of, or one that a hub killed during the launch left running. Found by
    what they serve with (`components`), never by a stored pid another process may have
    been given since."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, COMPONENT_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
    for pid in await asyncio.to_thread(components, secret_file):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)


def components(secret_file: Path) -> list[int]:
    """The pids of running components of one server: `glue.session.gitproxy` processes whose
    `--secret-file` is that server's (its private directory is its own). Read from /proc;
    none where there is no /proc."""
    wanted = (b"glue.session.gitproxy", b"--secret-file", os.fsencode(secret_file))
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile, or not ours to read
        if all(arg in args for arg in wanted):
            found.append(int(cmdline.parent.name))
    return found


def kill_component(process: Popen[bytes] | None) -> None:
    """End the component at once, without waiting on the event loop: for an interrupted
    launch, whose step (the only user of the component yet) is killed too."""
    if process is not None and process.poll() is None:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(1)  # SIGKILL: reaped at once


async def answer_of(
    sandbox: Sandbox, secret: str, build: Any, seconds: float, what: str
) -> dict[str, Any]:
    """Run a step in the sandbox (`in_sandbox`); its answer, the JSON of its last line."""
    out = await in_sandbox(sandbox, secret, build, seconds, what)
    answer: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return answer


async def in_sandbox(
    sandbox: Sandbox, secret: str, build: Any, seconds: float, what: str
) -> str:
    """Run a step in the sandbox with the per-server secret as its git password.

    `build(secret_path)` returns the step (argv, env); the secret is copied into a
    temporary directory only that sandbox's user may read, gone after the step.
    """
    with tempfile.TemporaryDirectory(prefix="renku-session-") as tmp:
        secret_file = write_private(Path(tmp) / SECRET, secret + "\n")
        argv, step_env = build(str(secret_file))
        sandbox.give(Path(tmp))
        env = sandbox.environment(os.environ, **step_env, **{TOKEN_FILE_ENV: str(secret_file)})
        command = sandbox.command(argv, readable=[Path(tmp)])
        return await run_step(command, env, seconds, what)


async def session_step(
    sandbox: Sandbox,
    secret: str,
    *,
    port: int,
    project: str,
    identity: tuple[str, str],
    branch: str,
    launched: str,
    discard: bool,
    restore: bool,
) -> dict[str, Any]:
    """Restore (or discard) the autosave through the component and set the checkout up;
    the step's JSON answer (`restored_from`, `commit`, `discarded`, `restore_refused`)."""
    url = origin(port, project)
    name, email = identity

    def build(secret_file: str) -> tuple[list[str], dict[str, str]]:
        # the launched commit always: the step marks the workspace as holding its session
        # (glue.session.workspace), and reopens one that already does
        remote = {"remote": url, "branch": branch} if restore else {}
        return session.step(
            str(sandbox.workspace),
            origin=url,
            secret_file=secret_file,
            name=name,
            email=email,
            discard=discard,
            launched=launched,
            python=sys.executable,
            **remote,
        )

    return await answer_of(sandbox, secret, build, 300, "The session step")


async def save(
    sandbox: Sandbox,
    secret: str,
    *,
    port: int,
    project: str,
    branch: str,
    launched: str,
    max_file_bytes: int,
    seconds: float,
    identity: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Push the workspace's unsaved work to its autosave branch through the component, as a
    commit by `identity` (the user's GitLab name and commit email: push rules check it)."""

    def build(_: str) -> tuple[list[str], dict[str, str]]:
        return autosave.step(
            "save",
            workspace=str(sandbox.workspace),
            launched=launched,
            remote=origin(port, project),
            branch=branch,
            max_file_bytes=max_file_bytes,
            python=sys.executable,
            identity=identity,
        )

    return await answer_of(sandbox, secret, build, seconds, "The autosave")


async def inspect(
    sandbox: Sandbox, secret: str, *, launched: str, max_file_bytes: int
) -> dict[str, Any]:
    """What `save` would push now, read in the sandbox (it pushes and writes nothing)."""

    def build(_: str) -> tuple[list[str], dict[str, str]]:
        return autosave.step(
            "status",
            workspace=str(sandbox.workspace),
            launched=launched,
            max_file_bytes=max_file_bytes,
            python=sys.executable,
        )

    return await answer_of(sandbox, secret, build, INSPECT_SECONDS, "The workspace check")
