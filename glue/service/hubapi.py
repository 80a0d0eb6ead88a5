"""Talk to the JupyterHub REST API: one small client with retries and a progress stream.

Every failure of the hub becomes an UpstreamError (502/503/504): the glue fails
closed and never guesses what the hub would have said.

Three of the calls go to the hub's endpoints of ours (glue.hub.serversapi,
glue.hub.autosaveapi, registered by glue.hub.setup as `extra_handlers`). A hub
without them (an operator's older hub image, an `extraConfig` that does not call
`configure`) answers their paths with its catch-all 404 (`HUB_NO_SUCH_PATH`),
which none of our handlers gives; the glue then falls back to the hub's public
API, says so once in its log, and goes straight there for a while
(`MISSING_RECHECK_SECONDS`) before it asks again:

- the servers read: `GET users/<name>?include_stopped_servers=1`, shaped like ours;
- what a stop would autosave: unknown (None), as for a spawner that cannot say;
- the saving stop: refused, see `Hub.stop`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

import aiohttp

from glue.core import metrics
from glue.core.contracts import (
    AUTOSAVE_API,
    HUB_ALREADY_RUNNING,
    HUB_NO_SUCH_PATH,
    HUB_PENDING,
    HUB_TOO_MANY_SERVERS,
    PAUSE_API,
    SAVING_API,
    SERVERS_API,
)
from glue.core.errors import (
    AutosaveFailed,
    BadRequest,
    Conflict,
    GlueError,
    TooManyServers,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.2, 0.5, 1.0)
# after finding one of our hub endpoints missing, the glue reads through the hub's public API
# this long before it asks the endpoint again (a hub upgraded meanwhile is used again)
MISSING_RECHECK_SECONDS = 300.0
# what the glue does without each endpoint, for the one log line that says it
FALLBACKS = {
    SERVERS_API: "servers are read from the hub's user model instead (slower for the hub)",
    AUTOSAVE_API: "what a stop would autosave is unknown, and the list does not say it",
    SAVING_API: "stops of running servers are refused (409 autosave_failed) unless forced: "
    "nothing could autosave them first",
}
# our endpoints this process found missing and logged: once each, again only after it was back
_warned: set[str] = set()


class HubError(UpstreamError):
    """The hub answered, but not as expected."""

    def __init__(self, status: int, message: str, body: Any = None):
        super().__init__(f"JupyterHub answered {status}: {message}", code="hub_error")
        self.hub_status = status
        self.hub_message = message
        self.hub_body = body

    @property
    def no_such_path(self) -> bool:
        """The hub's catch-all answer for an API path that nothing serves. Our handlers'
        404s always carry an `error`; the hub's own handlers give the same bare answer for
        an unknown user, though, which `Hub.stop` tells apart."""
        return self.hub_status == 404 and self.hub_body == HUB_NO_SUCH_PATH


class HubCannotSave(AutosaveFailed):
    """The hub has no saving DELETE (glue.hub.autosaveapi): nothing can autosave a running
    server before its stop, so the glue does not stop it (see `Hub.stop`)."""


def _path(api: str, *parts: str) -> str:
    """A hub API path: `api` as it is (it may hold slashes), each part quoted."""
    return "/".join([api, *(quote(p, safe="") for p in parts)])


class Hub:
    """The hub API as the notebooks service sees it, with the service's own token."""

    def __init__(self, api_url: str, token: str, timeout: float = 20.0):
        self.api_url = api_url.rstrip("/") + "/"
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        # our endpoints found missing (their API path) -> when: the public API is used meanwhile
        self._missing: dict[str, float] = {}

    @property
    def service_token(self) -> str:
        """The service's own token: it is also its OAuth client secret."""
        return self._token

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        token: str | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
        seconds: float | None = None,
    ) -> tuple[int, Any]:
        """One API call; retried on connection failures when it is safe to send again."""
        headers = {"Authorization": f"token {token or self._token}"}
        data = None if body is None else json.dumps(body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        attempts = len(RETRY_DELAYS) + 1
        started, error = time.monotonic(), None
        try:
            for attempt in range(attempts):
                try:
                    async with self.session.request(
                        method,
                        self.api_url + path,
                        data=data,
                        params=params,
                        headers=headers,
                        timeout=self._timeout
                        if seconds is None
                        else aiohttp.ClientTimeout(total=seconds),
                    ) as response:
                        text = await response.text()
                        if response.status >= 500:
                            error = "server_error"
                        return self._result(response.status, text, ok)
                except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as e:
                    # a reset connection (the hub died mid-request) is an outage too
                    # a POST that never connected was never seen by the hub: safe to send again
                    never_sent = isinstance(e, aiohttp.ClientConnectorError)
                    if attempt + 1 == attempts or not (never_sent or method in ("GET", "DELETE")):
                        log.warning("hub unreachable: %s %s: %s", method, path, type(e).__name__)
                        error = "unavailable"
                        raise UpstreamUnavailable(
                            "JupyterHub is not reachable right now; try again in a moment.",
                            code="hub_unavailable",
                        ) from None
                    await asyncio.sleep(RETRY_DELAYS[attempt])
                except TimeoutError:
                    error = "timeout"
                    raise UpstreamTimeout(
                        "JupyterHub did not answer in time; try again in a moment.",
                        code="hub_timeout",
                    ) from None
            raise AssertionError("unreachable")
        except HubError:
            raise  # the hub answered (4xx): not an error of the hub
        except Exception:
            error = error or "other"
            raise
        finally:
            metrics.observe_upstream("hub", method, time.monotonic() - started, error)

    @staticmethod
    def _result(status: int, text: str, ok: tuple[int, ...]) -> tuple[int, Any]:
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = text
        if status in ok:
            return status, data
        message = data.get("message", "") if isinstance(data, dict) else str(data)[:200]
        if status >= 500:
            log.warning("hub error %s: %s", status, message)
            raise UpstreamError(
                f"JupyterHub failed ({status}): {message or 'no message'}", code="hub_error"
            )
        raise HubError(status, message, data)

    # --- identity ---------------------------------------------------------

    async def token_model(self, token: str) -> dict[str, Any] | None:
        """The model (with the token's scopes) of whoever owns a token, or None if invalid."""
        try:
            _, model = await self.request("GET", "user", token=token)
        except HubError as e:
            if e.hub_status in (401, 403):
                return None
            raise
        return model if isinstance(model, dict) else None

    async def oauth_token(self, form: dict[str, str]) -> str | None:
        """Exchange an OAuth code for the user's hub token; None when the hub refuses it."""
        try:
            async with self.session.post(
                self.api_url + "oauth2/token", data=form, timeout=self._timeout
            ) as response:
                if response.status != 200:
                    return None
                reply = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise UpstreamUnavailable(
                "Could not finish logging in with JupyterHub; try again.", code="hub_unavailable"
            ) from None
        token = reply.get("access_token") if isinstance(reply, dict) else None
        return token if isinstance(token, str) else None

    # --- users and servers --------------------------------------------------

    async def user(self, name: str) -> dict[str, Any]:
        """The hub's user model, every named server included (for `GET <prefix>user`);
        its auth_state, when the service may read it, never leaves the glue."""
        _, model = await self.request(
            "GET", _path("users", name), params={"include_stopped_servers": "1"}
        )
        if not isinstance(model, dict):
            raise UpstreamError("JupyterHub sent no user model.", code="hub_error")
        return model

    async def servers(self, name: str) -> dict[str, Any]:
        """The user's servers (stopped ones included) and, with `admin:auth_state`, the
        auth_state holding the GitLab token: what a status read needs, read by the hub from
        its memory (glue.hub.serversapi) instead of the database that `user()` costs.

        A hub without that endpoint is read through its public user model instead
        (`servers_from_user_model`); an unknown user is the hub's 404 either way."""
        if not self.missing(SERVERS_API):
            try:
                _, model = await self.request("GET", _path(SERVERS_API, name))
            except HubError as e:
                if not e.no_such_path:
                    raise
                self.found_missing(SERVERS_API)
            else:
                self.found_present(SERVERS_API)
                if not isinstance(model, dict):
                    raise UpstreamError("JupyterHub sent no servers.", code="hub_error")
                return model
        return await self.servers_from_user_model(name)

    async def servers_from_user_model(self, name: str) -> dict[str, Any]:
        """`servers()` from the hub's public `GET users/<name>?include_stopped_servers=1`,
        shaped as glue.hub.serversapi answers: `name`, `servers` (the same server models),
        `auth_state` when the service may read it, and `url`, which that model lacks (see
        `user_url`)."""
        model = await self.user(name)
        servers = model.get("servers") or {}
        if not isinstance(servers, dict):
            raise UpstreamError("JupyterHub sent no servers.", code="hub_error")
        shaped: dict[str, Any] = {
            "name": model.get("name", name),
            "url": user_url(model, servers),
            "servers": servers,
        }
        if "auth_state" in model:  # only there when the service may read it
            shaped["auth_state"] = model["auth_state"]
        return shaped

    def missing(self, api: str) -> bool:
        """Whether `api` was found missing within `MISSING_RECHECK_SECONDS`."""
        since = self._missing.get(api)
        return since is not None and time.monotonic() - since < MISSING_RECHECK_SECONDS

    def found_missing(self, api: str) -> None:
        """The hub has no `api` of ours: use its public API for a while, and say so once."""
        self._missing[api] = time.monotonic()
        if api not in _warned:
            _warned.add(api)
            log.warning(
                "JupyterHub has no /hub/api/%s endpoint: the hub lacks renku-notebooks' "
                "extra_handlers (a hub image older than this glue, or a hub.extraConfig that "
                "does not call glue.hub.setup.configure); %s",
                api,
                FALLBACKS[api],
            )

    def found_present(self, api: str) -> None:
        """The hub answered through `api`: a later loss of it is logged again."""
        if api in self._missing or api in _warned:
            self._missing.pop(api, None)
            _warned.discard(api)

    async def start(self, name: str, server: str, options: dict[str, Any]) -> int | None:
        """Ask the hub to start a server: 201 when it runs, 202 while it starts; None when
        the hub says it is already running or stopping (the caller reads it instead)."""
        try:
            status, _ = await self.request(
                "POST", _path("users", name, "servers", server), body=options
            )
        except HubError as e:
            if e.hub_status == 400 and HUB_TOO_MANY_SERVERS in e.hub_message:
                # the hub's own limit (named_server_limit_per_user): it holds across replicas
                raise TooManyServers(
                    "You already run the most servers allowed; stop one to launch another."
                ) from None
            if e.hub_status == 400 and (
                HUB_ALREADY_RUNNING in e.hub_message or HUB_PENDING in e.hub_message
            ):
                return None
            if e.hub_status == 400:
                # the hub's re-check refused the launch (Spawner.apply_user_options): its
                # sentence, as a refusal, not as a failure of the hub
                raise BadRequest(e.hub_message, code="launch_refused") from None
            raise
        return 201 if status == 201 else 202

    async def stop(self, name: str, server: str, *, saving: float | None = None) -> int:
        """Stop and remove a named server; 204 when gone, 202 while it is still stopping.

        `saving`: the seconds an autosave may take. The hub then stops the server through
        its saving DELETE (glue.hub.autosaveapi), which autosaves first and refuses the stop
        when that fails: AutosaveFailed (409) with the reason, the server still running.

        A hub without the saving DELETE: HubCannotSave (409 `autosave_failed` too), and the
        server keeps running. Its public `DELETE users/<u>/servers/<s>` would run the
        spawner's stop(), which autosaves as well, but cannot refuse: the hub has removed
        the route before and forgets the server whatever stop() raises, and a pod's preStop
        autosave that fails loses the work with the pod. So the glue stops a running server
        on such a hub only when the user said `force` (`saving` None), knowing what is at
        stake, as after any failed autosave; nothing of anyone's work goes silently. Stops
        are rare, so each asks the hub again (one that gained the endpoint saves at once).
        """
        if saving is None:
            status, _ = await self.request(
                "DELETE", _path("users", name, "servers", server), body={"remove": True}
            )
            return status
        try:
            status, _ = await self.request(
                "DELETE",
                _path(SAVING_API, "users", name, "servers", server),
                body={"remove": True},
                seconds=saving,
            )
        except HubError as e:
            if e.hub_status == 409:
                raise AutosaveFailed(e.hub_message) from None
            if e.no_such_path and await self._saving_missing():
                raise HubCannotSave(
                    "JupyterHub cannot autosave this server before stopping it: the hub lacks "
                    "renku-notebooks' saving stop (its image is older than this service, or "
                    "its configuration leaves the notebooks handlers out)."
                ) from None
            raise
        self.found_present(SAVING_API)
        return status

    async def pause(self, name: str, server: str) -> dict[str, Any]:
        """Pause a running server (glue.hub.pauseapi): the hub stops it and keeps it, with its
        workspace; its answer (`hibernated_at`, `disk_bytes`). The hub's refusals (409: it
        starts, it does not run, too many paused; 501: its spawner cannot) keep their code
        and sentence, as a Conflict."""
        try:
            _, body = await self.request(
                "POST", _path(PAUSE_API, "users", name, "servers", server), ok=(200,)
            )
        except HubError as e:
            code = e.hub_body.get("error") if isinstance(e.hub_body, dict) else None
            if e.hub_status in (404, 409, 501) and isinstance(code, str):
                raise Conflict(e.hub_message, code=code) from None
            raise
        return body if isinstance(body, dict) else {}

    async def _saving_missing(self) -> bool:
        """Whether a bare 404 of the saving DELETE means the hub lacks it, not that the user is
        unknown (the hub's own server DELETE, which ours runs, answers that bare too): asks
        the saving API's root, which ours serves (the hub's version) and a hub without it
        answers with the same catch-all 404."""
        try:
            await self.request("GET", SAVING_API, ok=(200,))
        except HubError as e:
            if not e.no_such_path:
                raise
            self.found_missing(SAVING_API)
            return True
        return False

    async def unsaved(self, name: str, server: str, *, seconds: float) -> dict[str, Any] | None:
        """What a stop would autosave of a running server, as the hub's spawner says
        (glue.hub.autosaveapi). None when this spawner cannot say before its stop or the
        server is not running; AutosaveFailed (409) when the workspace cannot be read. None
        too, without asking, while the hub is known to lack that endpoint."""
        if self.missing(AUTOSAVE_API):
            return None
        try:
            _, answer = await self.request(
                "GET", _path(AUTOSAVE_API, name, server), seconds=seconds, ok=(200,)
            )
        except HubError as e:
            if e.no_such_path:
                self.found_missing(AUTOSAVE_API)  # unknown, as for a spawner that cannot say
            if e.hub_status in (404, 501):
                return None
            if e.hub_status == 409:
                raise AutosaveFailed(e.hub_message) from None
            raise
        self.found_present(AUTOSAVE_API)
        return answer if isinstance(answer, dict) else {}

    async def progress(self, name: str, server: str) -> AsyncGenerator[dict[str, Any], None]:
        """The hub's spawn progress events for a server, as dicts, until the stream ends."""
        url = self.api_url + _path("users", name, "servers", server, "progress")
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
        headers = {"Authorization": f"token {self._token}", "Accept": "text/event-stream"}
        try:
            async with self.session.get(url, headers=headers, timeout=timeout) as response:
                if response.status != 200:
                    return
                async for line in response.content:
                    if line.startswith(b"data:"):
                        try:
                            yield json.loads(line[5:].decode())
                        except ValueError:
                            continue
        except (aiohttp.ClientError, TimeoutError):
            raise UpstreamUnavailable(
                "Lost the connection to JupyterHub while following the launch.",
                code="hub_unavailable",
            ) from None

    async def healthy(self) -> bool:
        try:
            await self.request("GET", "")
        except GlueError:
            return False
        return True


def user_url(model: dict[str, Any], servers: dict[str, Any]) -> str | None:
    """The user's URL (`User.url`, which glue.hub.serversapi sends) from the hub's user
    model, which does not carry it: a server's `url` is it plus the server's escaped name
    and `/` (the hub's `server_model`), and `server` is it while the default server runs.
    None without either (no server yet): the glue then builds it (`Servers.view`)."""
    for name, server in servers.items():
        url = server.get("url") if isinstance(server, dict) else None
        if not isinstance(url, str):
            continue
        tail = f"{quote(name, safe='@~')}/" if name else ""
        if url.endswith(tail) and url[: len(url) - len(tail)].endswith("/"):
            return url[: len(url) - len(tail)]
    default = model.get("server")
    return default if isinstance(default, str) and default else None
