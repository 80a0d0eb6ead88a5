"""The hub's way to a pod's workspace: the git-proxy sidecar's autosave control listener.

A stop through the glue or the culler autosaves first and is refused when
that fails; the hub's spawner asks for the autosave (glue.hub.autosaveapi). The
session's git component (glue/session/gitproxy.py) listens on the pod's loopback,
which the hub cannot reach, so the sidecar also listens on the pod's IP, on
a port of its own (`glue.core.contracts.CONTROL_PORT`, which the chart's NetworkPolicy
opens to the hub pod only), for exactly:

    GET  /autosave   what a save would push: the `status` step
    POST /autosave   save now: the `save` step, as the pod's preStop runs it
    GET  /usage      `{"used_bytes": n}`: what the workspace claim holds, against
                     the profile's disk (the hub's disk watch, and the disk a
                     paused server holds; read at most every 30 s)

Answers: 200 with the step's JSON; 409 `{"error": "autosave_failed",
"message"}` with the step's reason; 401 without and 403 with a wrong
`Authorization: Bearer <control secret>`; 404 and 405 for anything else. The
control secret is made by the spawner for each pod, kept in its state, and
reaches the sidecar through the pod's own Secret (never the notebook
container); the session's git secret, which the notebook holds, is not it.
One step runs at a time.

It runs in the sidecar's one process, beside the component (`-- <gitproxy
arguments>`): a container runs one command, so a second process would need a
supervisor, and a third container another interpreter and another mount of
the Secret. Both listeners stop together at SIGTERM, which comes after the
preStop.

    python -m glue.session.autosavecontrol --listen HOST:PORT --secret-file FILE
        --workspace DIR --launched SHA --remote URL --branch B
        --max-file-bytes N --timeout SECONDS [--name NAME --email EMAIL]
        -- <glue.session.gitproxy arguments>

No hub imports: it runs in the glue image. Its log holds no secret.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from glue.core import logsafe
from glue.session import autosave, gitproxy
from glue.session.steprunner import StepFailed, run_step
from glue.session.steps import Step

log = logging.getLogger("glue.session.autosavecontrol")

PATH = "/autosave"
USAGE_PATH = "/usage"
USAGE_CACHE_SECONDS = 30


def used_bytes(root: Path) -> int:
    """The disk the files under `root` take (their blocks, as a filesystem fills, not their
    sizes), symlinks not followed."""
    total = 0
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):  # gone meanwhile
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


@dataclass(frozen=True)
class Settings:
    """The one workspace this listener saves, and the secret the hub presents."""

    secret_file: Path
    workspace: str
    launched: str
    remote: str  # the component's URL for the project, as the preStop pushes
    branch: str
    max_file_bytes: int
    timeout: float
    # the user's name and GitLab commit email, whom the autosave commit is by (push rules)
    identity: tuple[str, str] | None = None


def step(settings: Settings, listen: str, proxy: Step, *, python: str = "python") -> Step:
    """The sidecar's command line: this listener, and after `--` the component's arguments
    (`proxy`, from gitproxy.step); files, never secrets, in it."""
    argv = [python, "-m", "glue.session.autosavecontrol", "--listen", listen]
    for flag, value in (
        ("--secret-file", settings.secret_file),
        ("--workspace", settings.workspace),
        ("--launched", settings.launched),
        ("--remote", settings.remote),
        ("--branch", settings.branch),
        ("--max-file-bytes", settings.max_file_bytes),
        ("--timeout", int(settings.timeout)),
    ):
        argv += [flag, str(value)]
    if settings.identity and all(settings.identity):
        argv += ["--name", settings.identity[0], "--email", settings.identity[1]]
    return Step([*argv, "--", *proxy.argv[3:]], proxy.env)


def answer(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


class Control:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._one_at_a_time = asyncio.Lock()
        self._usage: tuple[float, int] | None = None  # (when, bytes)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024)
        app.router.add_route("GET", PATH, self.handle)
        app.router.add_route("POST", PATH, self.handle)
        app.router.add_route("GET", USAGE_PATH, self.usage)
        return app

    async def usage(self, request: web.Request) -> web.Response:
        """What the workspace's volume holds (the checkout's parent: the volume the sidecar
        mounts), measured at most every USAGE_CACHE_SECONDS: a walk costs a big workspace."""
        refused = self._authorized(request)
        if refused:
            code = "unauthorized" if refused == 401 else "forbidden"
            return answer(refused, code, "Only the hub, with this pod's control secret, may ask.")
        now = time.monotonic()
        if self._usage is None or now - self._usage[0] > USAGE_CACHE_SECONDS:
            root = Path(self.settings.workspace).parent
            self._usage = (now, await asyncio.to_thread(used_bytes, root))
        return web.json_response({"used_bytes": self._usage[1]})

    def _authorized(self, request: web.Request) -> int:
        """0 when the hub's control secret came; else 401 (none) or 403 (another)."""
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return 401
        secret = self.settings.secret_file.read_text().strip()
        ok = bool(secret) and secrets.compare_digest(given.strip().encode(), secret.encode())
        return 0 if ok else 403

    async def handle(self, request: web.Request) -> web.Response:
        refused = self._authorized(request)
        if refused:
            log.info("refused %s %s: %s", request.method, request.path, refused)
            code = "unauthorized" if refused == 401 else "forbidden"
            return answer(refused, code, "Only the hub, with this pod's control secret, may ask.")
        action = "save" if request.method == "POST" else "status"
        async with self._one_at_a_time:
            try:
                out = await run_step(*self.command(action), self.settings.timeout, "The autosave")
                body = json.loads(out.strip().splitlines()[-1])
            except StepFailed as e:
                log.warning("%s failed: %s", action, e)
                return answer(409, "autosave_failed", str(e))
            except (ValueError, IndexError):
                return answer(409, "autosave_failed", f"The autosave's {action} said nothing.")
        log.info("%s: %s", action, "pushed" if body.get("pushed") else "nothing pushed")
        return web.json_response(body)

    def command(self, action: str) -> tuple[list[str], dict[str, str]]:
        """The step as the preStop runs it, with the sidecar's environment (the component's
        secret as the push's password)."""
        s = self.settings
        argv, env = autosave.step(
            action,
            workspace=s.workspace,
            launched=s.launched,
            remote=s.remote if action == "save" else None,
            branch=s.branch if action == "save" else None,
            max_file_bytes=s.max_file_bytes,
            python=sys.executable,
            identity=s.identity if action == "save" else None,
        )
        return argv, {**os.environ, **env}


