"""GitLab API v4 over HTTP, as one user: the transport under the GitLab provider.

glue.providers.gitlab decides what GitLab's answers mean (access levels, commits, images,
branches); this client only carries its calls: one aiohttp session with the provider's
timeout and CA bundle, the same-host-only redirect following (a moved project answers 301
to its numeric id; GitLab behind a TLS terminator may say `http://` in the Location, which
is then followed over the configured URL's scheme and port: never downgraded), the wait
for a 429's Retry-After, pagination, the answers every call treats alike turned into our
errors, and the metrics of every upstream call.

Every call acts with the user's own GitLab token (`Caller.git_token`, from the hub's
auth_state), so GitLab decides what the user may see; we never hold a token of our own.
The token travels only in the Authorization header: it is never put in a URL, a log line or
an exception message, and a redirect is followed only to the same GitLab host and API, so
the token is never sent anywhere else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
from yarl import URL

from glue.core import metrics, trust
from glue.core.errors import (
    Forbidden,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from glue.providers.base import Caller

log = logging.getLogger(__name__)

LOGIN_AGAIN = "Your GitLab login has expired or was revoked; log in again to renew it."
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 3
# a list is paginated (20 a page unless asked, 100 at most)
PER_PAGE = 100


@dataclasses.dataclass(frozen=True)
class Answer:
    """One GitLab answer: status, JSON body (None if not JSON) and headers."""

    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def next_page(self) -> str | None:
        """The next page of a paginated list; None on the last (GitLab sends it empty)."""
        page = self.headers.get("X-Next-Page", "")
        return page if page.isdigit() else None


class GitLabAPI:
    """Calls one GitLab's API v4 as the caller, within the provider's time budget."""

    def __init__(self, url: str, *, timeout: float, ca_bundle: str = ""):
        self.url = url.rstrip("/")
        self.api = f"{self.url}/api/v4"
        self.timeout = timeout
        self.ca_bundle = ca_bundle
        # created on first use: the provider may be built outside a running event loop
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, caller: Caller, path: str, *, method: str = "GET") -> Answer:
        """GET an API path as the caller, within the request's time budget.

        Follows redirects to this GitLab's API only, waits out a 429's Retry-After when it
        fits the budget, and raises on outages, 401 and the 403s that are not about access.
        """
        if not caller.git_token:
            raise Unauthorized(
                "No GitLab login is stored for you; log in again.", code="gitlab_token_expired"
            )
        url = URL(f"{self.api}/{path}", encoded=True)  # keep %2F in project paths
        deadline = time.monotonic() + self.timeout
        hops = 0
        while True:
            answer = await self._fetch(caller, url, method)
            if answer.status in REDIRECTS and hops < MAX_REDIRECTS:
                url, hops = self._same_api(url, answer.headers.get("Location", "")), hops + 1
                continue
            if answer.status == 429:
                wait = _retry_after(answer.headers)
                if wait is not None and time.monotonic() + wait < deadline:
                    await asyncio.sleep(wait)
                    continue
                later = f"in {wait:g} seconds" if wait is not None else "in a minute"
                raise UpstreamUnavailable(
                    f"GitLab is limiting requests right now; try again {later}.",
                    code="gitlab_unavailable",
                )
            _checked(answer)
            return answer

    async def pages(
        self, caller: Caller, path: str, *, max_pages: int
    ) -> AsyncGenerator[Answer, None]:
        """GET a list page by page (PER_PAGE a page) as GitLab's X-Next-Page leads, at most
        `max_pages`; stops after the last page. Each answer is the caller's to judge (a 403
        or 404 means one thing to one list, another to the next); one that leaves the loop
        after a page that has a `next_page` knows the limit cut the list short."""
        separator = "&" if "?" in path else "?"
        page = "1"
        for _ in range(max_pages):
            answer = await self.get(caller, f"{path}{separator}per_page={PER_PAGE}&page={page}")
            yield answer
            if answer.next_page is None:
                return
            page = answer.next_page

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"Accept": "application/json"},
                # a private CA besides the system store (aiohttp fixed its default at import)
                connector=(
                    aiohttp.TCPConnector(ssl=trust.context(self.ca_bundle))
                    if self.ca_bundle
                    else None
                ),
            )
        return self._session

    async def _fetch(self, caller: Caller, url: URL, method: str) -> Answer:
        """One GET or HEAD, counted; the token goes in the Authorization header only."""
        headers = {"Authorization": f"Bearer {caller.git_token}"}
        started = time.monotonic()
        try:
            async with self._client().request(
                method, url, headers=headers, allow_redirects=False
            ) as resp:
                body = None
                if resp.status == 200 and method == "GET":
                    body = await resp.json(content_type=None)
                elif resp.status == 403:  # says why, in JSON from GitLab itself
                    body = json_or_none(await resp.text())
                answer = Answer(resp.status, body, resp.headers)
        except TimeoutError:
            raise _failed(
                started,
                method,
                "timeout",
                UpstreamTimeout(
                    f"GitLab did not answer within {self.timeout:g} seconds; try again shortly.",
                    code="gitlab_timeout",
                ),
            ) from None
        except (aiohttp.ClientConnectionError, OSError):
            raise _failed(
                started,
                method,
                "unavailable",
                UpstreamUnavailable(
                    f"GitLab at {self.url} cannot be reached; try again shortly.",
                    code="gitlab_unavailable",
                ),
            ) from None
        except (aiohttp.ClientError, ValueError):
            raise _failed(
                started,
                method,
                "invalid_response",
                UpstreamError(
                    "GitLab answered with something that is not valid JSON.", code="gitlab_error"
                ),
            ) from None
        status = answer.status
        error = "server_error" if status >= 500 else "rate_limited" if status == 429 else None
        metrics.observe_upstream("gitlab", method, time.monotonic() - started, error)
        log.debug("GitLab %s %s for %s: %s", method, url.path, caller.name, status)
        return answer

    def _same_api(self, url: URL, location: str) -> URL:
        """Where a redirect points, if that is this GitLab's API; anything else fails closed.

        GitLab builds the Location from what Rack saw: behind a TLS terminator that is
        `http://<host>/…` although the configured URL is `https://<host>`. A Location on
        the configured host (its port, or none given) is followed at the configured scheme
        and port, so the token never travels in clear and never to another host."""
        api = URL(self.api)
        target = url.join(URL(location, encoded=True)) if location else api.origin()
        if (
            target.origin() != api.origin()
            and target.scheme in ("http", "https")
            and (target.host or "").lower() == (api.host or "").lower()
            and target.explicit_port in (None, api.port)
        ):
            target = URL(f"{api.origin()}{target.raw_path_qs}", encoded=True)
        if target.origin() != api.origin() or not target.raw_path.startswith(api.raw_path + "/"):
            raise UpstreamError(
                "GitLab redirected the request to another address; it was not followed.",
                code="gitlab_error",
            )
        return target


def expect_ok(answer: Answer, doing: str) -> None:
    """Any answer but 200 that the caller did not handle is GitLab's error."""
    if answer.status != 200:
        raise UpstreamError(
            f"GitLab answered HTTP {answer.status} when {doing}.", code="gitlab_error"
        )


