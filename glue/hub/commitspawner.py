"""Hub-side hooks shared by every spawner: the mixin of LocalCommitSpawner
(glue.hub.localspawner) and CommitKubeSpawner (glue.hub.kubespawner).

A spawner here trusts nothing in user_options: it rebuilds the launch with the
same checks as the glue, asks the git provider again whether the user may
launch, and only then puts the commit in place and starts the server. What it
touches of JupyterHub beyond the Spawner's public hooks goes through
glue.hub.internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, NamedTuple, cast
from urllib.parse import quote

from jupyterhub.utils import maybe_future
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Dict, Unicode, default
from traitlets.config import Configurable

from glue.core import contracts
from glue.core.config import Config, Profile
from glue.core.contracts import (
    DISK,
    HIBERNATED_AT,
    HIBERNATED_DISK,
    RESTORE_REFUSED,
    RESTORED_FROM,
)
from glue.core.errors import AutosaveFailed, GlueError
from glue.core.launch import Launch, from_user_options
from glue.hub import internals, phases
from glue.hub.disk import Usage
from glue.providers.access import Access
from glue.providers.base import Caller
from glue.providers.select import make_provider
from glue.session import autosave

PROGRESS_POLL_SECONDS = 0.25
# how often a spawner asks its new server whether it answers yet (wait_answering): the hub's
# own wait afterwards backs off from 0.2 s to 5 s with jitter, which found a server that
# answered after 2 s up to 1.6 s late
ANSWER_POLL_SECONDS = 0.05
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
    # set by the hub's pause (glue.hub.pauseapi) for the stop it makes: that stop keeps the
    # whole workspace and does not autosave (the workspace holds more than a save could)
    pausing = False
    # whether this spawner keeps a stopped server's whole workspace (a pause): the local
    # spawner's directory; on Kubernetes, once its workspace is a volume that outlives the pod
    can_pause = False
    # a paused server's (HIBERNATED_AT, HIBERNATED_DISK in its spawner state): when it was
    # paused, and the bytes its kept workspace holds; None while it is not paused
    hibernated_at: float | None = None
    hibernated_disk: int | None = None
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

    @property
    def log_label(self) -> str:
        """`user:server`, as the hub's own log lines name this server (internals.log_name)."""
        return internals.log_name(self)

    @property
    def notebooks(self) -> Config:
        """The config, typed; glue.hub.setup sets the trait from `glue.core.config.load`."""
        return cast(Config, self.notebooks_config)

    def emit(self, progress: int, message: str) -> None:
        """Record a progress event; the hub relays it on the server's progress stream. It
        carries the launch's phases recorded so far (`phases`: {phase: seconds})."""
        self.log.info("%s: %s", self.log_label, message)
        event: dict[str, Any] = {"progress": progress, "message": message}
        recorded = self.user_options.get(contracts.PHASES)
        if isinstance(recorded, dict) and recorded:
            event[contracts.PHASES] = dict(recorded)
        self._events.append(event)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one phase of this launch (contracts.LAUNCH_PHASES) as it runs; one that
        completes is recorded (glue.hub.phases.record), one that raises is not."""
        started = time.monotonic()
        yield
        self.record_phase(name, time.monotonic() - started)

    def record_phase(self, name: str, seconds: float) -> None:
        phases.record(self, name, seconds)
        self.log.debug("%s: %s took %.3f s", self.log_label, name, seconds)

    async def wait_answering(self, url: str, running: Callable[[], bool], seconds: float) -> bool:
        """Ask the new server at `url` every ANSWER_POLL_SECONDS until it answers as the
        hub's own wait counts one (any status below 500), while `running()` says its process
        runs, for at most `seconds`. Whether it answered: the hub's wait that follows
        (and its timeout and failure handling, unchanged) then finds it at its first try."""
        client = AsyncHTTPClient()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and running():
            try:
                await client.fetch(url, follow_redirects=False, connect_timeout=1,
                                   request_timeout=5)
                return True
            except HTTPClientError as e:
                if e.code < 500:
                    return True
            except OSError:
                pass  # not listening yet
            await asyncio.sleep(ANSWER_POLL_SECONDS)
        return False

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
        (the hub calls this before every spawn, before a progress stream can open). A pause
        is not cleared: the hub clears after every stop and before every start, and the
        pause must reach the start that resumes it (`resumed`) or the removal."""
        super().clear_state()  # type: ignore[misc]  # the Spawner's, next in the MRO
        self._events, self._handed_over = [], False

    @property
    def hibernated(self) -> bool:
        """Paused: stopped with its whole workspace kept, to be resumed as it was."""
        return self.hibernated_at is not None

    def get_state(self) -> dict[str, Any]:
        """The pause survives a hub restart in the hub's database, as the spawner's state."""
        state: dict[str, Any] = super().get_state()  # type: ignore[misc]  # the Spawner's
        if self.hibernated_at is not None:
            state[HIBERNATED_AT] = self.hibernated_at
            state[HIBERNATED_DISK] = self.hibernated_disk
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)  # type: ignore[misc]  # the Spawner's, next in the MRO
        at, held = state.get(HIBERNATED_AT), state.get(HIBERNATED_DISK)
        self.hibernated_at = float(at) if isinstance(at, int | float) else None
        self.hibernated_disk = int(held) if isinstance(held, int) else None

    def paused(self, disk_bytes: int | None) -> None:
        """The pause's stop is done: say so in the spawner state (the hub stores it with the
        stop) and in the user_options the glue reads."""
        self.hibernated_at, self.hibernated_disk = time.time(), disk_bytes
        self.record(**{HIBERNATED_AT: self.hibernated_at, HIBERNATED_DISK: disk_bytes})
        self.log.info(
            "%s: paused; its workspace is kept (%s bytes)", self.log_label, disk_bytes
        )

    def resumed(self) -> None:
        """A start of the paused server succeeded: it runs again, no longer paused."""
        self.hibernated_at = self.hibernated_disk = None
        self.record(**{HIBERNATED_AT: None, HIBERNATED_DISK: None})

    async def autosave_paused(self) -> dict[str, Any]:
        """Autosave a paused server's kept workspace (before its removal): the step's answer;
        AutosaveFailed with the reason, and then the workspace is kept."""
        raise AutosaveFailed("This spawner cannot autosave a paused server.")

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
        if self.hibernated:
            # a resume: the hub replaced the user_options with the launch's; a resume that
            # fails must show paused again, so the pause stays said there until `resumed`
            self.record(
                **{HIBERNATED_AT: self.hibernated_at, HIBERNATED_DISK: self.hibernated_disk}
            )
        return Checked(launch, caller, source)

    def run_post_stop_hook(self) -> Any:
        """A start that failed at once leaves nothing: the hub already answered the launch
        with the failure, so a failed server would only use up the user's limit."""
        spawn = internals.spawn_future(self)
        began = getattr(self, "_start_began", None)
        at_once = internals.slow_spawn_timeout(self.user)
        # a resume that failed keeps its server paused: its workspace holds the user's work
        if (
            spawn
            and not spawn.done()
            and began
            and time.monotonic() - began < at_once
            and not self.hibernated
        ):
            self._removal = asyncio.ensure_future(self._remove_after(spawn))
        return super().run_post_stop_hook()  # type: ignore[misc]  # the Spawner's, next in the MRO

    async def _remove_after(self, spawn: asyncio.Future[Any]) -> None:
        """Remove this server from the hub once its failed start has been answered, as the
        hub's own `DELETE ... {"remove": true}` does."""
        with contextlib.suppress(BaseException):
            await spawn
        await asyncio.sleep(1)  # the hub's request handler reports the failure first
        user, name = self.user, self.name
        if self.active or internals.loaded_spawners(user).get(name) is not self:
            return  # launched again meanwhile
        self.log.info("Removing %s, which failed to start", self.log_label)
        await maybe_future(self.delete_forever())
        internals.forget_server(self)

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
                self.log_label,
                e.message,
                self.keep_after_failed_autosave(e.message),
            )
            raise
        self.autosave_done()
        if answer.get("pushed"):
            self.log.info("%s: autosaved to %s", self.log_label, answer.get("branch"))
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
                self.log_label,
                usage.fraction * 100,
                disk.get("limit"),
            )
            used = min(100, round(usage.fraction * 100))  # a walk (Kubernetes) may see more
            self.record(
                **{DISK: {**disk, "near_limit": True, "used_percent": used, "autosave": "saving"}}
            )
            internals.commit(self)
            self._disk_save = asyncio.ensure_future(self._autosave_near_limit())
        elif near and usage.fraction < DISK_CLEAR_FRACTION:
            self.record(**{DISK: {"limit": disk.get("limit"), "near_limit": False}})
            internals.commit(self)
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
            self.log.exception("%s: the disk watch's autosave failed", self.log_label)
            outcome = "failed"
        disk = self.user_options.get(DISK)
        if isinstance(disk, dict) and disk.get("autosave") == "saving":  # not since restarted
            self.record(**{DISK: {**disk, "autosave": outcome}})
            internals.commit(self)

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
        secret = internals.cookie_secret(self.user)
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
            self.log.warning("%s: %s", self.log_label, refused)
            self.emit(progress, refused)
        return {RESTORED_FROM: restored, RESTORE_REFUSED: refused}

    def record(self, **learned: Any) -> None:
        """Keep what the spawner learned (`contracts.SPAWNER_OPTIONS`: where the workspace came
        from, the server's pod, why its pod outlived a stop, what its memory did; None:
        nothing) in the user_options the hub shows and stores, which the glue reads."""
        options = {k: v for k, v in self.user_options.items() if k not in learned}
        options.update({k: v for k, v in learned.items() if v is not None})
        internals.set_user_options(self, options)

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
