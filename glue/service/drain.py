"""`python -m glue.service.drain`: stop every user server through the hub's saving stop.

The chart's pre-delete hook (templates/uninstall-hook.yaml) runs it from the glue's
image before `helm uninstall` removes the hub and the glue: a user pod left behind
would outlive both, and its own `preStop` autosave needs the glue (gone) to refresh an
expired GitLab token, so its work could be lost. Through the hub's saving DELETE
(glue.hub.autosaveapi) each server is autosaved first and stopped only when that
worked; one whose autosave fails keeps running. Then each paused server (glue.hub.pauseapi:
stopped, its workspace kept, on Kubernetes in a claim that would outlive the release) is
removed the same way, its autosave first (on Kubernetes the one its pause made). It reports
every server, and exits 1 while any could not be saved, stopped or removed: the hook fails,
and the uninstall stops with everything still there (docs/kubernetes.rst says what then).

Its token (JUPYTERHUB_API_TOKEN) is the `<service>-drain` hub service's, with
`list:users`, `read:servers` and `delete:servers` (glue.hub.kubesetup.DRAIN_SCOPES);
the hub API's address is JUPYTERHUB_API_URL, as for the glue.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from glue.core.contracts import HIBERNATED_AT, SAVING_API
from glue.core.errors import GlueError
from glue.service.hubapi import Hub

log = logging.getLogger(__name__)

PAGE = 200  # users a list request asks for
ROUND_PAUSE = 2.0  # seconds between two looks at what still runs


@dataclass
class Report:
    """What became of each server: stopped (after its autosave), or why not."""

    stopped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    # paused servers: removed after their autosave, or why not (they stay paused)
    removed: list[str] = field(default_factory=list)
    kept_paused: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.kept_paused

    def lines(self) -> list[str]:
        out = [f"saved and stopped: {name}" for name in self.stopped]
        out += [f"NOT SAVED, still running: {name}: {why}" for name, why in self.failed.items()]
        out += [f"saved and removed, was paused: {name}" for name in self.removed]
        out += [f"NOT SAVED, still paused: {name}: {why}" for name, why in self.kept_paused.items()]
        kept = f"{len(self.failed)} could not be saved" if self.failed else "none left running"
        out.append(f"{len(self.stopped)} server(s) saved and stopped, {kept}.")
        kept = f"{len(self.kept_paused)} could not be saved" if self.kept_paused else "none left"
        out.append(f"{len(self.removed)} paused server(s) saved and removed, {kept}.")
        return out


async def listed_servers(hub: Hub, **params: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every user's servers that the hub's user list gives with `params`, under the saving
    API (the hub's own list handler, glue.hub.autosaveapi), page by page."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    offset = 0
    while True:
        _, users = await hub.request(
            "GET",
            f"{SAVING_API}/users",
            params={**params, "offset": str(offset), "limit": str(PAGE)},
            ok=(200,),
        )
        users = users or []
        for user in users:
            for name, server in (user.get("servers") or {}).items():
                found[(user["name"], name)] = server
        if len(users) < PAGE:
            return found
        offset += len(users)


async def active_servers(hub: Hub) -> dict[tuple[str, str], dict[str, Any]]:
    """Every user's active servers (running, starting or stopping)."""
    return await listed_servers(hub, state="active")


async def paused_servers(hub: Hub) -> list[tuple[str, str]]:
    """Every user's paused servers: stopped, with the pause in their user_options."""
    listed = await listed_servers(hub, include_stopped_servers="1")
    return [
        key
        for key, server in listed.items()
        if server.get("stopped") and (server.get("user_options") or {}).get(HIBERNATED_AT)
    ]


def label(user: str, server: str) -> str:
    return f"{user}/{server}" if server else user


async def drain(hub: Hub, *, save_seconds: float, deadline_seconds: float) -> Report:
    """Stop every active server, then remove every paused one, each through the saving
    stop (autosave first)."""
    report = Report()
    deadline = time.monotonic() + deadline_seconds
    limit = asyncio.Semaphore(4)
    await stop_active(hub, report, limit, save_seconds=save_seconds, deadline=deadline)

    async def remove(user: str, server: str) -> None:
        why = await saving_stop(hub, limit, user, server, save_seconds)
        if why is None:
            report.removed.append(label(user, server))
            log.info("%s: saved and removed (it was paused)", label(user, server))
        else:
            report.kept_paused[label(user, server)] = why
            log.warning("%s: not saved, still paused: %s", label(user, server), why)

    await asyncio.gather(*(remove(user, server) for user, server in await paused_servers(hub)))
    return report


async def saving_stop(
    hub: Hub, limit: asyncio.Semaphore, user: str, server: str, save_seconds: float
) -> str | None:
    """The hub's saving stop and removal of one server: None when done, else why not (its
    autosave failed, 409, or the hub failed)."""
    async with limit:
        try:
            await hub.stop(user, server, saving=save_seconds)
        except GlueError as e:
            return e.message
    return None


async def stop_active(
    hub: Hub, report: Report, limit: asyncio.Semaphore, *, save_seconds: float, deadline: float
) -> None:
    """Stop every active server through the saving stop, in rounds until none runs, every one
    left has failed its autosave, or the deadline passes (a server still starting or
    stopping then is reported too)."""

    async def stop(user: str, server: str) -> None:
        why = await saving_stop(hub, limit, user, server, save_seconds)
        if why is None:
            if label(user, server) not in report.stopped:
                report.stopped.append(label(user, server))
            log.info("%s: saved and stopped", label(user, server))
        else:
            report.failed[label(user, server)] = why
            log.warning("%s: not saved, still running: %s", label(user, server), why)

    while True:
        servers = await active_servers(hub)
        left = {key: s for key, s in servers.items() if label(*key) not in report.failed}
        if not left:
            return
        if time.monotonic() > deadline:  # also while users keep launching meanwhile
            for key, s in left.items():
                if label(*key) not in report.stopped or s.get("ready"):
                    state = s.get("pending") or ("running" if s.get("ready") else "starting")
                    report.failed[label(*key)] = f"still {state} at the deadline"
            return
        ready = [key for key, s in left.items() if s.get("ready") and not s.get("pending")]
        if ready:
            await asyncio.gather(*(stop(user, server) for user, server in ready))
        else:
            await asyncio.sleep(ROUND_PAUSE)  # starting or stopping: look again


async def run(api_url: str, token: str, *, save_seconds: float, deadline_seconds: float) -> Report:
    hub = Hub(api_url, token, timeout=save_seconds + 30)
    try:
        return await drain(hub, save_seconds=save_seconds, deadline_seconds=deadline_seconds)
    finally:
        await hub.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Stop every user server through the hub's saving stop (autosave first)."
    )
    parser.add_argument(
        "--save-seconds", type=float, default=300, help="one server's autosave and stop"
    )
    parser.add_argument(
        "--deadline-seconds", type=float, default=880, help="the whole run, at most"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    api_url, token = os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
    if not api_url or not token:
        print("drain: set JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(
            run(
                api_url,
                token,
                save_seconds=args.save_seconds,
                deadline_seconds=args.deadline_seconds,
            )
        )
    except GlueError as e:
        print(f"drain: the hub failed ({e.message}); servers may still run", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line, flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
