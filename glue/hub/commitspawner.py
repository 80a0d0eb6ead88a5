"""Hub-side hooks shared by every spawner, and the local-process spawner of the embedded default.

A spawner here trusts nothing in user_options: it rebuilds the launch with the
same checks as the glue, asks the git provider again whether the user may
launch, and only then puts the commit in place and starts the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from subprocess import Popen
from typing import Any, NamedTuple, cast
from urllib.parse import quote, urlparse

from jupyterhub.spawner import SimpleLocalProcessSpawner
from jupyterhub.utils import maybe_future, random_port
from tornado import web
from traitlets import Dict, Unicode, default
from traitlets.config import Configurable

from glue.core import contracts
from glue.core import serverlogs as logs
from glue.core.config import Config, Profile
from glue.core.errors import AutosaveFailed, GlueError
from glue.core.launch import DISK, MEMORY, RESTORE_REFUSED, RESTORED_FROM, Launch, from_user_options
from glue.hub import localsession
from glue.hub.disk import DiskError, Usage
from glue.hub.localsession import SessionGit
from glue.hub.sandbox import Sandbox, send_signal, uid_for
from glue.providers.access import Access
from glue.providers.base import Caller
from glue.providers.select import make_provider
from glue.session import autosave, clone, kernel, steprunner

CLONE_TIMEOUT = 600
# how a server that got SIGKILL exits: bubblewrap passes on 128 + the signal; Popen says -9
KILLED_STATUS = (128 + signal.SIGKILL, -signal.SIGKILL)
PROGRESS_POLL_SECONDS = 0.25
# a workspace this full is autosaved once and its pages warn; the warning goes below the second
DISK_WARNING_FRACTION = 0.9
DISK_CLEAR_FRACTION = 0.8
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

    notebooks_config = Dict(help="The validated notebooks config (set by glue.hub.setup).").tag(
        config=True
    )
    service_api_token = Unicode(
        "", help="The notebooks service's hub API token: the component keys derive from it."
    ).tag(config=True)
    git_token_endpoint = Unicode(
        "", help="The glue's `-/git-token` URL, where a session's component gets fresh tokens."
    ).tag(config=True)
    # set by the hub's saving DELETE (glue.hub.autosaveapi) for the stop it makes right after
    # its autosave succeeded
    saved_for_stop = False
    # the profile's disk in bytes (apply_profile)
    disk_limit: int | None = None
    # one autosave of a server at a time (a stop's, the culler's, the disk watch's): two
    # pushes of one workspace at once would fight over its git index
    _autosave_lock: asyncio.Lock | None = None
    # the disk watch's autosave, running in the background of the poll that started it
    _disk_save: asyncio.Future[None] | None = None

    _events: list[dict[str, Any]]
    # set when the launch steps are done and the base spawner starts; progress() then
    # relays the base spawner's own events (later_progress) instead of waiting for ours
    _handed_over = False
    # set by the jupyterhub Spawner this is mixed into (jupyterhub ships no types)
    log: logging.Logger
    user: Any
    user_options: dict[str, Any]
    name: str
    active: bool
    db: Any
    orm_spawner: Any
    _log_name: str

    @property
    def notebooks(self) -> Config:
        """The config, typed; glue.hub.setup sets the trait from `glue.core.config.load`."""
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
        # ours once the base spawner's start returned (Kubernetes: the pod's session report);
        # the hub reads on until the whole start is done
        for event in getattr(self, "_events", [])[sent:]:
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
        self._start_began = time.monotonic()
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

    def run_post_stop_hook(self) -> Any:
        """A start that failed at once leaves nothing: the hub already answered the launch
        with the failure, so a failed server would only use up the user's limit."""
        spawn = getattr(self, "_spawn_future", None)
        began = getattr(self, "_start_began", None)
        at_once = self.user.settings.get("slow_spawn_timeout", 10)
        if spawn and not spawn.done() and began and time.monotonic() - began < at_once:
            self._removal = asyncio.ensure_future(self._remove_after(spawn))
        return super().run_post_stop_hook()  # type: ignore[misc]  # the Spawner's, next in the MRO

    async def _remove_after(self, spawn: asyncio.Future[Any]) -> None:
        """Remove this server from the hub once its failed start has been answered, as the
        hub's own `DELETE ... {"remove": true}` does."""
        with contextlib.suppress(BaseException):
            await spawn
        await asyncio.sleep(1)  # the hub's request handler reports the failure first
        user, name = self.user, self.name
        if self.active or user.spawners.get(name) is not self:
            return  # launched again meanwhile
        self.log.info("Removing %s, which failed to start", self._log_name)
        await maybe_future(self.delete_forever())
        self.db.delete(self.orm_spawner)
        user.spawners.pop(name, None)
        self.db.commit()

    def profile_named(self, name: str) -> Profile:
        return next(p for p in self.notebooks["profiles"] if p["name"] == name)

    def apply_profile(self, name: str) -> Profile:
        """Size the server by the profile (memory in Kubernetes units: JupyterHub reads `G` as
        GiB and refuses `Gi`); returns the profile for what a subclass adds."""
        profile = self.profile_named(name)
        self.cpu_limit = self.cpu_guarantee = float(profile["cpu"])
        self.mem_limit = self.mem_guarantee = memory_bytes(profile["memory"])
        self.disk_limit = memory_bytes(profile["disk"])
        return profile

    async def autosave(self) -> dict[str, Any]:
        """Push the workspace's unsaved work to its autosave branch now: what was saved (the
        step's answer: `pushed`, `branch`, `commit`, `status`), `{}` when no session runs.

        The glue's DELETE and the culler ask for it through the hub (glue.hub.autosaveapi)
        while the server still runs, and stop only when it succeeded. A failure is logged
        loudly and raises AutosaveFailed with the reason.
        """
        if self._autosave_lock is None:
            self._autosave_lock = asyncio.Lock()
        try:
            async with self._autosave_lock:
                answer = await self.session_autosave(save=True)
        except AutosaveFailed as e:
            self.log.error(
                "AUTOSAVE FAILED for %s: %s. %s",
                self._log_name,
                e.message,
                self.keep_after_failed_autosave(e.message),
            )
            raise
        self.autosave_done()
        if answer.get("pushed"):
            self.log.info("%s: autosaved to %s", self._log_name, answer.get("branch"))
        return answer

    async def autosave_status(self) -> dict[str, Any]:
        """What an autosave would push now (`clean`, `uncommitted`, `unpushed`, `skipped`),
        for the Stop button; `{}` when no session runs. Raises AutosaveFailed when the
        workspace cannot be inspected."""
        return await self.session_autosave(save=False)

    async def session_autosave(self, *, save: bool) -> dict[str, Any]:
        """The spawner's own way to the workspace: run the save or the status step; `{}`
        when no session runs; AutosaveFailed with the reason."""
        raise NotImplementedError

    def keep_after_failed_autosave(self, reason: str) -> str:
        """Keep what still holds the work after a failed autosave; says what, for the log."""
        return "The server keeps running; a stop through the glue or the culler is refused."

    def autosave_done(self) -> None:
        """An autosave succeeded (the embedded default then lets the workspace go)."""

    async def watch_disk(self) -> None:
        """Past `DISK_WARNING_FRACTION` of its disk, a running server is autosaved once (in
        the background: the poll goes on) and its `disk` says so, which the list and the
        launch page show: a write that then fails (or, on Kubernetes, an eviction) loses
        nothing written before the warning. Below `DISK_CLEAR_FRACTION` the warning goes,
        and the next time past it saves again. Each spawner's poll calls it while the server
        runs (the hub polls every `poll_interval` seconds)."""
        disk = self.user_options.get(DISK)
        if not isinstance(disk, dict):
            return
        usage = await self.disk_usage()
        if usage is None:
            return
        near = disk.get("near_limit") is True
        if not near and usage.fraction >= DISK_WARNING_FRACTION:
            self.log.warning(
                "%s: its workspace is %.0f%% full (disk %s); autosaving it",
                self._log_name,
                usage.fraction * 100,
                disk.get("limit"),
            )
            used = min(100, round(usage.fraction * 100))  # a walk (Kubernetes) may see more
            self.record(
                **{DISK: {**disk, "near_limit": True, "used_percent": used, "autosave": "saving"}}
            )
            self.db.commit()
            self._disk_save = asyncio.ensure_future(self._autosave_near_limit())
        elif near and usage.fraction < DISK_CLEAR_FRACTION:
            self.record(**{DISK: {"limit": disk.get("limit"), "near_limit": False}})
            self.db.commit()
        elif near and disk.get("autosave") == "saving" and self._disk_save is None:
            # the hub restarted during that autosave: this hub makes it
            self._disk_save = asyncio.ensure_future(self._autosave_near_limit())

    async def _autosave_near_limit(self) -> None:
        """The disk watch's one autosave; its outcome goes into the server's `disk`."""
        try:
            answer = await self.autosave()
            outcome = "saved" if answer.get("pushed") else "clean"
        except AutosaveFailed:
            outcome = "failed"  # logged loudly, the workspace kept
        except Exception:
            self.log.exception("%s: the disk watch's autosave failed", self._log_name)
            outcome = "failed"
        disk = self.user_options.get(DISK)
        if isinstance(disk, dict) and disk.get("autosave") == "saving":  # not since restarted
            self.record(**{DISK: {**disk, "autosave": outcome}})
            self.db.commit()

    async def disk_usage(self) -> Usage | None:
        """How full the server's workspace is (`disk_usage` of the spawner); None: unknown."""
        return None

    def autosave_branch(self, launch: Launch) -> str:
        prefix = self.notebooks["autosave"]["branchPrefix"]
        return contracts.autosave_branch(prefix, self.user.name, launch.target.commit_sha)

    def autosave_key(self, launch: Launch) -> str:
        """The signing key of this server's autosave branch (glue.session.autosave.branch_key), for
        its git component only. Derived from the hub's cookie secret: the hub keeps it across
        restarts (z2jh in its Secret, the embedded default in its state directory) and no session
        sees it; a new cookie secret makes older autosaves unrestorable (kept)."""
        secret = (getattr(self.user, "settings", None) or {}).get("cookie_secret")
        if not secret:
            raise RuntimeError("The hub has no cookie secret to sign autosaves with.")
        master = secret if isinstance(secret, bytes) else str(secret).encode()
        return autosave.branch_key(master, self.autosave_branch(launch))

    def session_outcome(self, answer: Any, progress: int) -> dict[str, str | None]:
        """What to record of a launch's session step (glue.session.gitsession: its JSON answer, `{}`
        when there is none): RESTORED_FROM, the autosave branch whose unsaved work came
        back, and RESTORE_REFUSED, the sentence why an autosave was not restored (kept), each
        None when not said. The user must learn of a refusal: the hub's log and the launch's
        progress (at `progress`) say it too. Both spawners decide it here, once."""
        said = answer if isinstance(answer, dict) else {}
        restored, refused = said.get("restored_from"), said.get("restore_refused")
        restored = restored if isinstance(restored, str) and restored else None
        refused = refused if isinstance(refused, str) and refused else None
        if refused:
            self.log.warning("%s: %s", self._log_name, refused)
            self.emit(progress, refused)
        return {RESTORED_FROM: restored, RESTORE_REFUSED: refused}

    def record(self, **learned: Any) -> None:
        """Keep what the spawner learned (`launch.SPAWNER_OPTIONS`: where the workspace came
        from, the server's pod, why its pod outlived a stop, what its memory did; None:
        nothing) in the user_options the hub shows and stores, which the glue reads."""
        options = {k: v for k, v in self.user_options.items() if k not in learned}
        options.update({k: v for k, v in learned.items() if v is not None})
        self.user_options = self.orm_spawner.user_options = options

    @staticmethod
    def lab_url(launch: Launch) -> str:
        notebook = launch.target.notebook
        return f"/lab/tree/{quote(notebook)}" if notebook else "/lab"


