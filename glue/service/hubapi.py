"""Talk to the JupyterHub REST API: one small client with retries and a progress stream.

Every failure of the hub becomes an UpstreamError (502/503/504): the glue fails
closed and never guesses what the hub would have said.
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
from glue.core.contracts import AUTOSAVE_API, SAVING_API, SERVERS_API
from glue.core.errors import (
    AutosaveFailed,
    BadRequest,
    GlueError,
    TooManyServers,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.2, 0.5, 1.0)


class HubError(UpstreamError):
    """The hub answered, but not as expected."""

    def __init__(self, status: int, message: str):
        super().__init__(f"JupyterHub answered {status}: {message}", code="hub_error")
        self.hub_status = status
        self.hub_message = message


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
        raise HubError(status, message)

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
        its memory (glue.hub.serversapi) instead of the database that `user()` costs."""
        _, model = await self.request("GET", _path(SERVERS_API, name))
        if not isinstance(model, dict):
            raise UpstreamError("JupyterHub sent no servers.", code="hub_error")
        return model

    async def start(self, name: str, server: str, options: dict[str, Any]) -> int | None:
        """Ask the hub to start a server: 201 when it runs, 202 while it starts; None when
        the hub says it is already running or stopping (the caller reads it instead)."""
        try:
            status, _ = await self.request(
                "POST", _path("users", name, "servers", server), body=options
            )
        except HubError as e:
            if e.hub_status == 400 and "maximum" in e.hub_message:
                # the hub's own limit (named_server_limit_per_user): it holds across replicas
                raise TooManyServers(
                    "You already run the most servers allowed; stop one to launch another."
                ) from None
            if e.hub_status == 400 and (
                "already running" in e.hub_message or "pending" in e.hub_message
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
        """
        path = _path(SAVING_API, "users", name, "servers", server)
        try:
            status, _ = await self.request(
                "DELETE",
                _path("users", name, "servers", server) if saving is None else path,
                body={"remove": True},
                seconds=saving,
            )
        except HubError as e:
            if saving is not None and e.hub_status == 409:
                raise AutosaveFailed(e.hub_message) from None
            raise
        return status

    async def unsaved(self, name: str, server: str, *, seconds: float) -> dict[str, Any] | None:
        """What a stop would autosave of a running server, as the hub's spawner says
        (glue.hub.autosaveapi). None when this spawner cannot say before its stop or the
        server is not running; AutosaveFailed (409) when the workspace cannot be read."""
        try:
            _, answer = await self.request(
                "GET", _path(AUTOSAVE_API, name, server), seconds=seconds, ok=(200,)
            )
        except HubError as e:
            if e.hub_status in (404, 501):
                return None
            if e.hub_status == 409:
                raise AutosaveFailed(e.hub_message) from None
            raise
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
