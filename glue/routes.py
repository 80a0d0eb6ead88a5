"""Map HTTP to actions: request -> validate -> authorize -> act -> render.

Each handler validates its input first (nothing invalid reaches the hub, the
git provider or git), then identifies and authorizes the caller, then acts
through `Servers`, then renders JSON or HTML.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

from . import events, launch, target
from .access import Access
from .accesslog import USER
from .auth import Auth, Identity
from .config import Config, default_profile
from .errors import BadRequest, GlueError, NotFound, Unauthorized
from .hub import Hub
from .provider import Caller, GitProvider
from .render import Renderer, open_url, wants_html
from .servers import Servers

# any characters, newlines included: the validation, not the router, refuses bad paths
TAIL = "{tail:[\\s\\S]+}"
# a launch URL, as the router sees it: not one of the glue's own `-/` paths
SHOW_TAIL = "{tail:(?!-/)[\\s\\S]+}"
# and for POST and DELETE two segments at least, so a POST to `user`, `health` or
# `-/events/...` is a 405 that names GET, not a launch
LAUNCH_TAIL = "{tail:(?!-/)[^/]+/[\\s\\S]+}"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# the glue's own paths start with '-', which no namespace may: they never shadow a project
EVENTS = "-/events/"
STATIC = "-/static/"
STATIC_DIR = Path(__file__).resolve().parent / "static"
# each file's version (a hash of its content) goes into its URL, so a browser may keep
# it for good and still loads the new one after an upgrade
STATIC_VERSIONS = {
    p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12]
    for p in STATIC_DIR.iterdir()
    if p.is_file()
}


class LoginRequired(Exception):
    """A browser without a session: send it through the hub's OAuth flow."""