def check_user_options(spawner: CommitSpawnerMixin, user_options: dict[str, Any]) -> None:
    """JupyterHub 5.3+ runs this before start(): a launch the config refuses (say a profile
    an upgrade removed) is then a 400 with our sentence, not a 500 from start()."""
    spawner._start_began = time.monotonic()  # the spawn begins here: run_post_stop_hook
    try:
        from_user_options(spawner.notebooks, user_options)
    except GlueError as e:
        raise web.HTTPError(400, "%s", e.message) from None


async def run_clone(checked: Checked, dest: Path, *, sandbox: Sandbox | None = None) -> None:
    """Run the clone step (`clone.step`) as a process, the token in a file only it reads.

    With a `sandbox` it runs as the server's user, sees only the workspace, the
    repository (when it is a local path) and the token, and gets no more of the
    hub's environment than PATH and the locale.
    """
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
        env = {**env, **step_env}
        if sandbox:
            env, argv = _sandboxed_clone(sandbox, checked.source, Path(secrets_dir), env, argv)
        try:
            await steprunner.run_step(argv, env, CLONE_TIMEOUT, "Cloning")
        except steprunner.StepFailed as e:
            raise RuntimeError(str(e).removeprefix("clone: ")) from None


def _sandboxed_clone(
    sandbox: Sandbox, source: str, secrets: Path, env: dict[str, str], args: Sequence[str]
) -> tuple[dict[str, str], list[str]]:
    """The clone's environment and command line inside `sandbox`.

    A local repository belongs to the hub's user, not the sandbox's: git would
    refuse it as of "dubious ownership", so the clone's own git config (read
    through XDG_CONFIG_HOME, which the clone routine keeps) trusts that one path.
    """
    readable = [secrets]
    extra = {k: v for k, v in env.items() if k == "NOTEBOOKS_GIT_TOKEN_FILE"}
    if source.startswith("file://"):
        repo = Path(urlparse(source).path)
        readable.append(repo)
        config = secrets / "git" / "config"
        config.parent.mkdir()
        config.write_text(f"[safe]\n\tdirectory = {repo}\n")
        extra["XDG_CONFIG_HOME"] = str(secrets)
    sandbox.give(secrets)
    return sandbox.environment(env, **extra), sandbox.command(args, readable=readable)