def parse(argv: list[str] | None) -> tuple[Settings, str, int, list[str]]:
    own, proxy = argv if argv is not None else sys.argv[1:], []
    if "--" in own:
        at = own.index("--")
        own, proxy = own[:at], own[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, type=gitproxy.listen_address)
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--launched", required=True)
    parser.add_argument("--remote", required=True)
    parser.add_argument("--branch", required=True)
    parser.add_argument("--max-file-bytes", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--name", help="the autosave commit's author and committer")
    parser.add_argument("--email", help="their email (their GitLab commit_email)")
    args = parser.parse_args(own)
    if not proxy:
        parser.error("give the component's arguments after --")
    host, port = args.listen
    settings = Settings(
        secret_file=args.secret_file,
        workspace=args.workspace,
        launched=args.launched,
        remote=args.remote,
        branch=args.branch,
        max_file_bytes=args.max_file_bytes,
        timeout=args.timeout,
        identity=(args.name, args.email) if args.name and args.email else None,
    )
    return settings, host, port, proxy


def main(argv: list[str] | None = None) -> int:
    settings, host, port, proxy_argv = parse(argv)
    proxy, proxy_host, proxy_port = gitproxy.parse(proxy_argv)
    logsafe.install()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sidecar %(message)s")
    log.info("autosave control on http://%s:%s", host, port)
    beside = [(Control(settings).app(), host, port)]
    asyncio.run(gitproxy.serve(proxy, proxy_host, proxy_port, beside))
    return 0


if __name__ == "__main__":
    sys.exit(main())
