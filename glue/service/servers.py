"""The caller's servers, as the hub keeps them: read, launch and stop one per commit.

The hub is the only store: a server is ours when its user_options name a
project and a commit, and its status is read from the hub every time, so any
number of glue replicas agree and a restarted glue knows everything.

A request reads the user's hub model once (`view`): that one answer holds
both the user's servers and their auth_state, i.e. as whom the git provider
is asked. A launch then makes one more hub call, the start itself; its
answer (201 running, 202 starting) is all the hub will say, so the model we
return is built from it rather than read a third time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

from glue.core import contracts, launch, metrics
from glue.core import serverlogs as logs
from glue.core.config import Config
from glue.core.errors import (
    AutosaveFailed,
    BadRequest,
    Conflict,
    GlueError,
    NotFound,
    SpawnFailed,
    StopFailed,
    TooManyServers,
    UpstreamError,
)
from glue.core.launch import Launch
from glue.core.target import DOTDOT_REMOVED, Ref, Target, looks_like_file, ref_candidates
from glue.providers.access import Access
from glue.providers.base import Caller, GitProvider
from glue.service import failures
from glue.service.hubapi import Hub, HubCannotSave
from glue.service.podlogs import PodLogs

# the server statuses whose stop will autosave again: a server "running for" an autosave
LIVE = ("starting", "running")

ServerModel = dict[str, Any]
STOP_POLL_SECONDS = 0.25
FAILURE_LOOKUP_SECONDS = 5.0
UNSAVED_CHECK_SECONDS = 10.0
LAUNCH_OUTCOMES = {200: "existing", 201: "started", 202: "starting"}
STOP_OUTCOMES = {202: "stopping", 204: "stopped"}
STOP_FAILED = "The server could not be stopped: {why} It is kept while the deletion is retried; \
try again in a few minutes."
Result = TypeVar("Result", bound=tuple[int, Any])


def status_of(server: dict[str, Any]) -> str:
    if server.get("ready"):
        return "running"
    pending = server.get("pending")
    if pending == "spawn":
        return "starting"
    if pending == "stop":
        return "stopping"
    if pending:
        return "starting"
    if hibernated_at(server) is not None:
        return contracts.STATE_HIBERNATED  # paused: stopped, its workspace kept (glue.hub.pauseapi)
    # a named server we launched that is neither running nor pending has failed or died
    return "failed"


def hibernated_at(server: dict[str, Any]) -> float | None:
    """When a stopped server was paused (seconds since the epoch), as its spawner wrote it
    into its user_options; None for one that is not paused."""
    at = (server.get("user_options") or {}).get(contracts.HIBERNATED_AT)
    return float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    at = datetime.fromtimestamp(seconds, UTC)
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


def cull_at(last_activity: str | None, idle_seconds: int) -> str | None:
    """When the culler stops a server that stays idle: its last activity plus `idleSeconds`;
    None when culling for idleness is off or the hub knows no activity yet."""
    if not idle_seconds or not last_activity:
        return None
    try:
        last = datetime.fromisoformat(last_activity.replace("Z", "+00:00"))
    except ValueError:
        return None
    at = last.astimezone(UTC) + timedelta(seconds=idle_seconds)
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


def server_model(server: dict[str, Any], idle_seconds: int = 0) -> ServerModel | None:
    """Our server model for a hub server model, or None if the glue did not launch it;
    `idle_seconds` is `culling.idleSeconds` (0: never culled)."""
    options = server.get("user_options") or {}
    if not all(isinstance(options.get(k), str) for k in ("namespace", "project", "commit_sha")):
        return None
    return {
        "name": server["name"],
        "namespace": options["namespace"],
        "project": options["project"],
        "commit_sha": options["commit_sha"],
        "notebook": options.get("notebook") or "",
        "status": status_of(server),
        "url": server.get("url"),
        "started": server.get("started"),
        "last_activity": server.get("last_activity"),
        "profile": options.get("profile"),
        "image": options.get("image"),
        "image_fallback": options.get("image_fallback"),
        # set by the spawner when the start restored the autosave branch of this user and commit
        "restored_from": options.get(contracts.RESTORED_FROM),
        # set by the spawner when the autosave branch was there but not restored: why
        "restore_refused": options.get(contracts.RESTORE_REFUSED),
        "cull_at": cull_at(server.get("last_activity"), idle_seconds),
        "image_status": options.get("image_status"),
        "memory": memory_of(options.get(contracts.MEMORY)),
        "disk": disk_of(options.get(contracts.DISK)),
        "phases": phases_of(options.get(contracts.PHASES)),
        # a paused server's: when it was paused, and the bytes its kept workspace holds
        "hibernated_at": _iso(hibernated_at(server)) if status_of(server) == "hibernated" else None,
        "disk_bytes": _disk_bytes(options) if status_of(server) == "hibernated" else None,
        # why it failed (`failures.Failure.model()`), filled in where one server is shown
        "failure": None,
    }


def _disk_bytes(options: dict[str, Any]) -> int | None:
    held = options.get(contracts.HIBERNATED_DISK)
    return held if isinstance(held, int) and not isinstance(held, bool) and held >= 0 else None


def memory_of(recorded: Any) -> dict[str, Any] | None:
    """The server model's `memory`, from what the local spawner keeps in user_options
    (`spawner.watch_memory`); None where nobody watches the memory."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("limit"), str):
        return None
    kills = recorded.get("oom_kills")
    return {
        "limit": recorded["limit"],
        "oom_kills": kills if isinstance(kills, int) and kills >= 0 else 0,
        "server_killed": recorded.get("server_killed") is True,
    }


