"""The local-process spawner of the embedded default: LocalCommitSpawner, and what only it uses.

Each server's commit is cloned into a workspace and the server runs there, both
in the user's sandbox (glue.hub.sandbox); its git goes through a token
component beside the sandbox (glue.hub.localsession), and the hub's poll
watches its memory and disk. The launch checks, the progress events and the
autosave protocol are the ones every spawner shares (glue.hub.commitspawner).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shlex
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from subprocess import Popen
from typing import Any
from urllib.parse import urlparse

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Unicode, default

from glue.core import serverlogs as logs
from glue.core.contracts import (
    DISK,
    LISTEN_FD_ENV,
    MEMORY,
    PHASE_CLONE,
    PHASE_HUB_CHECKS,
    PHASE_SERVER,
    PHASE_SESSION,
    RESTORE_REFUSED,
    RESTORED_FROM,
)
from glue.core.errors import AutosaveFailed, GlueError
from glue.core.launch import from_user_options
from glue.hub import disk as workspace_disk
from glue.hub import internals, listeners, localsession
from glue.hub.commitspawner import Checked, CommitSpawnerMixin
from glue.hub.disk import DiskError, Usage
from glue.hub.localsession import SessionGit
from glue.hub.sandbox import Sandbox, send_signal, uid_for
from glue.session import clone, kernel, steprunner, workspace

CLONE_TIMEOUT = 600
# the part of the hub's start timeout left to the hub once the spawner's own wait for the
# server's first answer gives up
START_MARGIN_SECONDS = 2.0
COMPONENT_SECONDS = 30.0  # until the session's git component answers on its socket
# how a server that got SIGKILL exits: bubblewrap passes on 128 + the signal; Popen says -9
KILLED_STATUS = (128 + signal.SIGKILL, -signal.SIGKILL)
# the server runs the hub's own environment, which has no language server: jupyter_lsp's
# search for one found nothing, and ran `npm prefix -g` (node, about 0.3 s of CPU) at every
# server's start to find it
NO_LANGUAGE_SERVERS = ("--LanguageServerManager.autodetect=False",)


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


async def _cancelled(task: asyncio.Future[Any]) -> None:
    """`task` ended: cancelled if still running, its outcome (an error too) dropped; the
    caller cleans up what it started."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


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
    can_pause = True  # the workspace directory (and its disk image) outlives the server
    _watched = False  # ended() is among the hub's poll callbacks
    _component: Popen[bytes] | None = None
    # the listening sockets of the server and of its git component, held while they run
    _listener: socket.socket | None = None
    _git_listener: socket.socket | None = None
    _held_again = False  # hold_again() ran: this hub holds what it can of a running server's
    # the user's git identity at the launch: the autosave at the stop commits as them
    _identity: tuple[str, str] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # a port the config gave every server (JupyterHub's Spawner.port), before any start
        # sets the one it holds: 0 when each start has a port of its own
        self.fixed_port = self.port

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
        with self.phase(PHASE_HUB_CHECKS):
            checked = await self.prepare_launch()
            launch, target = checked.launch, checked.launch.target
            sandbox = self.sandbox()
            try:
                await asyncio.to_thread(sandbox.prepare)  # mkfs and mount: not on the hub's loop
            except DiskError as e:
                raise RuntimeError(f"The workspace's disk could not be set up: {e}") from None
        git = self.session_git(target.full_path, checked.source)
        kept = git.kept
        # a paused server's workspace (or one a stop kept): reopened as it is, no clone, no
        # restore; decided by the mark the workspace carries (glue.session.workspace)
        reopen = not kept and workspace.opened(sandbox.workspace, target.commit_sha)
        # the server's log (logs.py): the clone step's outcome, then the server's output
        log_fd = logs.open_for_server(self.notebooks, self.user.name, self.name)
        secret = checked.caller.git_token
        # the session's git component starts while the commit is cloned: it needs no checkout
        opening = asyncio.ensure_future(self.open_session_git(checked, git))

        async def open_session() -> dict[str, Any]:
            with self.phase(PHASE_SESSION):
                await opening
                return await self.session_git_step(
                    checked, sandbox, git, restore=not (kept or reopen)
                )

        # a resume's session step (the checkout's remote and secret renewed, nothing
        # restored) runs beside the server's start; start() returns, and the hub routes to
        # the server, only once both are done
        beside: asyncio.Future[dict[str, Any]] | None = None
        try:
            try:
                if kept:
                    self.log.warning(
                        "%s: its last autosave failed; reusing its workspace", self.log_label
                    )
                    self.emit(20, "Reopening the workspace whose autosave failed, as it was")
                elif reopen:
                    self.log.info("%s: resuming its kept workspace", self.log_label)
                    self.emit(20, "Resuming the paused workspace as it was")
                else:
                    self.emit(20, f"Cloning {target.full_path} at {target.commit_sha[:7]}")
                    try:
                        with self.phase(PHASE_CLONE):
                            await run_clone(checked, sandbox.workspace, sandbox=sandbox)
                    except RuntimeError as e:
                        self._log_line(log_fd, f"Clone failed: {e}", secret)
                        raise RuntimeError(f"Clone failed: {e}") from None
                    self._log_line(
                        log_fd, f"Cloned {target.full_path} at {target.commit_sha}", None
                    )
                if reopen:
                    beside = asyncio.ensure_future(open_session())
                    answer: dict[str, Any] = {}
                else:
                    answer = await open_session()
            except asyncio.CancelledError:
                # the hub interrupting the launch (a DELETE while it starts, the start
                # timeout) waits a second for it, then calls no stop() for a server without
                # a process: the component ends now (only the killed step used it)
                await _cancelled(opening)
                self.kill_session_git()
                raise
            except Exception:
                await _cancelled(opening)
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
            self.hand_over()
            server_started = time.monotonic()
            self.start_server(sandbox, log_fd)
        finally:
            os.close(log_fd)  # the server holds its own copy
        try:
            if beside is not None:
                await beside
        except BaseException:
            if beside is not None:  # the server goes with its session (the hub's stop follows)
                await _cancelled(beside)
                await _cancelled(opening)
                self.kill_session_git()
                with contextlib.suppress(Exception):
                    await self._signal(signal.SIGKILL)
            raise
        kills = sandbox.oom_kills()  # None: no memory cgroup here, so nothing to watch
        memory = None
        if kills is not None:
            limit = self.profile_named(launch.profile)["memory"]
            memory = {"limit": limit, "oom_kills": kills, "server_killed": False}
        disk = None  # None: no filesystem of its own here, so nothing to watch
        if sandbox.disk_usage() is not None:
            disk = {"limit": self.profile_named(launch.profile)["disk"], "near_limit": False}
        if self.hibernated:
            self.resumed()
        # committed by the hub with the start
        self.record(**session, **{MEMORY: memory, DISK: disk})
        if not self._watched:
            self.add_poll_callback(self.ended)
            self._watched = True
        # the server's first answer, asked for often: within what is left of the start
        # timeout (then the hub's own wait, with its http_timeout, goes on as before); its
        # address and pid are stored first, as the hub stores them when start() returns
        internals.record_started(self, "127.0.0.1", self.port)
        proc = self.proc
        left = self.start_timeout - (time.monotonic() - started) - START_MARGIN_SECONDS
        url = f"http://127.0.0.1:{self.port}{self.server.base_url}api"
        alive = lambda: proc.poll() is None  # noqa: E731
        if await self.wait_answering(url, alive, min(left, self.http_timeout)):
            self.record_phase(PHASE_SERVER, time.monotonic() - server_started)
        return ("127.0.0.1", self.port)

    def start_server(self, sandbox: Sandbox, log_fd: int) -> None:
        """Start the notebook server on a loopback socket bound here and held until the
        server is stopped (glue.hub.listeners says why). A port the config fixed for every
        server (JupyterHub's Spawner.port) that another process holds fails the launch
        closed, before anything starts."""
        try:
            listener = listeners.hold(self.fixed_port)
        except listeners.PortTaken as e:
            self.log.error("%s: %s", self.log_label, e)
            raise
        self.release_listener()
        self._listener, self._held_again = listener, True
        self.port = listener.getsockname()[1]
        argv = [*self.cmd, *self.get_args(), *kernel.SERVER_ARGS, *NO_LANGUAGE_SERVERS]
        command = sandbox.command(argv, outlive_hub=True)
        self.log.info("Spawning %s", shlex.join(command))
        # a Popen, as LocalProcessSpawner.poll expects; starting it does not block
        self.proc = Popen(
            command,
            env={**self.get_env(), LISTEN_FD_ENV: str(listener.fileno())},
            start_new_session=True,
            preexec_fn=sandbox.limit(),
            stdout=log_fd,
            stderr=log_fd,
            pass_fds=(listener.fileno(),),
        )
        self.pid = self.proc.pid

    def release_listener(self) -> None:
        """Close the hub's copy of the server's socket: only once the server is stopped,
        which the hub does after it removed the server's route."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def ended(self) -> None:
        """The hub's poll found the server gone (a crash, the OOM killer). JupyterHub itself
        acts on that only at its own start or when a request reaches the dead server; until
        then the hub (and the glue) would call it running. Stop it as JupyterHub's start
        does, and clean up what our stop() would have: the glue then says it failed, and why."""
        self._watched = False
        self.log.warning("%s ended on its own; stopping it in the hub", self.log_label)
        await internals.stop_ended_server(self)
        await self.stop_session_git()
        await asyncio.to_thread(self.sandbox().release)

    async def poll(self) -> int | None:
        status: int | None = await super().poll()
        self.watch_memory(status)
        if status is None:
            self.hold_again()
            await self.watch_disk()
        return status

    def hold_again(self) -> None:
        """At the first poll of a server this hub did not start (it outlived the hub before,
        whose copies of its sockets went with it): take copies back from its processes
        (listeners.take_back), so that its ports are held again until it is stopped."""
        if self._held_again:
            return
        self._held_again = True
        if self._listener is None and self.server is not None and self.pid:
            # the pid the hub stored, and what runs in it: another user's processes are not
            # in this tree
            tree = listeners.process_tree(self.pid)
            self._listener = listeners.take_back(tree, self.server.port)
        if self._git_listener is None and self.git_port:
            # found by their command line, which any process may copy: only the hub's own
            pids = localsession.components(self.session_git().secret_file)
            own = [pid for pid in pids if listeners.ours(pid)]
            self._git_listener = listeners.take_back(own, self.git_port)
        held = [s for s in (self._listener, self._git_listener) if s is not None]
        self.log.info("%s: holding %d of its ports again", self.log_label, len(held))

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
            self.log_label,
            kills - seen,
            memory.get("limit"),
            ", the server's among them" if killed else "",
        )
        self.record(**{MEMORY: {**memory, "oom_kills": kills, "server_killed": killed}})
        internals.commit(self)

    @staticmethod
    def _log_line(fd: int, text: str, secret: str | None) -> None:
        os.write(fd, (logs.scrub(text, secret) + "\n").encode())

    async def open_session_git(self, checked: Checked, git: SessionGit) -> None:
        """Start the session's git component (beside the sandbox) and wait until it listens."""
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
        self._git_listener = listeners.hold()  # held until the component is stopped
        self.git_port = self._git_listener.getsockname()[1]
        self._component = localsession.start_component(settings, self._git_listener)
        await listeners.wait_serving(
            self.git_port, self._component, "the session's git component", COMPONENT_SECONDS
        )

    async def session_git_step(
        self, checked: Checked, sandbox: Sandbox, git: SessionGit, *, restore: bool
    ) -> dict[str, Any]:
        """Through the running component: restore or discard the autosave and point the
        checkout at it (the session step, in the sandbox)."""
        launch = checked.launch
        if restore:
            what = "Starting clean" if launch.autosave == "discard" else "Restoring unsaved work"
            self.emit(40, f"{what} ({self.autosave_branch(launch)})")
        try:
            return await localsession.session_step(
                sandbox,
                git.secret(),
                port=self.git_port,
                project=launch.target.full_path,
                identity=self._remember_identity(checked.caller.identity()),
                branch=self.autosave_branch(launch),
                launched=launch.target.commit_sha,
                discard=launch.autosave == "discard",
                restore=restore,
            )
        except steprunner.StepFailed as e:
            raise RuntimeError(str(e).removeprefix("session: ")) from None

    def _remember_identity(self, identity: tuple[str, str]) -> tuple[str, str]:
        self._identity = identity
        return identity

    async def stop_session_git(self) -> None:
        await localsession.stop_component(self._component, self.session_git().secret_file)
        self._forget_session_git()

    def kill_session_git(self) -> None:
        localsession.kill_component(self._component)
        self._forget_session_git()

    def _forget_session_git(self) -> None:
        if self._git_listener is not None:
            self._git_listener.close()  # the component ended: the port is free for anyone
        self._component, self._git_listener, self.git_port = None, None, 0
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
                identity=self._identity,
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
        """LocalProcessSpawner's private hook (its poll and stop signal through it; see
        glue.hub.internals): in the sandbox, bubblewrap's pid is not the server's."""
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
        try:
            if self.pausing:
                await self._pause(now)
                return
            if not self.saved_for_stop:
                with contextlib.suppress(AutosaveFailed):  # logged loudly, workspace kept
                    await self.autosave()
            await super().stop(now)
            await self.stop_session_git()
            kept = self.session_git().kept  # its work only there: left at its path
            await asyncio.to_thread(functools.partial(self.sandbox().release, unmount=not kept))
        finally:
            self.release_listener()

    async def _pause(self, now: bool) -> None:
        """A pause (glue.hub.pauseapi): the server's processes and its git component end, the
        workspace's filesystem is unmounted and kept whole (its image, or its directory),
        nothing is autosaved; the next start reopens it (glue.session.workspace)."""
        await super().stop(now)
        await self.stop_session_git()
        await asyncio.to_thread(self.sandbox().release)
        self.paused(await asyncio.to_thread(workspace_disk.held, self.workspace()))

    async def autosave_paused(self) -> dict[str, Any]:
        """Autosave the kept workspace of a paused server, as a running one's stop does: its
        filesystem mounted, its git component started for the save, both gone after. A
        failed save marks the workspace kept (delete_forever then leaves it)."""
        checked = await self.prepare_launch()  # the caller's token and access, checked again
        sandbox = self.sandbox()
        try:
            await asyncio.to_thread(sandbox.prepare)
        except DiskError as e:
            raise AutosaveFailed(f"The paused workspace could not be mounted: {e}") from None
        git = self.session_git(checked.launch.target.full_path, checked.source)
        try:
            await self.open_session_git(checked, git)
            self._remember_identity(checked.caller.identity())
            return await self.autosave()
        finally:
            await self.stop_session_git()
            await asyncio.to_thread(sandbox.release)

    def delete_forever(self) -> None:
        """The hub removes the server: its workspace goes with it, unless its autosave failed
        (then the work is only there: the next launch of this server reopens it)."""
        git = self.session_git()
        if git.kept:
            self.log.error(
                "Keeping the workspace %s of removed %s: its autosave failed.",
                self.workspace(),
                self.log_label,
            )
            return
        self.sandbox().remove_workspace()
        git.remove()
        logs.remove(self.notebooks, self.user.name, self.name)
