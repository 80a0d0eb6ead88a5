"""Map HTTP to actions: request -> validate -> authorize -> act -> render.

Each handler validates its input first (nothing invalid reaches the hub, the
git provider or git), then identifies and authorizes the caller, then acts
through `Servers`, then renders JSON or HTML.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic
from urllib.parse import quote, unquote, urlsplit

from aiohttp import web

from glue.core import contracts, launch, metrics, target
from glue.core import serverlogs as logs
from glue.core.config import Config, default_profile
from glue.core.errors import (
    AutosaveFailed,
    BadRequest,
    GlueError,
    LoginRequired,
    NotFound,
    SpawnFailed,
    Unauthorized,
)
from glue.providers.access import Access
from glue.service import events, gittoken, openapi, requestbody
from glue.service.accesslog import USER
from glue.service.auth import Auth, Identity
from glue.service.failures import Failure
from glue.service.hubapi import Hub
from glue.service.render import Renderer, open_url, wants_html
from glue.service.servers import Servers, UserView

# any characters, newlines included: the validation, not the router, refuses bad paths
TAIL = "{tail:[\\s\\S]+}"
# a project's autosaves: `<namespace...>/<project>/-/autosaves[/<sha>]`, in the glue's own
# `-/` space below the project (as GitLab puts its pages), so that no project, branch or
# notebook name can be read as one: a namespace part never is `-`, and a launch URL has
# `-/` only in its notebook, after the sha
AUTOSAVES = "/-/autosaves"
# a server's log, `<launch URL>/-/logs` (GET only: its other methods are 405, not a launch)
LOGS = "/-/logs"
LOGS_TAIL = "{tail:(?!-/)[\\s\\S]+}"
NOT_OWN = "(?![\\s\\S]*/-/(?:autosaves(?:/[^/]+)?|logs)\\Z)"
# a launch URL, as the router sees it: not one of the glue's own `-/` paths
SHOW_TAIL = "{tail:(?!-/)" + NOT_OWN + "[\\s\\S]+}"
# and for POST and DELETE two segments at least, so a POST to `user`, `health` or
# `-/events/...` is a 405 that names GET, not a launch
LAUNCH_TAIL = "{tail:(?!-/)" + NOT_OWN + "[^/]+/[\\s\\S]+}"
PROJECT = "{namespace:(?!-/)[\\s\\S]+}/{project:[^/]+}"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# the glue's own paths start with '-', which no namespace may: they never shadow a project
EVENTS = "-/events/"
GIT_TOKEN = "-/git-token"
STATIC = "-/static/"
STATIC_DIR = Path(__file__).resolve().parent / "static"
# each file's version (a hash of its content) goes into its URL, so a browser may keep
# it for good and still loads the new one after an upgrade
STATIC_VERSIONS = {
    p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12]
    for p in STATIC_DIR.iterdir()
    if p.is_file()
}


@dataclass(frozen=True)
class Authorized(Generic[target.Wanted]):
    """A request that passed the authorize step: who, their hub model read once, and what."""

    identity: Identity
    view: UserView
    target: target.Wanted


@dataclass
class Routes:
    config: Config
    hub: Hub
    auth: Auth
    access: Access
    servers: Servers
    render: Renderer
    _openapi: bytes = field(init=False, default=b"")

    def add_to(self, app: web.Application, prefix: str) -> None:
        self.render.env.globals["static_url"] = self.static_url
        self._openapi = openapi.encoded(self.config, prefix)
        bare = prefix.rstrip("/")
        app.router.add_get(bare, self.list_servers)
        app.router.add_get(prefix, self.list_servers)
        app.router.add_get(prefix + "user", self.user)
        app.router.add_get(prefix + "health", self.health)
        app.router.add_get(prefix + "metrics", self.metrics)
        app.router.add_get(prefix + "openapi.json", self.openapi)
        app.router.add_get(prefix + "oauth_callback", self.oauth_callback)
        app.router.add_get(prefix + STATIC + "{file}", self.static)
        app.router.add_get(prefix + "-/launcher", self.launcher)
        app.router.add_get(prefix + "-/badge.svg", self.badge)
        app.router.add_get(prefix + EVENTS + TAIL, self.event_stream)
        app.router.add_post(prefix + GIT_TOKEN, self.git_token)
        app.router.add_get(prefix + LOGS_TAIL + LOGS, self.logs)
        app.router.add_get(prefix + PROJECT + AUTOSAVES, self.autosaves)
        app.router.add_delete(prefix + PROJECT + AUTOSAVES + "/{commit_sha}", self.delete_autosave)
        app.router.add_get(prefix + SHOW_TAIL, self.show)
        app.router.add_post(prefix + LAUNCH_TAIL, self.post)
        app.router.add_delete(prefix + LAUNCH_TAIL, self.delete)
        app.router.add_patch(prefix + LAUNCH_TAIL, self.patch)

    def tail(self, request: web.Request, below: str = "") -> str:
        """The path after the prefix exactly as sent: the router would resolve `..` first."""
        raw = unquote(request.raw_path.split("?", 1)[0])
        prefix = self.render.prefix + below
        return raw[len(prefix) :] if raw.startswith(prefix) else request.match_info.get("tail", "")

    # --- who is calling, and may they -----------------------------------------------

    async def identify(self, request: web.Request) -> Identity:
        identity = await self.auth.identify(request)
        if identity is None:
            if request.headers.get("Authorization", "").strip():
                raise Unauthorized(
                    "JupyterHub does not accept this token: it is wrong, expired or revoked, "
                    "or not a user's token. Log in again and create a new token in the hub's "
                    "Token page.",
                    code="invalid_token",
                )
            if wants_html(request) and request.method == "GET":
                raise LoginRequired
            raise Unauthorized(
                "Log in to JupyterHub, or send an `Authorization: token <hub token>` header.",
                code="not_logged_in",
            )
        request[USER] = identity.name
        return identity

    async def authorize(
        self,
        request: web.Request,
        wanted: target.Wanted,
        form_token: str | None = None,
        *,
        in_project: bool = False,
    ) -> Authorized[target.Wanted]:
        """The one authorize step: the caller, their page token for a change, their hub
        model (one read: servers and git login), and for a read, or a change `in_project`
        (deleting an autosave branch), their access to the project.

        A launch checks access again as it acts, fresh and beside the commit and image
        lookups (`Servers.launch`); stopping one's own server needs no project access.
        """
        identity = await self.identify(request)
        if request.method not in ("GET", "HEAD"):
            self.auth.check_xsrf(request, identity, form_token)
        view = await self.servers.view(identity.name)
        if request.method in ("GET", "HEAD") or in_project:
            await self.access.check(view.caller, wanted, fresh=in_project)
        return Authorized(identity, view, self.access.current(view.caller, wanted))

    def page_context(self, identity: Identity) -> dict[str, Any]:
        return {"user": identity.name, "xsrf": self.auth.xsrf_token(identity)}

    # --- the glue's own endpoints ---------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        if await self.hub.healthy():
            return self.render.json({"status": "ok"})
        return self.render.json(
            {"error": "hub_unavailable", "message": "JupyterHub is not reachable."}, 503
        )

    async def metrics(self, request: web.Request) -> web.Response:
        await self.auth.check_metrics(request)
        body, content_type = metrics.exposition(request.headers.get("Accept", ""))
        return web.Response(
            body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"}
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

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

    async def git_token(self, request: web.Request) -> web.Response:
        """A fresh GitLab token for a session's git token component (glue/service/gittoken.py)."""
        body, _ = await read_body(request, self.config["launch"]["maxBodyBytes"])
        wanted = gittoken.TokenRequest.parse(body)
        wanted.check_key(self.hub.service_token, request.headers.get("Authorization", ""))
        request[USER] = wanted.user
        token = await gittoken.fresh_token(self.hub, self.servers, wanted)
        response = self.render.json({"access_token": token})
        response.headers["Cache-Control"] = "no-store"
        return response

    # --- the caller and their servers -------------------------------------------------------

    async def user(self, request: web.Request) -> web.Response:
        identity = await self.identify(request)
        model = await self.hub.user(identity.name)
        model.pop("auth_state", None)  # holds the GitLab token: never leaves the glue
        return self.render.json(model)

    async def list_servers(self, request: web.Request) -> web.Response:
        identity = await self.identify(request)
        view = await self.servers.view(identity.name)
        servers = view.servers
        if wants_html(request):
            # what each Stop button would autosave, asked of the spawners at once
            unsaved = await self.servers.unsaved(view)
            return self.render.page(
                "list.html", servers=servers, unsaved=unsaved, **self.page_context(identity)
            )
        return self.render.json({"servers": servers})

    async def show(self, request: web.Request) -> web.Response:
        tail = self.tail(request)
        if not target.has_sha(tail) and len(tail.strip("/").split("/")) >= 3:
            return await self.resolve_link(request, tail)
        done = await self.authorize(request, target.parse(tail))
        wanted, model = done.target, done.view.find(done.target)
        if not wants_html(request):
            if model is None:
                raise GlueError(
                    "You have no server for this commit.", code="server_not_found", status=404
                )
            if model["status"] == "failed":
                model = {**model, "failure": (await self.explain(done)).model()}
            return self.render.json(model)
        if model and model["status"] == "running":
            raise web.HTTPFound(open_url(model, wanted.notebook))
        failure, image, pipeline = None, None, None
        if model and model["status"] == "failed":
            failure = await self.explain(done)
        if model is None:  # what a launch would refuse is said now, not after the click
            candidate, pipeline = await self.servers.preflight(done.view, wanted)
            image = launch.image_status(candidate, pipeline)
        return self.render.page(
            "status.html",
            target=wanted,
            server=model,
            failure=failure,
            image_status=image,
            pipeline=pipeline,
            when_building=self.config["images"]["whenBuilding"],
            events_url=self.render.prefix + EVENTS + quote(target_path(wanted)),
            logs_url=self.render.prefix + quote(target_path(replace(wanted, notebook=""))) + LOGS,
            profiles=self.config["profiles"],
            default_profile=default_profile(self.config)["name"],
            **self.page_context(done.identity),
        )

    async def resolve_link(self, request: web.Request, tail: str) -> web.Response:
        """A link by ref (branch, tag, short sha): a redirect to the pinned launch URL, the
        notebook and query kept. Never cached: the ref moves, the pinned URL does not."""
        identity = await self.identify(request)
        view = await self.servers.view(identity.name)
        pinned = await self.servers.resolve(view, tail)
        location = self.render.prefix + quote(target_path(pinned))
        if request.query_string:
            location += "?" + request.query_string
        body = {"commit_sha": pinned.commit_sha, "url": location}
        raise web.HTTPFound(
            location,
            text=json.dumps(body),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def logs(self, request: web.Request) -> web.Response:
        """The tail of the caller's server's log, `?lines=N` (1-1000, default 100): JSON, or
        plain text for a browser's "show log" link."""
        raw = request.query.get("lines", str(logs.DEFAULT_LINES))
        if not raw.isdigit() or not 1 <= int(raw) <= logs.MAX_LINES:
            raise BadRequest(
                f"`lines` must be a whole number from 1 to {logs.MAX_LINES}.", code="invalid_lines"
            )
        wanted = target.parse(self.tail(request).removesuffix(LOGS))
        done = await self.authorize(request, wanted)
        lines = await self.servers.logs(done.view, wanted, int(raw))
        if wants_html(request):
            text = "\n".join(lines) or "(nothing logged yet)"
            return web.Response(text=text + "\n", headers={"Cache-Control": "no-store"})
        return self.render.json({"name": wanted.server_name, "lines": lines})

    # --- the caller's autosaves of a project -------------------------------------------------

    def project_of(self, request: web.Request) -> tuple[target.Ref, str | None]:
        """The project (and the sha) of an autosaves path, validated as a launch URL's."""
        rest = self.tail(request).removesuffix("/")
        head, sep, sha = rest.rpartition(AUTOSAVES + "/")
        if not sep:
            head, sha = rest.removesuffix(AUTOSAVES), ""
        namespace, _, project = head.rpartition("/")
        target.check_project(namespace, project)
        return target.Ref(namespace, project, ""), target.check_sha(sha) if sep else None

    async def autosaves(self, request: web.Request) -> web.Response:
        """The caller's autosave branches of the project, with whether a server runs for each."""
        project, _ = self.project_of(request)
        done = await self.authorize(request, project)
        found = await self.servers.autosaves(done.view, done.target)
        response = self.render.json({"autosaves": found})
        response.headers["Cache-Control"] = "no-store"
        return response

    async def delete_autosave(self, request: web.Request) -> web.Response:
        """Delete the caller's autosave of one commit: 204, or 404 when there is none."""
        project, sha = self.project_of(request)
        done = await self.authorize(request, project.at(sha or ""), in_project=True)
        await self.servers.delete_autosave(done.view, done.target)
        return web.Response(status=204)

    async def launcher(self, request: web.Request) -> web.Response:
        """The landing page's form: resolve project and ref, then offer the pinned link and
        README snippets with the glue's own badge. Plain GET: works without JavaScript."""
        identity = await self.identify(request)
        query = request.query
        provider = self.config["provider"]
        host = urlsplit(provider["url"]).netloc if provider["kind"] == "gitlab" else None
        ref = target.ref_from_form(
            query.get("project", ""), query.get("ref", ""), query.get("notebook", ""), host
        )
        view = await self.servers.view(identity.name)
        pinned = await self.servers.pin(view, ref)
        if pinned is None:
            named = f"a branch, tag or commit named {ref.ref!r}" if ref.ref else "a default branch"
            raise NotFound(
                f"{ref.full_path} was not found with {named}, or you cannot see it.",
                code="ref_not_found",
            )
        origin = _origin(request)
        links = {
            "pinned": origin + self.render.prefix + quote(target_path(pinned)),
            "ref": origin + self.render.prefix
            + quote("/".join(p for p in (ref.full_path, ref.ref, ref.notebook) if p))
            if ref.ref else "",
            "badge": origin + self.render.prefix + "-/badge.svg",
        }
        body = {"commit_sha": pinned.commit_sha, **links}
        if not wants_html(request):
            return self.render.json(body)
        return self.render.page(
            "launcher.html", target=pinned, ref=ref, links=links, **self.page_context(identity)
        )

    async def badge(self, request: web.Request) -> web.Response:
        """The "launch notebook" badge for READMEs: our own SVG, no external service."""
        return web.Response(
            body=self.render.env.get_template("badge.svg").render().encode(),
            content_type="image/svg+xml",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    async def event_stream(self, request: web.Request) -> web.StreamResponse:
        """The launch's progress as server-sent events, with the checks of `show`; a
        refusal is an event too, since the browser's EventSource cannot see statuses."""
        try:
            done = await self.authorize(request, target.parse(self.tail(request, EVENTS)))
        except LoginRequired:  # a browser tab opened on the stream itself
            return await events.refuse(
                request,
                Unauthorized("Log in to JupyterHub, then reload the page.", code="not_logged_in"),
            )
        except GlueError as e:
            return await events.refuse(request, e)
        model = done.view.find(done.target)
        if model is None and request.query.get("wait") == "image":
            return await events.serve_image_wait(
                request, self.servers, done.view, done.target,
                float(self.config["images"]["buildPollSeconds"]),
            )
        return await events.serve(
            request, self.servers, done.view.name, done.target, model,
            secret=done.view.caller.git_token,
        )

    async def explain(self, done: Authorized[target.Target]) -> Failure:
        """Why the caller's server for the target failed, from the hub and its log."""
        name = done.view.name
        reason = await self.servers.failure(name, done.target)
        model = done.view.find(done.target)
        return await self.servers.explain(
            name,
            done.target,
            reason,
            secret=done.view.caller.git_token,
            pod=done.view.pod(done.target),
            memory=model["memory"] if model else None,
        )

    async def post(self, request: web.Request) -> web.Response:
        tail = self.tail(request)
        target.require_sha(tail)
        wanted = target.parse(tail)
        body, form_token = await read_body(request, self.config["launch"]["maxBodyBytes"])
        # the form's `force` (LaunchForm) is for a stop and its `state` for a pause or
        # resume: a launch's form ignores them, and a stop's or a state's form the others
        form = request.content_type in FORM_TYPES
        force = body.pop("force", None) if form else None
        state = body.pop("state", None) if form else None
        method = body.pop("_method", None)
        if method == "DELETE":
            return await self.delete(request, form_token, wanted, force)
        if method == "PATCH":
            asked = {} if state is None else {"state": state}
            return await self.patch(request, form_token, wanted, asked)
        choices = launch.parse_body(self.config, body)
        done = await self.authorize(request, wanted, form_token)
        try:
            status, model = await self.servers.launch(done.view, wanted, choices)
        except SpawnFailed:
            if request.content_type in FORM_TYPES:  # the page shows the reason and the log
                raise web.HTTPSeeOther(request.raw_path.split("?", 1)[0]) from None
            raise
        if request.content_type in FORM_TYPES:
            raise web.HTTPSeeOther(request.raw_path.split("?", 1)[0])
        return self.render.json(model, status)

    async def delete(
        self,
        request: web.Request,
        form_token: str | None = None,
        wanted: target.Target | None = None,
        form_force: str | None = None,
    ) -> web.Response:
        """Stop the caller's server, after its autosave unless `force=true` (query, or the
        form's field); a form's POST with `_method=DELETE` comes here parsed. A failed
        autosave is a 409 and the server runs on; a form then gets a page with the reason
        and a "Stop anyway" button."""
        if wanted is None:
            tail = self.tail(request)
            target.require_sha(tail)
            wanted = target.parse(tail)
        force = parse_force(request.query.get("force", form_force))
        done = await self.authorize(request, wanted, form_token)
        try:
            status, model = await self.servers.stop(done.view, wanted, force=force)
        except AutosaveFailed as e:
            if request.content_type not in FORM_TYPES:
                raise
            return self.render.page(
                "stop_refused.html",
                409,
                error=e,
                target=wanted,
                action=self.render.prefix + quote(target_path(replace(wanted, notebook=""))),
                **self.page_context(done.identity),
            )
        if request.content_type in FORM_TYPES:
            raise web.HTTPSeeOther(self.render.prefix)
        if model is None:
            return web.Response(status=status)
        return self.render.json(model, status)

    async def patch(
        self,
        request: web.Request,
        form_token: str | None = None,
        wanted: target.Target | None = None,
        form: dict[str, Any] | None = None,
    ) -> web.Response:
        """`{"state": "hibernated"}` pauses the caller's running server, `{"state": "running"}`
        resumes a paused one (glue.service.servers.Servers.set_state); a form's POST with
        `_method=PATCH` and a `state` field comes here parsed, and goes back to the list."""
        body = form
        if wanted is None:
            tail = self.tail(request)
            target.require_sha(tail)
            wanted = target.parse(tail)
            body, form_token = await read_body(request, self.config["launch"]["maxBodyBytes"])
        assert body is not None
        state = body.pop("state", None)
        if body:
            raise BadRequest(
                f"Unknown field(s) {', '.join(sorted(body))}: a PATCH sets only `state`.",
                code="invalid_field",
            )
        if not isinstance(state, str):
            raise BadRequest(
                'Send {"state": "hibernated"} to pause or {"state": "running"} to resume.',
                code="invalid_state",
            )
        done = await self.authorize(request, wanted, form_token)
        status, model = await self.servers.set_state(done.view, wanted, state)
        if request.content_type in FORM_TYPES:  # a resume follows its start on the page
            resuming = state == contracts.STATE_RUNNING
            raise web.HTTPSeeOther(
                request.raw_path.split("?", 1)[0] if resuming else self.render.prefix
            )
        return self.render.json(model, status)


def parse_force(value: str | None) -> bool:
    """`force`, as a query parameter or a form field: `true` or `false` (absent: false)."""
    if value in (None, "false"):
        return False
    if value == "true":
        return True
    raise BadRequest("`force` must be true or false.", code="invalid_force")


def target_path(wanted: target.Target) -> str:
    """`<namespace>/<project>/<sha>[/<notebook>]`, as in a launch URL (before quoting)."""
    path = f"{wanted.full_path}/{wanted.commit_sha}"
    return f"{path}/{wanted.notebook}" if wanted.notebook else path


async def read_body(request: web.Request, limit: int) -> tuple[dict[str, Any], str | None]:
    """A JSON object or a form; returns the fields and the form's XSRF token, if any."""
    if not request.body_exists:
        return {}, None
    if request.content_type in FORM_TYPES:
        requestbody.require_plain(request)
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
    data = await requestbody.read(request, limit)
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


def _origin(request: web.Request) -> str:
    """The origin the browser sees (the proxy keeps the Host; TLS may end before us)."""
    scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    return f"{scheme}://{request.host}"
