"""Hub-side hooks shared by every spawner, and the local-process spawner of the embedded default.

A spawner here trusts nothing in user_options: it rebuilds the launch with the
same checks as the glue, asks the git provider again whether the user may
launch, and only then puts the commit in place and starts the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple, cast
from urllib.parse import quote

from jupyterhub.spawner import SimpleLocalProcessSpawner
from tornado import web
from traitlets import Dict, default
from traitlets.config import Configurable

from . import clone
from .access import Access
from .config import Config, Profile
from .errors import GlueError
from .launch import Launch, from_user_options
from .provider import Caller, make_provider

CLONE_TIMEOUT = 600
PROGRESS_POLL_SECONDS = 0.25
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


class Checked(NamedTuple):
    """A launch that passed the hub-side re-check, with who asked and where to clone from."""

    launch: Launch
    caller: Caller
    #: the provider's clone URL, from the provider that checked access (no second one)
    source: str


class CommitSpawnerMixin(Configurable):
    """Launch checks and progress events, for any JupyterHub Spawner subclass."""

    notebooks_config = Dict(help="The validated notebooks config (set by glue.hubconfig).").tag(
        config=True
    )

    _events: list[dict[str, Any]]
    # set when the launch steps are done and the base spawner starts; progress() then
    # relays the base spawner's own events (later_progress) instead of waiting for ours
    _handed_over = False
    # set by the jupyterhub Spawner this is mixed into (jupyterhub ships no types)
    log: logging.Logger
    user: Any
    user_options: dict[str, Any]
    _log_name: str

    @property
    def notebooks(self) -> Config:
        """The config, typed; glue.hubconfig sets the trait from `glue.config.load`."""
        return cast(Config, self.notebooks_config)

    def emit(self, progress: int, message: str) -> None:
        """Record a progress event; the hub relays it on the server's progress stream."""
        self.log.info("%s: %s", self._log_name, message)
        self._events.append({"progress": progress, "message": message})

    def hand_over(self) -> None:
        """Our steps are done: what follows is the base spawner's (call before its start())."""
        self._handed_over = True

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """Our events as they come until hand_over(), then later_progress(); the hub stops
        iterating when the spawn ends, and waits for it when we end first."""
        sent = 0
        while True:
            events = getattr(self, "_events", [])
            for event in events[sent:]:
                yield event
            sent = len(events)
            if self._handed_over:
                break
            await asyncio.sleep(PROGRESS_POLL_SECONDS)
        async for event in self.later_progress():
            yield event

    @default("apply_user_options")
    def _check_user_options_hook(self) -> Any:
        return check_user_options


    async def later_progress(self) -> AsyncIterator[dict[str, Any]]:
        """Events of the base spawner after hand_over(); none by default, since JupyterHub's
        generic "Spawning server..." (at 50 %) would step back behind ours."""
        nothing: tuple[dict[str, Any], ...] = ()
        for event in nothing:
            yield event

    def clear_state(self) -> None:
        """A stopped server's events and hand-over must not show in its next launch's progress
        (the hub calls this before every spawn, before a progress stream can open)."""
        super().clear_state()  # type: ignore[misc]  # the Spawner's, next in the MRO
        self._events, self._handed_over = [], False

    async def prepare_launch(self) -> Checked:
        """Validate user_options and check access again; raise with a sentence for the user."""
        self._events, self._handed_over = [], False
        config = self.notebooks
        launch = from_user_options(config, self.user_options)
        provider = make_provider(config)
        try:
            auth_state = await self.user.get_auth_state() if provider.needs_token else None
            caller = Caller.from_auth_state(self.user.name, auth_state)
            self.emit(5, f"Checking access to {launch.target.full_path}")
            await Access(provider, config["provider"]["minAccessLevel"]).check_launch(
                caller, launch.target
            )
            source = provider.clone_url(launch.target)
        finally:
            await provider.close()
        self.apply_profile(launch.profile)
        return Checked(launch, caller, source)

    def apply_profile(self, name: str) -> Profile:
        """Size the server by the profile (memory in Kubernetes units: JupyterHub reads `G` as
        GiB and refuses `Gi`); returns the profile for what a subclass adds."""
        profile = next(p for p in self.notebooks["profiles"] if p["name"] == name)
        self.cpu_limit = self.cpu_guarantee = float(profile["cpu"])
        self.mem_limit = self.mem_guarantee = memory_bytes(profile["memory"])
        return profile

    @staticmethod
    def lab_url(launch: Launch) -> str:
        notebook = launch.target.notebook
        return f"/lab/tree/{quote(notebook)}" if notebook else "/lab"


def check_user_options(spawner: CommitSpawnerMixin, user_options: dict[str, Any]) -> None:
    """JupyterHub 5.3+ runs this before start(): a launch the config refuses (say a profile
    an upgrade removed) is then a 400 with our sentence, not a 500 from start()."""
    try:
        from_user_options(spawner.notebooks, user_options)
    except GlueError as e:
        raise web.HTTPError(400, "%s", e.message) from None


async def run_clone(checked: Checked, dest: Path) -> None:
    """Run the clone step (`clone.step`) as a process, the token in a file only it reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "GIT_"))}
    target = checked.launch.target
    with tempfile.TemporaryDirectory(prefix="renku-clone-") as secrets_dir:
        token_file = None
        if checked.caller.git_token:
            token_file = Path(secrets_dir) / "token"
            token_file.touch(mode=0o600)
            token_file.write_text(checked.caller.git_token)
        argv, step_env = clone.step(
            checked.source,
            target.commit_sha,
            str(dest),
            lfs=checked.launch.lfs,
            token_file=str(token_file) if token_file else None,
            python=sys.executable,
        )
        process = await asyncio.create_subprocess_exec(
            *argv,
            env={**env, **step_env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
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
        root = Path(self.notebooks["spawner"]["workspaceRoot"])
        return root / self.user.name / (self.name or "default")

    async def start(self) -> tuple[str, int]:
        started = time.monotonic()
        checked = await self.prepare_launch()
        target = checked.launch.target
        workspace = self.workspace()
        self.emit(20, f"Cloning {target.full_path} at {target.commit_sha[:7]}")
        await run_clone(checked, workspace)
        self.emit(60, f"Cloned in {time.monotonic() - started:.1f} s; starting the notebook server")
        self.home_dir = str(workspace.parent)
        self.notebook_dir = str(workspace)
        self.default_url = self.lab_url(checked.launch)
        self.hand_over()
        return await super().start()

    def delete_forever(self) -> None:
        """The hub removes the server: its workspace goes with it."""
        shutil.rmtree(self.workspace(), ignore_errors=True)