class LocalCommitSpawner(CommitSpawnerMixin, SimpleLocalProcessSpawner):
    """The embedded default: the commit is cloned into a workspace, and the server runs there,
    both in the user's sandbox (glue.hub.sandbox); its git goes through a token component beside
    the sandbox, and its work is autosaved before every stop (glue.hub.localsession)."""

    port: int  # LocalProcessSpawner's trait (jupyterhub ships no types)
    api_token: str
    sessions_root = Unicode(
        help="A directory of the hub's state, closed to sandboxes: the components' files."
    ).tag(config=True)

    git_port = 0  # the component's port while a session runs (0: none)
    _watched = False  # ended() is among the hub's poll callbacks
    _component: Popen[bytes] | None = None

    @default("sessions_root")
    def _beside_the_hub_db(self) -> str:
        """Next to the hub's own state files (its working directory), as the hub keeps them;
        the embedded default sets `<NOTEBOOKS_STATE>/sessions`."""
        return os.path.abspath("renku-sessions")

    def workspace(self) -> Path:
        root = Path(self.notebooks["spawner"]["workspaceRoot"])
        return root / self.user.name / (self.name or "default")

    def sandbox(self) -> Sandbox:
        """This server's sandbox, sized by the profile apply_profile chose."""
        return Sandbox(
            uid=uid_for(self.user.id),
            workspace=self.workspace(),
            memory=self.mem_limit,
            cpus=self.cpu_limit,
            processes=self.notebooks["spawner"]["processLimit"],
            disk=self.disk_limit,
            isolated=self.notebooks["spawner"]["sandbox"],
        )

    def session_git(self, project: str = "", source: str = "") -> SessionGit:
        private = Path(self.sessions_root) / f"{self.user.id}-{self.name or 'default'}"
        return SessionGit(private, project, source, self.user.name, self.name)

    async def start(self) -> tuple[str, int]:
        started = time.monotonic()
        checked = await self.prepare_launch()
        launch, target = checked.launch, checked.launch.target
        sandbox = self.sandbox()
        try:
            await asyncio.to_thread(sandbox.prepare)  # mkfs and mount: not on the hub's loop
        except DiskError as e:
            raise RuntimeError(f"The workspace's disk could not be set up: {e}") from None
        git = self.session_git(target.full_path, checked.source)
        kept = git.kept
        # the server's log (logs.py): the clone step's outcome, then the server's output
        log_fd = logs.open_for_server(self.notebooks, self.user.name, self.name)
        secret = checked.caller.git_token
        try:
            if kept:
                self.log.warning(
                    "%s: its last autosave failed; reusing its workspace", self._log_name
                )
                self.emit(20, "Reopening the workspace whose autosave failed, as it was")
            else:
                self.emit(20, f"Cloning {target.full_path} at {target.commit_sha[:7]}")
                try:
                    await run_clone(checked, sandbox.workspace, sandbox=sandbox)
                except RuntimeError as e:
                    self._log_line(log_fd, f"Clone failed: {e}", secret)
                    raise RuntimeError(f"Clone failed: {e}") from None
                self._log_line(log_fd, f"Cloned {target.full_path} at {target.commit_sha}", None)
            try:
                answer = await self.start_session_git(checked, sandbox, git, restore=not kept)
            except asyncio.CancelledError:
                # the hub interrupting the launch (a DELETE while it starts, the start
                # timeout) waits a second for it, then calls no stop() for a server without
                # a process: the component ends now (only the killed step used it)
                self.kill_session_git()
                raise
            except Exception:
                await self.stop_session_git()
                raise
            session = self.session_outcome(answer, 50)
            restored, refused = session[RESTORED_FROM], session[RESTORE_REFUSED]
            done = f"Ready in {time.monotonic() - started:.1f} s"
            if restored:
                done += f"; unsaved work restored from {restored}"
            if refused:
                self._log_line(log_fd, refused, None)
            self.emit(60, f"{done}; starting the notebook server")
            self.notebook_dir = str(sandbox.workspace)
            self.default_url = self.lab_url(launch)
            if self.port == 0:
                self.port = random_port()
            argv = [*self.cmd, *self.get_args(), *kernel.SERVER_ARGS]
            command = sandbox.command(argv, outlive_hub=True)
            self.log.info("Spawning %s", shlex.join(command))
            self.hand_over()
            # a Popen, as LocalProcessSpawner.poll expects; starting it does not block
            self.proc = Popen(  # noqa: ASYNC220
                command,
                env=self.get_env(),
                start_new_session=True,
                preexec_fn=sandbox.limit(),
                stdout=log_fd,
                stderr=log_fd,
            )
        finally:
            os.close(log_fd)  # the server holds its own copy
        self.pid = self.proc.pid
        kills = sandbox.oom_kills()  # None: no memory cgroup here, so nothing to watch
        memory = None
        if kills is not None:
            limit = self.profile_named(launch.profile)["memory"]
            memory = {"limit": limit, "oom_kills": kills, "server_killed": False}
        disk = None  # None: no filesystem of its own here, so nothing to watch
        if sandbox.disk_usage() is not None:
            disk = {"limit": self.profile_named(launch.profile)["disk"], "near_limit": False}
        # committed by the hub with the start
        self.record(**session, **{MEMORY: memory, DISK: disk})
        if not self._watched:
            self.add_poll_callback(self.ended)
            self._watched = True
        return ("127.0.0.1", self.port)

    async def ended(self) -> None:
        """The hub's poll found the server gone (a crash, the OOM killer). JupyterHub itself
        acts on that only at its own start or when a request reaches the dead server; until
        then the hub (and the glue) would call it running. Stop it as JupyterHub's start
        does, and clean up what our stop() would have: the glue then says it failed, and why."""
        self._watched = False
        self.log.warning("%s ended on its own; stopping it in the hub", self._log_name)
        proxy = self.user.settings.get("proxy")
        if proxy is not None:
            await proxy.delete_user(self.user, self.name)
        await self.user.stop(self.name)
        await self.stop_session_git()
        await asyncio.to_thread(self.sandbox().release)

    async def poll(self) -> int | None:
        status: int | None = await super().poll()
        self.watch_memory(status)
        if status is None:
            await self.watch_disk()
        return status

    async def disk_usage(self) -> Usage | None:
        """The workspace's own filesystem, read on the host (statvfs: no walk)."""
        return self.sandbox().disk_usage()

    def watch_memory(self, status: int | None) -> None:
        """Count the OOM killer's work in the server's cgroup into its `memory` (the one place
        that decides): a server found exited by SIGKILL after a new kill was killed for its
        memory, which the glue's failure then says; a kill that left the server running ended
        a kernel or a terminal's command. The hub polls every `poll_interval` seconds."""
        memory = self.user_options.get(MEMORY)
        if not isinstance(memory, dict):
            return
        kills = self.sandbox().oom_kills()
        seen = int(memory.get("oom_kills") or 0)
        if kills is None or kills <= seen:
            return
        killed = status in KILLED_STATUS
        self.log.warning(
            "%s: the kernel's OOM killer ended %d process(es) past its memory limit %s%s",
            self._log_name,
            kills - seen,
            memory.get("limit"),
            ", the server's among them" if killed else "",
        )
        self.record(**{MEMORY: {**memory, "oom_kills": kills, "server_killed": killed}})
        self.db.commit()

    @staticmethod
    def _log_line(fd: int, text: str, secret: str | None) -> None:
        os.write(fd, (logs.scrub(text, secret) + "\n").encode())

    async def start_session_git(
        self, checked: Checked, sandbox: Sandbox, git: SessionGit, *, restore: bool
    ) -> dict[str, Any]:
        """Start the component, then restore or discard the autosave through it and point
        the checkout at it (the session step, in the sandbox)."""
        launch = checked.launch
        settings = git.prepare(
            git_token=checked.caller.git_token,
            hub_token=self.api_token or "",
            service_api_token=self.service_api_token,
            token_endpoint=self.git_token_endpoint,
            autosave_prefix=self.notebooks["autosave"]["branchPrefix"],
            autosave_branch=self.autosave_branch(launch),
            autosave_key=self.autosave_key(launch),
        )
        # a component a hub killed during this server's last launch left running goes first
        await localsession.stop_component(None, settings.secret_file)
        self.git_port = random_port()
        self._component = localsession.start_component(settings, self.git_port)
        await localsession.wait_listening(self.git_port, self._component)
        if restore:
            what = "Starting clean" if launch.autosave == "discard" else "Restoring unsaved work"
            self.emit(40, f"{what} ({self.autosave_branch(launch)})")
        try:
            return await localsession.session_step(
                sandbox,
                git.secret(),
                port=self.git_port,
                project=launch.target.full_path,
                identity=checked.caller.identity(),
                branch=self.autosave_branch(launch),
                launched=launch.target.commit_sha,
                discard=launch.autosave == "discard",
                restore=restore,
            )
        except steprunner.StepFailed as e:
            raise RuntimeError(str(e).removeprefix("session: ")) from None

    async def stop_session_git(self) -> None:
        await localsession.stop_component(self._component, self.session_git().secret_file)
        self._forget_session_git()

    def kill_session_git(self) -> None:
        localsession.kill_component(self._component)
        self._forget_session_git()

    def _forget_session_git(self) -> None:
        self._component, self.git_port = None, 0
        self.session_git().forget_secrets()

    async def session_autosave(self, *, save: bool) -> dict[str, Any]:
        """The save or status step in the sandbox, pushing through the component. The one
        autosave of this server: `stop()` runs it again."""
        if not self.git_port:
            return {}
        config = self.notebooks["autosave"]
        try:
            launch = from_user_options(self.notebooks, self.user_options)
            secret = self.session_git().secret()
            if not save:
                return await localsession.inspect(
                    self.sandbox(),
                    secret,
                    launched=launch.target.commit_sha,
                    max_file_bytes=config["maxFileBytes"],
                )
            return await localsession.save(
                self.sandbox(),
                secret,
                port=self.git_port,
                project=launch.target.full_path,
                branch=self.autosave_branch(launch),
                launched=launch.target.commit_sha,
                max_file_bytes=config["maxFileBytes"],
                seconds=config["timeoutSeconds"],
            )
        except (steprunner.StepFailed, GlueError, OSError, ValueError) as e:
            raise AutosaveFailed(getattr(e, "message", None) or str(e)) from None

    def keep_after_failed_autosave(self, reason: str) -> str:
        """The workspace is marked kept (see delete_forever): nothing deletes it."""
        self.session_git().mark_kept(reason)
        return f"Its workspace {self.workspace()} is kept as it is."

    def autosave_done(self) -> None:
        self.session_git().unmark_kept()

    def get_state(self) -> dict[str, Any]:
        """The component's port survives a hub restart: the stop still autosaves through it
        (and finds the component by its secret file to stop it, see stop_component)."""
        state: dict[str, Any] = super().get_state()
        if self.git_port:
            state.update(git_port=self.git_port)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.git_port = int(state.get("git_port", 0))

    def clear_state(self) -> None:
        super().clear_state()
        self.git_port = 0

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        """The sandbox sets HOME; nothing of the hub's own paths goes in but the kernel spec
        and the kernels' runtime directory in the private home (glue.session.kernel)."""
        env.update(USER=self.user.name, SHELL="/bin/bash")
        env.update(kernel.server_environment(self.sandbox().home))
        return env

    async def _signal(self, sig: int) -> bool:
        if not self.sandbox().isolated:  # no bubblewrap: the pid is the server itself
            return bool(await super()._signal(sig))
        return send_signal(self.pid, sig)

    async def stop(self, now: bool = False) -> None:
        """Autosave, then stop. A failed autosave cannot refuse the stop: JupyterHub has
        already removed the route and forgets the server whatever stop() raises (User.stop
        clears its state in a `finally`), so the process would run on untracked. The
        workspace is kept instead (delete_forever) and the next launch reopens it.

        A stop through the hub's saving DELETE (the glue's, the culler's) has saved a
        moment ago, in the same request: saving again would only cost time (a second step
        in the sandbox), since the stop ends the server's processes right after either."""
        if not self.saved_for_stop:
            with contextlib.suppress(AutosaveFailed):  # logged loudly, workspace marked kept
                await self.autosave()
        await super().stop(now)
        await self.stop_session_git()
        kept = self.session_git().kept  # its work only there: left at its path
        await asyncio.to_thread(functools.partial(self.sandbox().release, unmount=not kept))

    def delete_forever(self) -> None:
        """The hub removes the server: its workspace goes with it, unless its autosave failed
        (then the work is only there: the next launch of this server reopens it)."""
        git = self.session_git()
        if git.kept:
            self.log.error(
                "Keeping the workspace %s of removed %s: its autosave failed.",
                self.workspace(),
                self._log_name,
            )
            return
        self.sandbox().remove_workspace()
        git.remove()
        logs.remove(self.notebooks, self.user.name, self.name)