def json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _failed(started: float, method: str, kind: str, error: UpstreamError) -> UpstreamError:
    """Count a call that got no usable answer, and give back the error to raise."""
    metrics.observe_upstream("gitlab", method, time.monotonic() - started, kind)
    return error


def _checked(answer: Answer) -> None:
    """Turn answers every call treats alike into errors; the caller handles the rest.

    A 403 is about access only when GitLab says nothing else: a token without the
    scope (the operator's fix), a blocked account or pending terms (the user's) are
    told apart here.
    """
    status, body = answer.status, answer.body if isinstance(answer.body, dict) else {}
    if status == 401:
        raise Unauthorized(LOGIN_AGAIN, code="gitlab_token_expired")
    if status == 403 and body.get("error") == "insufficient_scope":
        scopes = str(body.get("scope") or "").split()
        scope = "read_api" if "read_api" in scopes or not scopes else scopes[0]
        raise UpstreamError(
            f"GitLab refused the request because your login's token lacks the "
            f"`{scope}` scope. The operator must register the GitLab application with "
            f"`{scope}` and ask for it (see docs/gitlab.rst); then log in again.",
            code="gitlab_scope_missing",
        )
    message = str(body.get("message") or "")
    if status == 403 and "blocked" in message.lower():
        raise Forbidden(
            "Your GitLab account is blocked; ask a GitLab administrator to unblock it.",
            code="gitlab_account_blocked",
        )
    if status == 403 and "terms of service" in message.lower():
        raise Forbidden(
            "GitLab wants you to accept its terms of service first: open GitLab in your "
            "browser, accept them, then try again.",
            code="gitlab_terms_not_accepted",
        )
    if status >= 500:
        raise UpstreamError(
            f"GitLab failed to answer (HTTP {status}); try again shortly.", code="gitlab_error"
        )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds (GitLab sends a number); None when absent or unreadable."""
    value = headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
