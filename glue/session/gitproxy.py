"""The session's git token component: git smart HTTP for exactly one project.

The user's server must push and pull without ever holding the user's GitLab
token. Its git talks to this component instead, at
`http://127.0.0.1:PORT/<namespace>/<project>.git`, with a per-server secret
as its password (read by the session's credential helper from a file in its
private home). The component checks that secret and forwards the request to
GitLab with the token added (`Authorization: Basic oauth2:<token>`), the token
read from its file at each request, so a refreshed file is used. Bodies are
streamed both ways (pushes can be 50 MB and more).

It refuses everything else (another project, another host, other paths) with
a 403 and a one-line text/plain message, which git shows the user. When
GitLab answers 401 it asks the glue for a fresh token once (`POST
<prefix>-/git-token`, see glue/service/gittoken.py; only the hub refreshes GitLab
logins, since GitLab rotates refresh tokens) and retries a replayable request
(`GET info/refs`); a POST is not buffered to be replayed, its 401 goes back
to git, which retries with the fresh token.

With the local provider (bare repositories on disk) there is no upstream: the
component serves the project's bare repository itself through
`git http-backend`, so sessions push the same way in both modes.

It checks the refs a push updates, not only its path (`Refs`): before anything
is forwarded it reads the push's ref-update commands (the pack that follows is
streamed on untouched) and refuses the whole push when one of them writes an
autosave branch that is not this user's own (`<prefix>/<user>/<sha>`, see
glue/session/autosave.py), or, with the local provider, deletes the default branch,
deletes or moves a tag, or names a ref outside `refs/heads/` and
`refs/tags/`. A non-fast-forward push of the default branch is refused too:
here when its new commit is already known, else by a pre-receive hook that
checks the ancestry once the pack is in (`PRE_RECEIVE`). The refusal is
receive-pack's own report (`ng <ref> <reason>` for every ref, nothing
applied), so the user's git prints `! [remote rejected] <ref> (<reason>)`.

It also signs autosave commits (`POST <project>.git/renku-autosave/sign`,
authenticated like a push): with the key of its own server's autosave branch
(`--signing-key-file`, from glue.session.autosave.branch_key), for that branch only,
never one the caller names. The restore checks those signatures.

    python -m glue.session.gitproxy --listen 127.0.0.1:PORT --project NS/PROJECT
        --secret-file FILE --autosave-prefix PREFIX
        [--autosave-branch B --signing-key-file FILE]
        (--upstream URL --token-file FILE [--token-endpoint URL --key-file FILE
         --hub-token-file FILE --user NAME --server NAME] | --repo BARE_REPO)

No hub imports: it runs in the glue image as a sidecar, and beside the
sandbox in the embedded default. Its log never holds a token or the secret.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import aiohttp
from aiohttp import web

from glue.core import contracts, logsafe
from glue.core.contracts import LISTEN_FD_ENV
from glue.session import autosave
from glue.session.steps import Step

log = logging.getLogger("glue.session.gitproxy")

SERVICES = ("git-upload-pack", "git-receive-pack")
CHUNK = 256 * 1024
REQUEST_HEADERS = ("Content-Type", "Content-Encoding", "Accept", "Git-Protocol", "User-Agent")
RESPONSE_HEADERS = ("Content-Type", "Content-Encoding", "Cache-Control", "Expires", "Pragma")
REALM = 'Basic realm="renku-notebooks git"'
TOKEN_TIMEOUT = aiohttp.ClientTimeout(total=30)
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600)
RECEIVE_PACK = "git-receive-pack"
MAX_COMMANDS_BYTES = 4 * 1024 * 1024  # the ref-update section of one push, pack excluded
MAX_SIGN_BODY = 4096
ZERO_ID = re.compile(r"0{40}|0{64}")
# the reasons a refused push gives, one sentence each (git prints them in parentheses)
NOT_OWN_AUTOSAVE = "autosave branches of other users are theirs alone"
NOT_AUTOSAVE_NAME = "only the autosave writes autosave branches, named <prefix>/<user>/<commit>"
OTHER_REF = "only branches (refs/heads/) and tags (refs/tags/) may be pushed here"
DEFAULT_DELETED = "the default branch may not be deleted"
NOT_FAST_FORWARD = "the default branch only moves forward (no force-push)"
TAG_DELETED = "tags may not be deleted"
TAG_MOVED = "an existing tag may not be moved"
NOT_APPLIED = "atomic push failed: another ref of this push was refused"
# the local provider's non-fast-forward check, for new commits the pack brings: receive-pack
# runs it with the pushed objects in quarantine, and refuses the whole push when it fails
PRE_RECEIVE = """#!/bin/sh
lines=$(cat)
status=0
while read -r old new ref; do
  [ "$ref" = "$RENKU_DEFAULT_REF" ] || continue
  case "$old" in *[!0]*) ;; *) continue ;; esac
  case "$new" in *[!0]*) ;; *) continue ;; esac
  if ! git merge-base --is-ancestor "$old" "$new" 2>/dev/null; then
    echo "renku-notebooks: $ref: $RENKU_REASON" >&2
    status=1
  fi