@dataclass
class Routes:
    config: Config
    hub: Hub
    auth: Auth
    access: Access
    provider: GitProvider
    servers: Servers
    render: Renderer

    def add_to(self, app: web.Application, prefix: str) -> None:
        self.render.env.globals["static_url"] = self.static_url
        bare = prefix.rstrip("/")
        app.router.add_get(bare, self.list_servers)
        app.router.add_get(prefix, self.list_servers)
        app.router.add_get(prefix + "user", self.user)
        app.router.add_get(prefix + "health", self.health)
        app.router.add_get(prefix + "oauth_callback", self.oauth_callback)
        app.router.add_get(prefix + STATIC + "{file}", self.static, name="static")
        app.router.add_get(prefix + EVENTS + TAIL, self.event_stream)
        app.router.add_get(prefix + SHOW_TAIL, self.show)
        app.router.add_post(prefix + LAUNCH_TAIL, self.post)
        app.router.add_delete(prefix + LAUNCH_TAIL, self.delete)

    def tail(self, request: web.Request, below: str = "") -> str:
        """The path after the prefix exactly as sent: the router would resolve `..` first."""
        raw = unquote(request.raw_path.split("?", 1)[0])
        prefix = self.render.prefix + below
        return raw[len(prefix) :] if raw.startswith(prefix) else request.match_info["tail"]

    # --- identity ---------------------------------------------------------------

    async def identify(self, request: web.Request) -> Identity:
        identity = await self.auth.identify(request)
        if identity is None:
            if wants_html(request) and request.method == "GET":
                raise LoginRequired
            raise Unauthorized(
                "Log in to JupyterHub, or send an `Authorization: token <hub token>` header.",
                code="not_logged_in",
            )
        request[USER] = identity.name
        return identity

    async def caller(self, identity: Identity) -> Caller:
        """The caller as the git provider needs them: with their git token when it asks."""
        if not self.provider.needs_token:
            return Caller(identity.name)
        caller = Caller.from_auth_state(identity.name, await self.hub.auth_state(identity.name))
        if not caller.git_token:
            raise Unauthorized(
                "Your GitLab login has no token; log out and log in again.",
                code="gitlab_token_missing",
            )
        return caller

    def page_context(self, identity: Identity) -> dict[str, Any]:
        return {"user": identity.name, "xsrf": self.auth.xsrf_token(identity)}

    # --- handlers -----------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        if await self.hub.healthy():
            return self.render.json({"status": "ok"})
        return self.render.json(
            {"error": "hub_unavailable", "message": "JupyterHub is not reachable."}, 503
        )

    def static_url(self, name: str) -> str:
        return f"{self.render.prefix}{STATIC}{name}?v={STATIC_VERSIONS[name]}"

    async def static(self, request: web.Request) -> web.FileResponse:
        """One of the glue's own files; anything else is our JSON 404, not a file lookup."""
        name = request.match_info["file"]
        if name not in STATIC_VERSIONS:
            raise NotFound("There is nothing at this address.", code="no_route")
        current = request.query.get("v") == STATIC_VERSIONS[name]
        cache = "public, max-age=31536000, immutable" if current else "no-cache"
        return web.FileResponse(STATIC_DIR / name, headers={"Cache-Control": cache})

    async def oauth_callback(self, request: web.Request) -> web.Response:
        return await self.auth.callback(request)

    async def user(self, request: web.Request) -> web.Response:
        identity = await self.identify(request)
        model = await self.hub.user(identity.name)
        model.pop("auth_state", None)  # holds the GitLab token: never leaves the glue
        return self.render.json(model)

    async def list_servers(self, request: web.Request) -> web.Response:
        identity = await self.identify(request)
        servers = await self.servers.list(identity.name)
        if wants_html(request):
            return self.render.page("list.html", servers=servers, **self.page_context(identity))
        return self.render.json({"servers": servers})

    async def show(self, request: web.Request) -> web.Response:
        wanted = target.parse(self.tail(request))
        identity = await self.identify(request)
        await self.access.check(await self.caller(identity), wanted)
        model = await self.servers.get(identity.name, wanted)
        if not wants_html(request):
            if model is None:
                raise GlueError(
                    "You have no server for this commit.", code="server_not_found", status=404
                )
            return self.render.json(model)
        if model and model["status"] == "running":
            raise web.HTTPFound(open_url(model, wanted.notebook))
        failure = None
        if model and model["status"] == "failed":
            reason = await events.failure_message(self.hub, identity.name, wanted.server_name)
            failure = reason or events.UNKNOWN_FAILURE
        return self.render.page(
            "status.html",
            target=wanted,
            server=model,
            failure=failure,
            events_url=self.render.prefix + EVENTS + quote(target_path(wanted)),
            profiles=self.config["profiles"],
            default_profile=default_profile(self.config)["name"],
            **self.page_context(identity),
        )

    async def event_stream(self, request: web.Request) -> web.StreamResponse:
        """The launch's progress as server-sent events, with the checks of `show`."""

        async def authorize() -> tuple[str, target.Target]:
            wanted = target.parse(self.tail(request, EVENTS))
            try:
                identity = await self.identify(request)
            except LoginRequired:  # a browser tab opened on the stream itself
                raise Unauthorized(
                    "Log in to JupyterHub, then reload the page.", code="not_logged_in"
                ) from None
            await self.access.check(await self.caller(identity), wanted)
            return identity.name, wanted

        return await events.serve(request, authorize, self.hub, self.servers)

    async def post(self, request: web.Request) -> web.Response:
        wanted = target.parse(self.tail(request))
        body, form_token = await read_body(request)
        if body.pop("_method", None) == "DELETE":
            return await self.delete(request, form_token)
        choices = launch.parse_body(self.config, body)
        identity = await self.identify(request)
        self.auth.check_xsrf(request, identity, form_token)
        caller = await self.caller(identity)
        await self.access.check_launch(caller, wanted)
        image = launch.choose_image(self.config, await self.provider.commit_image(caller, wanted))
        status, model = await self.servers.start(
            identity.name, launch.make(self.config, wanted, choices, image)
        )
        if request.content_type in FORM_TYPES:
            raise web.HTTPSeeOther(request.raw_path.split("?", 1)[0])
        return self.render.json(model, status)

    async def delete(self, request: web.Request, form_token: str | None = None) -> web.Response:
        wanted = target.parse(self.tail(request))
        identity = await self.identify(request)
        self.auth.check_xsrf(request, identity, form_token)
        status, model = await self.servers.stop(identity.name, wanted)
        if request.content_type in FORM_TYPES:
            raise web.HTTPSeeOther(self.render.prefix)
        if model is None:
            return web.Response(status=status)
        return self.render.json(model, status)


def target_path(wanted: target.Target) -> str:
    """`<namespace>/<project>/<sha>[/<notebook>]`, as in a launch URL (before quoting)."""
    path = f"{wanted.full_path}/{wanted.commit_sha}"
    return f"{path}/{wanted.notebook}" if wanted.notebook else path


async def read_body(request: web.Request) -> tuple[dict[str, Any], str | None]:
    """A JSON object or a form; returns the fields and the form's XSRF token, if any."""
    if not request.body_exists:
        return {}, None
    if request.content_type in FORM_TYPES:
        fields = await read_form(request)
        return fields, fields.pop("_xsrf", None)
    if request.content_type != "application/json":
        raise BadRequest(
            "Send the launch options as application/json.",
            code="unsupported_media_type",
            status=415,
        )
    if (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
        raise BadRequest("Send JSON as UTF-8.", code="invalid_json")
    data = await request.read()
    if not data.strip():
        return {}, None
    try:
        body = json.loads(data.decode("utf-8"))  # JSON is UTF-8 (RFC 8259)
    except (ValueError, RecursionError):
        raise BadRequest("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    return body, None


async def read_form(request: web.Request) -> dict[str, str]:
    """The form's fields; a form aiohttp cannot parse is the sender's mistake, not ours."""
    try:
        form = await request.post()
    except web.HTTPException:
        raise  # 413 and friends keep their status
    except Exception:
        raise BadRequest("The form could not be read.", code="invalid_form") from None
    return {k: str(v) for k, v in form.items()}
