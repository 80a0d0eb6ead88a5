"""Hub-side hooks shared by every spawner, and the local-process spawner of the embedded default.

A spawner here trusts nothing in user_options: it rebuilds the launch with the
same checks as the glue, asks the git provider again whether the user may
launch, and only then puts the commit in place and starts the server.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jupyterhub.spawner import SimpleLocalProcessSpawner
from tornado import web
from traitlets import Dict, default
from traitlets.config import Configurable

from . import logs
from .access import Access
from .config import Config
from .errors import GlueError
from .launch import Launch, from_user_options
from .provider import Caller, make_provider

CLONE_TIMEOUT = 600
MEMORY_UNITS = {
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def memory_bytes(quantity: str) -> int:
    """Bytes of a memory quantity as Kubernetes reads it (`1G` = 10**9, `1Gi` = 2**30)."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([KMGT]i?)", quantity)
    if not match:
        raise ValueError(f"{quantity!r} is not a memory quantity like 2G or 512Mi")
    return int(float(match[1]) * MEMORY_UNITS[match[2]])


class CommitSpawnerMixin(Configurable):
    """Launch checks and progress events, for any JupyterHub Spawner subclass."""

    notebooks_config = Dict(help="The validated notebooks config (set by glue.hubconfig).").tag(
        config=True
    )

    _events: list[dict[str, Any]]

    def emit(self, progress: int, message: str) -> None:
        """Record a progress event; the hub relays it on the server's progress stream."""
        self.log.info("%s: %s", self._log_name, message)  # type: ignore[attr-defined]
        self._events.append({"progress": progress, "message": message})

    async def progress(self):  # type: ignore[override]
        """Yield our events as they come; the hub stops iterating when the spawn ends."""
        sent = 0
        while True:
            events = getattr(self, "_events", [])
            while sent < len(events):
                yield events[sent]
                sent += 1
            await asyncio.sleep(0.25)

    @default("apply_user_options")
    def _check_user_options_hook(self) -> Any:
        return check_user_options

    async def prepare_launch(self) -> tuple[Launch, Caller]:
        """Validate user_options and check access again; raise with a sentence for the user."""
        self._events = []
        config: Config = self.notebooks_config
        launch = from_user_options(config, self.user_options)  # type: ignore[attr-defined]
        provider = make_provider(config)
        try:
            auth_state = await self.user.get_auth_state() if provider.needs_token else None  # type: ignore[attr-defined]
            caller = Caller.from_auth_state(self.user.name, auth_state)  # type: ignore[attr-defined]
            self.emit(5, f"Checking access to {launch.target.full_path}")
            await Access(provider, config["provider"]["minAccessLevel"]).check_launch(
                caller, launch.target
            )
        finally:
            await provider.close()
        self.apply_profile(launch.profile)
        return launch, caller

    def apply_profile(self, name: str) -> dict[str, Any]:
        """Size the server by the profile (memory in Kubernetes units: JupyterHub reads `G` as
        GiB and refuses `Gi`); returns the profile for what a subclass adds."""
        profile = next(p for p in self.notebooks_config["profiles"] if p["name"] == name)
        self.cpu_limit = self.cpu_guarantee = float(profile["cpu"])
        self.mem_limit = self.mem_guarantee = memory_bytes(profile["memory"])
        return profile

    def clone_url(self, launch: Launch) -> str:
        return make_provider(self.notebooks_config).clone_url(launch.target)

    @staticmethod
    def lab_url(launch: Launch) -> str:
        notebook = launch.target.notebook
        return f"/lab/tree/{quote(notebook)}" if notebook else "/lab"


def check_user_options(spawner: CommitSpawnerMixin, user_options: dict[str, Any]) -> None:
    """JupyterHub 5.3+ runs this before start(): a launch the config refuses (say a profile
    an upgrade removed) is then a 400 with our sentence, not a 500 from start()."""
    try:
        from_user_options(spawner.notebooks_config, user_options)
    except GlueError as e:
        raise web.HTTPError(400, "%s", e.message) from None


async def run_clone(source: str, commit: str, dest: Path, *, lfs: bool, token: str | None) -> None:
    """Run the clone routine (`python -m glue.clone`), the token in a file only it reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "GIT_"))}
    args = [
        sys.executable,
        "-m",
        "glue.clone",
        "--source",
        source,
        "--commit",
        commit,
        "--dest",
        str(dest),
    ] + (["--lfs"] if lfs else [])
    with tempfile.TemporaryDirectory(prefix="renku-clone-") as secrets_dir:
        if token:
            token_file = Path(secrets_dir) / "token"
            token_file.touch(mode=0o600)
            token_file.write_text(token)
            env["NOTEBOOKS_GIT_TOKEN_FILE"] = str(token_file)
        process = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), CLONE_TIMEOUT)
        except TimeoutError:
            process.kill()
            raise RuntimeError(f"Cloning took longer than {CLONE_TIMEOUT} s.") from None
    if process.returncode:
        message = stderr.decode(errors="replace").strip().removeprefix("clone: ")
        raise RuntimeError(message or "The clone step failed.")


class LocalCommitSpawner(CommitSpawnerMixin, SimpleLocalProcessSpawner):
    """The embedded default: the commit is cloned into a workspace, the server runs as a process."""

    def workspace(self) -> Path:
        root = Path(self.notebooks_config["spawner"]["workspaceRoot"])
        return root / self.user.name / (self.name or "default")

    async def start(self):  # type: ignore[override]
        started = time.monotonic()
        launch, caller = await self.prepare_launch()
        target = launch.target
        workspace = self.workspace()
        self.emit(20, f"Cloning {target.full_path} at {target.commit_sha[:7]}")
        # the server's log (logs.py): the clone step's outcome, then the server's output
        log_fd = logs.open_for_server(self.notebooks_config, self.user.name, self.name)
        try:
            try:
                await run_clone(
                    self.clone_url(launch),
                    target.commit_sha,
                    workspace,
                    lfs=launch.lfs,
                    token=caller.git_token,
                )
            except RuntimeError as e:
                self._log_line(log_fd, f"Clone failed: {e}", caller.git_token)
                raise RuntimeError(f"Clone failed: {e}") from None
            self._log_line(log_fd, f"Cloned {target.full_path} at {target.commit_sha}", None)
            self.emit(
                60, f"Cloned in {time.monotonic() - started:.1f} s; starting the notebook server"
            )
            self.home_dir = str(workspace.parent)
            self.notebook_dir = str(workspace)
            self.default_url = self.lab_url(launch)
            self.popen_kwargs = {**self.popen_kwargs, "stdout": log_fd, "stderr": log_fd}
            return await super().start()
        finally:
            os.close(log_fd)  # the server holds its own copy

    @staticmethod
    def _log_line(fd: int, text: str, secret: str | None) -> None:
        os.write(fd, (logs.scrub(text, secret) + "\n").encode())

    def delete_forever(self) -> None:
        """The hub removes the server: its workspace goes with it."""
        shutil.rmtree(self.workspace(), ignore_errors=True)
        logs.remove(self.notebooks_config, self.user.name, self.name)