done <<LINES
$lines
LINES
[ "$status" = 0 ] || exit "$status"
own="$RENKU_REPO_HOOKS/pre-receive"
if [ -x "$own" ]; then
  printf '%s\\n' "$lines" | "$own"
  exit $?
fi
exit 0
"""


@dataclass(frozen=True)
class Settings:
    """What one component serves, and how it authenticates both ways."""

    project: str  # namespace/project, as GitLab names it
    secret_file: Path
    upstream: str | None = None  # GitLab's base URL; None: serve `repo`
    token_file: Path | None = None
    repo: Path | None = None
    token_endpoint: str | None = None  # the glue's `-/git-token`
    key_file: Path | None = None  # the component key the glue checks
    hub_token_file: Path | None = None  # the server's hub token: the hub refreshes on its use
    user: str = ""
    server: str = ""
    autosave_prefix: str = ""  # the autosave branches' prefix: only `user`'s own are written
    autosave_branch: str = ""  # this server's own autosave branch: what `sign` signs for
    signing_key_file: Path | None = None  # its key (autosave.branch_key)


def step(settings: Settings, *, listen: str, python: str = "python") -> Step:
    """The component's command line, as the local spawner and the sidecar run it: files,
    never secrets, in its arguments."""
    argv = [python, "-m", "glue.session.gitproxy", "--listen", listen]
    argv += ["--project", settings.project]
    argv += ["--secret-file", str(settings.secret_file)]
    for flag, value in (
        ("--upstream", settings.upstream),
        ("--token-file", settings.token_file),
        ("--repo", settings.repo),
        ("--token-endpoint", settings.token_endpoint),
        ("--key-file", settings.key_file),
        ("--hub-token-file", settings.hub_token_file),
        ("--user", settings.user or None),
        ("--server", settings.server or None),
        ("--autosave-prefix", settings.autosave_prefix or None),
        ("--autosave-branch", settings.autosave_branch or None),
        ("--signing-key-file", settings.signing_key_file),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return Step(argv, {})


def _read(path: Path | None) -> str:
    return path.read_text().strip() if path else ""


class Tokens:
    """The GitLab token: the file's, unless the glue gave a fresher one since the file last
    changed (a Kubernetes Secret volume is read-only and not updated by the hub)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._fresh: tuple[str, str] | None = None  # (file content then, fresh token)
        self._lock = asyncio.Lock()

    def current(self) -> str:
        on_file = _read(self.settings.token_file)
        if self._fresh and self._fresh[0] == on_file:
            return self._fresh[1]
        return on_file

    async def refresh(self, session: aiohttp.ClientSession, stale: str) -> bool:
        """Ask the glue for a fresh token once; True when one came that differs from `stale`."""
        s = self.settings
        if not (s.token_endpoint and s.key_file and s.hub_token_file):
            return False
        async with self._lock:
            if self.current() != stale:
                return True  # another request refreshed it meanwhile
            body = {"user": s.user, "server": s.server, "hub_token": _read(s.hub_token_file)}
            headers = {"Authorization": f"Bearer {_read(s.key_file)}"}
            try:
                async with session.post(
                    s.token_endpoint, json=body, headers=headers, timeout=TOKEN_TIMEOUT
                ) as response:
                    answer = await response.json(content_type=None)
                    if response.status != 200:
                        log.warning("fresh token refused: %s %s", response.status, _code(answer))
                        return False
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                log.warning("fresh token not fetched: %s", type(e).__name__)
                return False
            token = answer.get("access_token") if isinstance(answer, dict) else None
            if not isinstance(token, str) or not token:
                return False
            self._fresh = (_read(s.token_file), token)
            log.info("fresh token from the glue")
            return token != stale