def phases_of(recorded: Any) -> dict[str, float]:
    """The server model's `phases`: the seconds of each phase of its last launch the hub,
    the session and the server recorded (glue.hub.phases), in launch order; only known phases
    with a finite, non-negative number of seconds."""
    if not isinstance(recorded, dict):
        return {}
    found = {}
    for phase in contracts.LAUNCH_PHASES:
        seconds = recorded.get(phase)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            continue
        if math.isfinite(seconds) and seconds >= 0:
            found[phase] = float(seconds)
    return found


DISK_AUTOSAVES = ("saving", "saved", "clean", "failed")


def disk_of(recorded: Any) -> dict[str, Any] | None:
    """The server model's `disk`, from what the local spawner keeps in user_options
    (`spawner.watch_disk`); None where nobody watches the workspace's disk."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("limit"), str):
        return None
    near = recorded.get("near_limit") is True
    used = recorded.get("used_percent")
    autosave = recorded.get("autosave")
    return {
        "limit": recorded["limit"],
        "near_limit": near,
        "used_percent": used if near and isinstance(used, int) and 0 <= used <= 100 else None,
        "autosave": autosave if near and autosave in DISK_AUTOSAVES else None,
    }


@dataclass(frozen=True)
class UserView:
    """What one read of the hub's user model tells: the caller, their servers, and the pods
    the Kubernetes spawner recorded for them (server name -> pod name)."""

    name: str
    caller: Caller
    servers: list[ServerModel]
    pods: dict[str, str] = field(default_factory=dict)
    # the user's URL as the hub makes it: `https://<user>.<domain>/user/<user>/` where each
    # user has an origin of their own, else `<base_url>user/<user>/`
    url: str = ""

    def find(self, target: Target) -> ServerModel | None:
        return next((m for m in self.servers if m["name"] == target.server_name), None)

    def pod(self, target: Target) -> str | None:
        return self.pods.get(target.server_name)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Servers:
    def __init__(
        self,
        hub: Hub,
        access: Access,
        provider: GitProvider,
        config: Config,
        *,
        base_url: str,
        pod_logs: PodLogs | None = None,
    ):
        self.hub = hub
        self.access = access
        self.provider = provider
        self.config = config
        self.base_url = base_url
        # where servers' logs are: their pods (Kubernetes), else the local spawner's files
        self.pod_logs = pod_logs
        self.stop_timeout = float(config["launch"]["stopTimeoutSeconds"])
        # a saving stop: the spawner's autosave step (its own timeout), then the hub's wait
        # for the stop (slow_stop_timeout, 10 s: it answers 202 after that)
        self.autosave_seconds = float(config["autosave"]["timeoutSeconds"]) + 15
        # one launch or stop at a time per server in this process; the hub settles the rest
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # --- reading --------------------------------------------------------------------

    async def autosaves(self, view: UserView, project: Ref) -> list[dict[str, Any]]:
        """The caller's autosave branches of the project, newest first: only names below
        their own `<prefix>/<user>/` that end in a full sha, whatever else the project has."""
        mine = contracts.autosave_user_prefix(self.config["autosave"]["branchPrefix"], view.name)
        found = []
        for branch in await self.provider.branches(view.caller, project, mine):
            sha = branch.name[len(mine) :]
            if not branch.name.startswith(mine) or not contracts.SHA.fullmatch(sha):
                continue
            server = view.find(project.at(sha))
            found.append(
                {
                    "commit_sha": sha,
                    "branch": branch.name,
                    "autosave_commit": branch.commit,
                    "date": branch.date,
                    "running": server is not None and server["status"] in LIVE,
                }
            )
        found.sort(key=lambda a: (a["date"] or "", a["commit_sha"]), reverse=True)
        return found

    async def delete_autosave(self, view: UserView, wanted: Target) -> None:
        """Delete the caller's autosave branch of the commit, with their own rights."""
        prefix = self.config["autosave"]["branchPrefix"]
        name = contracts.autosave_branch(prefix, view.name, wanted.commit_sha)
        if not await self.provider.delete_branch(view.caller, wanted, name):
            raise NotFound(
                f"You have no autosave of commit {wanted.commit_sha} in {wanted.full_path}.",
                code="autosave_not_found",
            )

    async def view(self, user: str) -> UserView:
        """The user's servers and the caller the provider needs, from one hub read."""
        model = await self.hub.servers(user)
        servers = (model.get("servers") or {}).values()
        idle = self.config["culling"]["idleSeconds"]
        found = [m for s in servers if (m := server_model(s, idle)) is not None]
        found.sort(key=lambda m: m["started"] or "", reverse=True)
        pods = {
            s["name"]: pod
            for s in servers
            if isinstance(pod := (s.get("user_options") or {}).get(contracts.POD_NAME), str)
        }
        auth_state = model.get("auth_state") if self.provider.needs_token else None
        url = model.get("url") or f"{self.base_url}user/{quote(user, safe='@~')}/"
        return UserView(user, Caller.from_auth_state(user, auth_state), found, pods, url)

    async def get(self, user: str, target: Target) -> ServerModel | None:
        return (await self.view(user)).find(target)

    async def progress(self, user: str, target: Target) -> AsyncGenerator[dict[str, Any], None]:
        """The hub's spawn progress events for the server, until the hub ends the stream."""
        async with contextlib.aclosing(self.hub.progress(user, target.server_name)) as events:
            async for event in events:
                yield event

    async def failure(self, user: str, target: Target) -> str | None:
        """Why the hub's last spawn of the server failed, while the hub still holds that spawn.

        The hub's progress endpoint answers a failed spawn with one `failed` event
        ("Spawn failed: ..."); once it has forgotten the spawn (a hub restart, a
        server that died after it ran) there is no reason to give: None.
        """
        try:
            async with asyncio.timeout(FAILURE_LOOKUP_SECONDS):
                async for event in self.progress(user, target):
                    message = event.get("message")
                    if event.get("failed") and isinstance(message, str) and message.strip():
                        return message
                    return None  # a live spawn: not a failure
        except (TimeoutError, GlueError):
            return None
        return None

    async def explain(
        self,
        user: str,
        target: Target,
        message: str | None,
        events: list[str] | tuple[str, ...] = (),
        secret: str | None = None,
        pod: str | None = None,
        memory: dict[str, Any] | None = None,
    ) -> failures.Failure:
        """Why the launch failed, for people: the hub's reason, the launch's last events,
        the tail of the server's log when it can be read (a failed pod is soon deleted) and
        the server model's `memory`."""
        try:
            tail = await self.tail(user, target, failures.LOG_LINES, secret, pod)
        except GlueError:
            tail = None  # the reason stands without the log
        return failures.explain(message, events, tail, memory)

    async def tail(
        self, user: str, target: Target, lines: int, secret: str | None, pod: str | None
    ) -> list[str] | None:
        """The server's log tail, scrubbed: its pod's containers on Kubernetes, else the
        local spawner's file; None when there is nothing to read."""
        if self.pod_logs is None:
            return await logs.tail(self.config, user, target.server_name, lines, secret)
        return None if pod is None else await self.pod_logs.tail(pod, lines, secret)

    async def wait_stopped(self, user: str, target: Target, seconds: float) -> ServerModel | None:
        """Poll until the server is gone or no longer stopping; its model then (None: gone)."""
        deadline = time.monotonic() + seconds
        while True:
            model = await self.get(user, target)
            if model is None or model["status"] != "stopping" or time.monotonic() >= deadline:
                return model
            await asyncio.sleep(STOP_POLL_SECONDS)

    async def resolve(self, view: UserView, tail: str) -> Target:
        """The pinned target of a link by ref: the first reading of the path (shortest
        namespace first) whose ref the provider resolves in a project the caller may see."""
        refs = ref_candidates(tail)
        if not refs:
            raise BadRequest(
                "Expected <namespace>/<project>/<branch, tag or commit sha>[/<notebook path>].",
                code="invalid_path",
            )
        for ref in refs:
            pinned = await self.pin(view, ref)
            if pinned is not None:
                return pinned
        # nothing resolved: explain it for the first reading whose project the caller sees
        for ref in refs:
            if await self.access.level(view.caller, ref, fresh=False) is None:
                continue
            if looks_like_file(ref.ref):
                raise BadRequest(DOTDOT_REMOVED, code="invalid_notebook")
            hint = ""
            if looks_like_file(ref.notebook.rsplit("/", 1)[-1]):
                hint = (
                    " If the link had '..' after its commit, the '..' removed the commit: a "
                    "notebook path must stay inside the repository."
                )
            raise NotFound(
                f"{ref.full_path} has no branch, tag or commit named {ref.ref!r}. Check the "
                f"link, or use the full commit sha.{hint}",
                code="ref_not_found",
            )
        raise NotFound(
            f"No project you can see has a branch, tag or commit named {refs[0].ref!r} at "
            "this address. Check the link.",
            code="ref_not_found",
        )

    async def pin(self, view: UserView, ref: Ref) -> Target | None:
        """The ref's commit in a project the caller may see; None: no such ref (or project)."""
        sha = await self.provider.resolve_ref(view.caller, ref)
        if sha is None:
            return None
        pinned = ref.at(sha)
        try:
            await self.access.check(view.caller, pinned)
        except NotFound:
            return None  # a project hidden from the caller looks like one without the ref
        return pinned

    async def preflight(self, view: UserView, target: Target) -> tuple[str | None, str | None]:
        """Everything a launch checks before the hub hears of it: access (fresh), the commit,
        the notebook at that commit, and the commit's image and pipeline. The questions go
        out at once (one GitLab round trip of time); the answers are judged in that order,
        so an access refusal wins and nobody learns about projects they cannot see.
        Returns the image candidate and the newest pipeline's status."""
        checked, exists, candidate, pipeline = await asyncio.gather(
            self.access.check_launch(view.caller, target),
            self.provider.file_exists(view.caller, target),
            self.provider.commit_image(view.caller, target),
            self.provider.pipeline_status(view.caller, target),
            return_exceptions=True,
        )
        for answer in (checked, exists):
            if isinstance(answer, BaseException):
                raise answer
        if isinstance(candidate, BaseException):
            raise candidate
        if isinstance(pipeline, BaseException):
            raise pipeline
        if not exists:
            raise NotFound(
                f"There is no file {target.notebook} at commit {target.commit_sha[:7]} of "
                f"{target.full_path}. Check the notebook path in the link.",
                code="notebook_not_found",
            )
        return candidate, pipeline

    async def image_status(self, view: UserView, target: Target) -> tuple[str, str | None]:
        """The commit's image status now, and its newest pipeline's status (for waiting)."""
        candidate, pipeline = await asyncio.gather(
            self.provider.commit_image(view.caller, target),
            self.provider.pipeline_status(view.caller, target),
        )
        return launch.image_status(candidate, pipeline), pipeline

    async def logs(self, view: UserView, target: Target, lines: int) -> list[str]:
        """The tail of the caller's own server's log (clone step, then the server)."""
        if view.find(target) is None:
            raise NotFound("You have no server for this commit.", code="server_not_found")
        found = await self.tail(
            view.name, target, lines, view.caller.git_token, view.pod(target)
        )
        return found or []

    # --- acting ---------------------------------------------------------------------

    async def launch(
        self, view: UserView, target: Target, choices: dict[str, Any]
    ) -> tuple[int, ServerModel]:
        """201 started, 202 starting, 200 already there; never a second server."""
        return await _counted(
            metrics.LAUNCHES, LAUNCH_OUTCOMES, self._launch(view, target, choices), timed=True
        )

    async def stop(
        self, view: UserView, target: Target, *, force: bool = False
    ) -> tuple[int, ServerModel | None]:
        """Autosave (unless `force`), then stop and remove; 204 once gone, 202 if still
        stopping after the stop timeout; AutosaveFailed (409) leaves the server running."""
        return await _counted(metrics.STOPS, STOP_OUTCOMES, self._stop(view, target, force))

    async def unsaved(self, view: UserView) -> dict[str, dict[str, Any] | None]:
        """What a stop would autosave, per running server (for the Stop button): the
        spawner's answer (`clean`, `uncommitted`, `unpushed`, `skipped`), or None when the
        spawner cannot say before its stop, or the check failed."""
        running = [m["name"] for m in view.servers if m["status"] == "running"]

        async def one(server: str) -> dict[str, Any] | None:
            try:
                return await self.hub.unsaved(view.name, server, seconds=UNSAVED_CHECK_SECONDS)
            except GlueError:
                return None

        answers = await asyncio.gather(*(one(name) for name in running))
        return dict(zip(running, answers, strict=True))

    async def _launch(
        self, view: UserView, target: Target, choices: dict[str, Any]
    ) -> tuple[int, ServerModel]:
        began = time.monotonic()
        async with self._locked(view, target) as view:
            # access (fresh), the commit, the notebook and the image go out at once, before
            # anything else: a running server is only shown to who may still launch it
            candidate, pipeline = await self.preflight(view, target)
            target = self.access.current(view.caller, target)  # a moved project's new path
            current = view.find(target)
            if current and current["status"] in ("running", "starting"):
                return 200, current
            if current and current["status"] == "stopping":
                raise Conflict(
                    "This server is stopping; launch it again in a moment.", code="server_stopping"
                )
            self.check_running_limit(view, target)
            image = launch.decide_image(self.config, target, candidate, pipeline, choices)
            request = launch.make(self.config, target, choices, image)
            options = request.user_options()
            if current and current["status"] == contracts.STATE_HIBERNATED:
                # a resume: the paused server's own launch (its image, its profile), whatever
                # this request chose; its kept workspace is reopened as it was
                options = await self.paused_options(view.name, target)
                request = launch.from_user_options(self.config, options)
            calling = time.monotonic()
            try:
                status = await self.hub.start(view.name, target.server_name, options)
            except UpstreamError as e:
                # the hub's 500 when the spawn failed before it answered (a clone that
                # failed at once): say why, if the hub holds the failed spawn
                reason = await self.failure(view.name, target) if e.status == 502 else None
                if reason is None:
                    raise
                failure = await self.explain(
                    view.name, target, reason, secret=view.caller.git_token,
                    pod=view.pod(target),
                )
                raise SpawnFailed(failure.sentence()) from None
            if status is None:  # another replica started it a moment ago: read what it did
                model = await self.get(view.name, target)
                if model is None:
                    raise NotFound(
                        "The server stopped right after it was launched.", code="server_gone"
                    )
                return 200, model
            # the two phases of a launch that run here (the hub's and the session's: glue.hub)
            spawned = time.monotonic()
            metrics.LAUNCH_PHASE_SECONDS.labels(contracts.PHASE_CHECKS).observe(calling - began)
            metrics.LAUNCH_PHASE_SECONDS.labels(contracts.PHASE_SPAWN_CALL).observe(
                spawned - calling
            )
        return status, self._started_model(view, request, status)

    async def _stop(
        self, view: UserView, target: Target, force: bool
    ) -> tuple[int, ServerModel | None]:
        async with self._locked(view, target) as view:
            current = view.find(target)
            if current is None:
                raise NotFound("You have no server for this commit.", code="server_not_found")
            # a running server autosaves first, in the hub's own stop (one save, right
            # before the stop; refused when it fails), unless the caller forces the stop
            # a paused one too: the hub mounts its kept workspace to save it
            live = current["status"] in ("running", contracts.STATE_HIBERNATED)
            saving = self.autosave_seconds if live and not force else None
            try:
                await self._hub_stop(view.name, target, saving, current["status"] == "starting")
            except HubCannotSave as e:
                raise AutosaveFailed(
                    f"{e.message} The server keeps running, so nothing is lost: stop it anyway "
                    "with force=true (its own stop still tries to autosave it, but cannot keep "
                    "it running when that fails), or ask the operators to update the hub."
                ) from None
            except AutosaveFailed as e:
                raise AutosaveFailed(
                    f"{e.message.rstrip('.')}. The server keeps running, so nothing is lost: "
                    "fix the cause (is GitLab reachable, is your login still valid?) and stop "
                    "it again, or stop it anyway with force=true, and its unsaved work is lost."
                ) from None
            except UpstreamError as e:
                why = await self.stop_failure(view.name, target) if e.status == 502 else None
                if why:
                    raise StopFailed(STOP_FAILED.format(why=why)) from None
                raise
            model = await self.wait_stopped(view.name, target, self.stop_timeout)
            if model is not None and model["status"] != "stopping":
                why = await self.stop_failure(view.name, target)
                if why:
                    raise StopFailed(STOP_FAILED.format(why=why))
        return (204, None) if model is None else (202, model)

    async def _hub_stop(
        self, user: str, target: Target, saving: float | None, starting: bool
    ) -> None:
        """The hub's stop. JupyterHub stops a starting server by cancelling its spawn and,
        a second later, stopping it; our spawner finishes the step it began, so a spawn
        still pending then is the hub's 500 (a stop clicked during a launch on a loaded
        machine). The stop of a starting server is asked again until the spawn has
        settled, within the stop timeout."""
        deadline = time.monotonic() + self.stop_timeout
        while True:
            try:
                await self.hub.stop(user, target.server_name, saving=saving)
                return
            except UpstreamError as e:
                # the hub's own 5xx only: not its 4xx answers (HubError), nor an unreachable
                # or silent hub
                pending = starting and type(e) is UpstreamError and e.code == "hub_error"
                if not pending or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(STOP_POLL_SECONDS)

    def check_running_limit(self, view: UserView, target: Target) -> None:
        """`launch.serversPerUser` counts running and starting servers only (paused ones
        count apart, glue.hub.pauseapi): one more is a 429. The hub's own limit is the
        backstop of both (glue.hub.setup)."""
        limit = self.config["launch"]["serversPerUser"]
        live = [
            m for m in view.servers
            if m["status"] in ("running", "starting") and m["name"] != target.server_name
        ]
        if len(live) >= limit:
            raise TooManyServers(
                f"You already run {limit} servers, the most allowed; stop or pause one to "
                "launch another."
            )

    async def paused_options(self, user: str, target: Target) -> dict[str, Any]:
        """The launch options the paused server was started with, as the hub keeps them."""
        model = await self.hub.servers(user)
        server = (model.get("servers") or {}).get(target.server_name) or {}
        stored = server.get("user_options") or {}
        return {k: v for k, v in stored.items() if k in contracts.USER_OPTIONS}

    async def set_state(
        self, view: UserView, target: Target, state: str
    ) -> tuple[int, ServerModel]:
        """PATCH of a server's `state`: `hibernated` pauses a running one (200 with its
        model), `running` resumes a paused one (as its launch: 201 running, 202 starting).
        Anything else is refused with a 4xx that says why."""
        if state not in (contracts.STATE_HIBERNATED, contracts.STATE_RUNNING):
            raise BadRequest(
                "`state` must be \"hibernated\" (pause) or \"running\" (resume).",
                code="invalid_state",
            )
        current = view.find(target)
        if current is None:
            raise NotFound("You have no server for this commit.", code="server_not_found")
        status = current["status"]
        if state == contracts.STATE_RUNNING:
            if status != contracts.STATE_HIBERNATED:
                raise Conflict(
                    f"This server is {status}, not paused: only a paused server resumes.",
                    code="not_hibernated",
                )
            return await self.launch(view, target, {})
        if status == contracts.STATE_HIBERNATED:
            raise Conflict("This server is paused already.", code="already_hibernated")
        if status != "running":
            raise Conflict(
                f"This server is {status}; only a running server can be paused.",
                code="server_starting" if status == "starting" else "not_running",
            )
        async with self._locked(view, target) as view:
            await self.hub.pause(view.name, target.server_name)
        model = await self.get(view.name, target)
        if model is None:
            raise NotFound("The server was removed while it paused.", code="server_gone")
        return 200, model

    async def stop_failure(self, user: str, target: Target) -> str | None:
        """Why the hub keeps a server whose stop failed, as its spawner wrote it into the
        server's user_options (glue.hub.kubespawner: a pod that could not be deleted); None
        otherwise."""
        model = await self.hub.servers(user)
        server = (model.get("servers") or {}).get(target.server_name) or {}
        why = (server.get("user_options") or {}).get(contracts.STOP_FAILED)
        return why if isinstance(why, str) and why else None

    @contextlib.asynccontextmanager
    async def _locked(self, view: UserView, target: Target) -> AsyncIterator[UserView]:
        """Hold the server's lock; a request that had to wait for it reads the user again,
        since the one before it has just launched or stopped that very server."""
        key = (view.name, target.server_name)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        waited = lock.locked()
        async with lock:
            yield await self.view(view.name) if waited else view

    def _started_model(self, view: UserView, request: Launch, status: int) -> ServerModel:
        """The model of a server the hub just accepted, as the hub's next read will show it."""
        now = _now()
        hub_server = {
            "name": request.target.server_name,
            "ready": status == 201,
            "pending": None if status == 201 else "spawn",
            # the hub's own URL scheme for a named server (User.server_url)
            "url": f"{view.url}{request.target.server_name}/",
            "started": now,
            "last_activity": now,
            "user_options": request.user_options(),
        }
        model = server_model(hub_server, self.config["culling"]["idleSeconds"])
        assert model is not None  # our own user_options always name the commit
        return model


async def _counted(
    counter: Any, outcomes: dict[int, str], action: Awaitable[Result], *, timed: bool = False
) -> Result:
    """Run a launch or a stop and count its outcome (the status' name, or the error's code)."""
    started = time.monotonic()
    status = 500
    try:
        result = await action
        status = result[0]
        counter.labels(outcomes.get(status, str(status))).inc()
        return result
    except GlueError as e:
        status = e.status
        counter.labels(e.code).inc()
        raise
    finally:
        if timed:
            metrics.LAUNCH_SECONDS.labels(metrics.result(status)).observe(
                time.monotonic() - started
            )