def _code(answer: object) -> str:
    return str(answer.get("error", "")) if isinstance(answer, dict) else ""


def refusal(status: int, message: str, **headers: str) -> web.Response:
    """One line of text/plain: git prints it to the user as `remote: <message>`."""
    return web.Response(status=status, text=message + "\n", headers=headers)


def json_refusal(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


# --- a push's ref updates -------------------------------------------------------------------


class Command(NamedTuple):
    """One ref update of a push: `<old> <new> <ref>`."""

    old: str
    new: str
    ref: str


class Update(NamedTuple):
    """The ref-update section of a push, and its bytes exactly as read (forwarded first)."""

    commands: list[Command]
    capabilities: frozenset[str]
    raw: bytes


def pkt_line(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode() + data


async def read_update(content: aiohttp.StreamReader) -> Update:
    """The commands up to the first flush: `shallow <id>` lines, then `<old> <new> <ref>`,
    the first with `\\0<capabilities>`. ValueError for anything else (a push certificate
    too: nothing the session's git sends, so nothing to pass unchecked)."""
    raw = bytearray()
    commands: list[Command] = []
    capabilities: frozenset[str] = frozenset()
    while True:
        try:
            head = await content.readexactly(4)
        except asyncio.IncompleteReadError as e:
            if not raw and not e.partial:
                return Update([], frozenset(), b"")  # an empty body
            raise ValueError("the push ended within its commands") from None
        raw += head
        length = int(head, 16)
        if length == 0:
            return Update(commands, capabilities, bytes(raw))
        if length < 5 or len(raw) + length > MAX_COMMANDS_BYTES:
            raise ValueError("a push's commands of a size git never sends")
        try:
            data = await content.readexactly(length - 4)
        except asyncio.IncompleteReadError:
            raise ValueError("the push ended within its commands") from None
        raw += data
        line = data.removesuffix(b"\n")
        if not commands and b"\0" in line:
            line, _, caps = line.partition(b"\0")
            capabilities = frozenset(caps.decode("ascii").split())
        parts = line.decode("utf-8").split(" ")
        if not commands and len(parts) == 2 and parts[0] == "shallow":
            continue
        if len(parts) != 3 or not all(autosave.OBJECT_ID.fullmatch(p) for p in parts[:2]):
            raise ValueError("not a ref update")
        commands.append(Command(*parts))


def report(update: Update, reasons: dict[str, str]) -> bytes:
    """receive-pack's report-status, nothing applied: `ng <ref> <reason>` for every command
    (the good ones too), in side-band 1 when the client asked for it."""
    lines = [pkt_line(b"unpack ok\n")]
    for command in update.commands:
        reason = reasons.get(command.ref, NOT_APPLIED)
        lines.append(pkt_line(f"ng {command.ref} {reason}\n".encode()))
    status = b"".join(lines) + b"0000"
    caps = update.capabilities
    if not caps & {"side-band-64k", "side-band"}:
        return status
    size = (65520 if "side-band-64k" in caps else 1000) - 5
    bands = [pkt_line(b"\x01" + status[i : i + size]) for i in range(0, len(status), size)]
    return b"".join(bands) + b"0000"


class Refs:
    """Which ref updates a session's push may make (see the module's docstring)."""

    def __init__(self, settings: Settings):
        prefix = settings.autosave_prefix.strip("/")
        self.autosave = f"refs/heads/{prefix}"
        self.own_prefix = "refs/heads/" + contracts.autosave_user_prefix(prefix, settings.user)
        self.own = re.compile(re.escape(self.own_prefix) + contracts.SHA.pattern)
        self.repo = settings.repo

    async def refusals(self, commands: list[Command]) -> dict[str, str]:
        """Each refused ref with its reason; empty when the push may go on."""
        reasons = {}
        default = await self.default_branch()
        for command in commands:
            reason = self._autosave_reason(command.ref)
            if reason is None and self.repo is not None:
                reason = await self._local_reason(command, default)
            if reason is not None:
                reasons[command.ref] = reason
        return reasons

    def _autosave_reason(self, ref: str) -> str | None:
        if ref != self.autosave and not ref.startswith(self.autosave + "/"):
            return None
        if self.own.fullmatch(ref):
            return None
        return NOT_AUTOSAVE_NAME if ref.startswith(self.own_prefix) else NOT_OWN_AUTOSAVE

    async def _local_reason(self, command: Command, default: str) -> str | None:
        """The local provider has no protected branches of GitLab's: these are its rules."""
        ref, new = command.ref, command.new
        deleting = bool(ZERO_ID.fullmatch(new))
        if not ref.startswith(("refs/heads/", "refs/tags/")):
            return OTHER_REF
        if ref == default:
            if deleting:
                return DEFAULT_DELETED
            current = await self._git("rev-parse", "-q", "--verify", f"{ref}^{{commit}}")
            known = await self._git("rev-parse", "-q", "--verify", f"{new}^{{commit}}")
            # a new commit the pack brings is checked by PRE_RECEIVE once it is in
            if current and known and not await self._ancestor(current, new):
                return NOT_FAST_FORWARD
        if ref.startswith("refs/tags/"):
            current = await self._git("rev-parse", "-q", "--verify", ref)
            if (current or not ZERO_ID.fullmatch(command.old)) and new != current:
                return TAG_DELETED if deleting else TAG_MOVED
        return None

    async def default_branch(self) -> str:
        """The local repository's default branch (`refs/heads/main`); "" with GitLab."""
        return await self._git("symbolic-ref", "-q", "HEAD") if self.repo else ""

    async def _ancestor(self, old: str, new: str) -> bool:
        return await self._run("merge-base", "--is-ancestor", old, new) == 0

    async def _git(self, *args: str) -> str:
        out: list[str] = []
        await self._run(*args, out=out)
        return out[0] if out else ""

    async def _run(self, *args: str, out: list[str] | None = None) -> int:
        assert self.repo is not None
        proc = await asyncio.create_subprocess_exec(
            "git",
            f"--git-dir={self.repo}",
            *args,
            env=_git_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        stdout, _ = await proc.communicate()
        if out is not None and proc.returncode == 0:
            out.append(stdout.decode(errors="replace").strip())
        return proc.returncode or 0


def _hooks(home: Path, repo: Path) -> Path:
    """A hooks directory with our pre-receive, which then runs the repository's own; its other
    hooks linked as they are (the operator's hooks keep working)."""
    hooks = home / "hooks"
    hooks.mkdir()
    own = repo / "hooks"
    if own.is_dir():
        for hook in own.iterdir():
            if hook.name != "pre-receive" and not hook.name.endswith(".sample"):
                (hooks / hook.name).symlink_to(hook)
    (hooks / "pre-receive").write_text(PRE_RECEIVE)
    (hooks / "pre-receive").chmod(0o700)
    return hooks


def _git_env(**extra: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
    return {**env, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", **extra}


class GitProxy:
    def __init__(self, settings: Settings, host: str):
        self.settings = settings
        self.host = host  # host:port the session's git uses
        self.tokens = Tokens(settings)
        self.base = f"/{settings.project}.git/"
        self.refs = Refs(settings)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # bodies pass through as git sent them (gzip stays gzip)
            self._session = aiohttp.ClientSession(auto_decompress=False)
        return self._session

    async def close(self, _: web.Application | None = None) -> None:
        if self._session is not None:
            await self._session.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{path:.*}", self.handle)
        app.on_cleanup.append(self.close)
        return app

    # --- validate -> authorize -> act ---------------------------------------------

    def _suffix(self, request: web.Request) -> str | None:
        """The git path below the project, when the request is git smart HTTP for it."""
        path = request.path
        if not request.raw_path.startswith("/") or request.host not in self._hosts():
            return None
        if path[: len(self.base)].lower() != self.base.lower():
            return None
        suffix = path[len(self.base) :]
        if request.method == "GET" and suffix == "info/refs":
            return suffix if request.query.get("service") in SERVICES else None
        if request.method == "POST" and suffix in (*SERVICES, autosave.SIGN_PATH):
            return suffix
        return None

    def _hosts(self) -> set[str]:
        port = self.host.rpartition(":")[2]
        return {self.host, f"localhost:{port}", f"127.0.0.1:{port}"}

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        secret = _read(self.settings.secret_file)
        return bool(secret) and secrets.compare_digest(password.encode(), secret.encode())

    async def handle(self, request: web.Request) -> web.StreamResponse:
        suffix = self._suffix(request)
        if suffix is None:
            log.info("refused %s %s", request.method, request.path)
            return refusal(
                403,
                f"renku-notebooks: this session's git reaches only {self.settings.project} "
                f"(http://{self.host}{self.base[:-1]}); {request.path} is refused.",
            )
        if not self._authorized(request):
            return refusal(
                401, "renku-notebooks: git credentials needed.", **{"WWW-Authenticate": REALM}
            )
        if suffix == autosave.SIGN_PATH:
            return await self._sign(request)
        head = b""
        if suffix == RECEIVE_PACK:
            checked = await self._check_push(request)
            if isinstance(checked, web.StreamResponse):
                return checked
            head = checked
        if self.settings.repo is not None:
            response = await self._serve_local(request, suffix, head)
        else:
            response = await self._forward(request, suffix, head)
        log.info("%s %s -> %s", request.method, request.path, response.status)
        return response

    async def _check_push(self, request: web.Request) -> bytes | web.StreamResponse:
        """The push's ref updates, read before anything is forwarded: their bytes to send on
        first when all may be made; else the refusal, and nothing reaches the repository."""
        if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            # git compresses fetch requests only; a push is a pack, already compressed
            return refusal(415, "renku-notebooks: a compressed push body is refused.")
        try:
            update = await read_update(request.content)
        except (ValueError, UnicodeDecodeError):
            return refusal(400, "renku-notebooks: the push's ref updates could not be read.")
        reasons = await self.refs.refusals(update.commands)
        if not reasons:
            return update.raw
        for ref, reason in reasons.items():
            log.info("push refused: %s (%s)", ref, reason)
        async for _ in request.content.iter_chunked(CHUNK):
            pass  # the pack, unread: git reads the answer only once it has sent it all
        if not update.capabilities & {"report-status", "report-status-v2"}:
            lines = [f"renku-notebooks: {ref}: {why}." for ref, why in reasons.items()]
            return refusal(403, "\n".join(lines))
        return web.Response(
            body=report(update, reasons),
            headers={
                "Content-Type": "application/x-git-receive-pack-result",
                "Cache-Control": "no-cache",
            },
        )

    async def _sign(self, request: web.Request) -> web.Response:
        """The signature of an autosave commit of this server's own branch (the branch is
        ours to decide, never the caller's): `{"tree", "parent"}` -> `{"branch", "signature"}`."""
        s = self.settings
        key = _read(s.signing_key_file)
        if not key or not s.autosave_branch:
            return json_refusal(404, "no_autosave_key", "This session's autosaves are not signed.")
        raw = await request.content.read(MAX_SIGN_BODY + 1)
        try:
            body = json.loads(raw) if len(raw) <= MAX_SIGN_BODY else None
        except ValueError:
            body = None
        fields = [body.get(k) if isinstance(body, dict) else None for k in ("tree", "parent")]
        if not all(isinstance(v, str) and autosave.OBJECT_ID.fullmatch(v) for v in fields):
            return json_refusal(
                400, "invalid_sign_request", "Send `tree` and `parent` as full object ids."
            )
        tree, parent = (str(v) for v in fields)
        signed = autosave.signature(key, s.autosave_branch, tree, parent)
        return web.json_response({"branch": s.autosave_branch, "signature": signed})

    # --- GitLab ---------------------------------------------------------------------

    async def _forward(
        self, request: web.Request, suffix: str, head: bytes = b""
    ) -> web.StreamResponse:
        assert self.settings.upstream
        url = f"{self.settings.upstream.rstrip('/')}/{self.settings.project}.git/{suffix}"
        headers = {h: request.headers[h] for h in REQUEST_HEADERS if h in request.headers}
        replayable = request.method == "GET"
        token = self.tokens.current()
        for attempt in (1, 2):
            auth = base64.b64encode(f"oauth2:{token}".encode()).decode()
            upstream = await self.session.request(
                request.method,
                url,
                params=request.query,
                headers={**headers, "Authorization": f"Basic {auth}"},
                data=None if replayable else _stream(request, head),
                timeout=UPSTREAM_TIMEOUT,
                allow_redirects=False,
            )
            if upstream.status != 401:
                return await self._relay(request, upstream)
            upstream.release()
            refreshed = await self.tokens.refresh(self.session, token)
            if not (replayable and refreshed and attempt == 1):
                break
            token = self.tokens.current()
        return refusal(
            401,
            "renku-notebooks: GitLab refused the session's login; log in to JupyterHub again.",
            **{"WWW-Authenticate": REALM},
        )

    async def _relay(
        self, request: web.Request, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        try:
            headers = {h: upstream.headers[h] for h in RESPONSE_HEADERS if h in upstream.headers}
            response = web.StreamResponse(status=upstream.status, headers=headers)
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            upstream.release()

    # --- a bare repository on disk ------------------------------------------------

    async def _serve_local(
        self, request: web.Request, suffix: str, head: bytes = b""
    ) -> web.StreamResponse:
        """`git http-backend` as a CGI, streamed: the local provider's repository."""
        repo = self.settings.repo
        assert repo is not None
        with tempfile.TemporaryDirectory(prefix="gitproxy-") as home:
            pushing = suffix == RECEIVE_PACK
            hooks = _hooks(Path(home), repo) if pushing else None
            default = await self.refs.default_branch() if pushing else ""
            env = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
            env.update(
                HOME=home,
                GIT_CONFIG_NOSYSTEM="1",
                GIT_CONFIG_GLOBAL="/dev/null",
                GIT_PROJECT_ROOT=str(repo.parent),
                GIT_HTTP_EXPORT_ALL="1",
                PATH_INFO=f"/{repo.name}/{suffix}",
                REQUEST_METHOD=request.method,
                QUERY_STRING=request.query_string,
                CONTENT_TYPE=request.headers.get("Content-Type", ""),
                REMOTE_USER=self.settings.user or "session",  # enables receive-pack
                REMOTE_ADDR="127.0.0.1",
                HTTP_GIT_PROTOCOL=request.headers.get("Git-Protocol", ""),
                HTTP_CONTENT_ENCODING=request.headers.get("Content-Encoding", ""),
                GIT_CONFIG_COUNT="1",
                GIT_CONFIG_KEY_0="uploadpack.allowAnySHA1InWant",
                GIT_CONFIG_VALUE_0="true",
            )
            if hooks is not None:  # a push: our pre-receive checks the default branch
                env.update(
                    GIT_CONFIG_COUNT="2",
                    GIT_CONFIG_KEY_1="core.hooksPath",
                    GIT_CONFIG_VALUE_1=str(hooks),
                    RENKU_DEFAULT_REF=default,
                    RENKU_REASON=NOT_FAST_FORWARD,
                    RENKU_REPO_HOOKS=str(repo / "hooks"),
                )
            proc = await asyncio.create_subprocess_exec(
                "git",
                "http-backend",
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            assert proc.stdin and proc.stdout
            feeding = asyncio.create_task(_feed(request, proc.stdin, head))
            try:
                return await _cgi_relay(request, proc.stdout)
            finally:
                feeding.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feeding
                with contextlib.suppress(ProcessLookupError):
                    if proc.returncode is None:
                        await asyncio.wait_for(proc.wait(), 30)


async def _stream(request: web.Request, head: bytes = b"") -> AsyncIterator[bytes]:
    """The request body: `head` (already read, checked) first, then the rest as it comes."""
    if head:
        yield head
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


async def _feed(request: web.Request, stdin: asyncio.StreamWriter, head: bytes = b"") -> None:
    try:
        if head:
            stdin.write(head)
            await stdin.drain()
        async for chunk in request.content.iter_chunked(CHUNK):
            stdin.write(chunk)
            await stdin.drain()
    finally:
        stdin.close()


async def _cgi_relay(request: web.Request, stdout: asyncio.StreamReader) -> web.StreamResponse:
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head:
        chunk = await stdout.read(CHUNK)
        if not chunk:
            return refusal(500, "renku-notebooks: git http-backend failed.")
        head += chunk
    sep = b"\r\n\r\n" if b"\r\n\r\n" in head else b"\n\n"
    head, _, rest = head.partition(sep)
    status, headers = 200, {}
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            headers[name.strip()] = value.strip()
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    if rest:
        await response.write(rest)
    while chunk := await stdout.read(CHUNK):
        await response.write(chunk)
    await response.write_eof()
    return response


# --- command line ---------------------------------------------------------------------------


def parse(argv: list[str] | None) -> tuple[Settings, str, int]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="127.0.0.1:PORT")
    parser.add_argument("--project", required=True, help="namespace/project")
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--upstream", help="GitLab's base URL")
    parser.add_argument("--token-file", type=Path, help="the user's GitLab token")
    parser.add_argument("--repo", type=Path, help="local provider: the project's bare repository")
    parser.add_argument("--token-endpoint", help="the glue's <prefix>-/git-token URL")
    parser.add_argument("--key-file", type=Path, help="this server's component key")
    parser.add_argument("--hub-token-file", type=Path, help="this server's hub API token")
    parser.add_argument("--user", default="")
    parser.add_argument("--server", default="")
    parser.add_argument(
        "--autosave-prefix", required=True, help="autosave branches' prefix"
    )
    parser.add_argument("--autosave-branch", default="", help="this server's autosave branch")
    parser.add_argument("--signing-key-file", type=Path, help="that branch's signing key")
    args = parser.parse_args(argv)
    if bool(args.upstream) == bool(args.repo):
        parser.error("give either --upstream (with --token-file) or --repo")
    if args.upstream and not args.token_file:
        parser.error("--upstream needs --token-file")
    own = contracts.autosave_user_prefix(args.autosave_prefix, args.user)
    if args.autosave_branch and not args.autosave_branch.startswith(own):
        parser.error(f"--autosave-branch is not below {own}")
    try:
        host, port = listen_address(args.listen)
    except ValueError as e:
        parser.error(str(e))
    settings = Settings(
        project=args.project.strip("/").removesuffix(".git"),
        secret_file=args.secret_file,
        upstream=args.upstream,
        token_file=args.token_file,
        repo=args.repo.resolve() if args.repo else None,
        token_endpoint=args.token_endpoint,
        key_file=args.key_file,
        hub_token_file=args.hub_token_file,
        user=args.user,
        server=args.server,
        autosave_prefix=args.autosave_prefix,
        autosave_branch=args.autosave_branch,
        signing_key_file=args.signing_key_file,
    )
    return settings, host, port


def listen_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host as it is, `fd00::1:7481`), for a listener."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--listen is HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


async def serve(
    settings: Settings,
    host: str,
    port: int,
    beside: Sequence[tuple[web.Application, str, int]] = (),
    held: socket.socket | None = None,
) -> None:
    """The component until SIGTERM or SIGINT, on `held` when given (its address `host:port`);
    `beside`: other listeners of the same process (the sidecar's autosave control), started
    and stopped with it."""
    apps = [(GitProxy(settings, f"{host}:{port}").app(), host, port), *beside]
    runners = []
    try:
        for app, app_host, app_port in apps:
            runner = web.AppRunner(app, auto_decompress=False, access_log=None)
            runners.append(runner)
            await runner.setup()
            if held is not None and runner is runners[0]:
                await web.SockSite(runner, held).start()
            else:
                await web.TCPSite(runner, app_host, app_port).start()
        log.info("serving %s on http://%s:%s", settings.project, host, port)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    settings, host, port = parse(argv)
    held = contracts.inherited_listener()  # from the local spawner; a pod's component binds its own
    if held is not None and held.getsockname()[1] != port:
        raise SystemExit(f"the socket passed in {LISTEN_FD_ENV} is not on port {port}")
    logsafe.install()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gitproxy %(message)s")
    asyncio.run(serve(settings, host, port, held=held))
    return 0


if __name__ == "__main__":
    sys.exit(main())
