"""Who is calling: hub tokens for API clients, hub OAuth and a session cookie for browsers.

Nothing here is kept in process memory that a restart or a second replica
would miss: the OAuth state and the session both live in encrypted,
authenticated cookies whose key derives from the service's secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from cachetools import TTLCache
from cryptography.fernet import Fernet, InvalidToken

from glue.core.errors import Forbidden, Unauthorized
from glue.service.hubapi import Hub

OAUTH_STATE_TTL = 600
SESSION_TTL = 7 * 24 * 3600
TOKEN_CACHE_SECONDS = 30
TOKEN_CACHE_MAX = 4096
METRICS_SCOPE = "read:metrics"


@dataclass(frozen=True)
class Identity:
    """A hub user, and whether the request proved it with the session cookie."""

    name: str
    via_cookie: bool
    session: str  # a hash of the hub token: binds the XSRF token to this login
    model: dict[str, Any]


class Auth:
    def __init__(
        self,
        hub: Hub,
        *,
        service: str,
        prefix: str,
        base_url: str,
        client_id: str,
        callback_url: str,
        secret: bytes,
        metrics_networks: Iterable[str] = (),
        host_cookies: bool = False,
    ):
        self.hub = hub
        self.service = service
        self.prefix = prefix
        self.base_url = base_url
        self.client_id = client_id
        self.callback_url = callback_url
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret, b"cookie")))
        self._xsrf_key = _derive(secret, b"xsrf")
        # where each user's servers have an origin of their own, a page on a user's domain
        # may still set cookies for the hub's parent domain ("cookie tossing", e.g. its own
        # login, to make the visitor act as its author): `__Host-` cookies cannot be set so
        self.host_cookies = host_cookies
        host = "__Host-" if host_cookies else ""
        self.session_cookie = f"{host}{service}-session"
        self.state_cookie = f"{host}{service}-oauth-state"
        self.metrics_networks = [ipaddress.ip_network(n, strict=False) for n in metrics_networks]
        # token hash -> its owner's model with the token's scopes (None: the hub does not
        # know it), briefly: users' and services' tokens alike, so a scrape and a page share it
        self._tokens: TTLCache[str, dict[str, Any] | None] = TTLCache(
            TOKEN_CACHE_MAX, TOKEN_CACHE_SECONDS
        )

    # --- identifying a request ------------------------------------------------

    async def identify(self, request: web.Request) -> Identity | None:
        """The caller, from an `Authorization: token` header or the session cookie."""
        token: str | None = _header_token(request)
        if token:
            return await self._identity(token, via_cookie=False)
        token = self._open(request.cookies.get(self.session_cookie), SESSION_TTL)
        if token:
            return await self._identity(token, via_cookie=True)
        return None

    async def _token_model(self, token: str) -> tuple[str, dict[str, Any] | None]:
        """The token's hash and its owner's model with the token's scopes, cached briefly."""
        key = hashlib.sha256(token.encode()).hexdigest()
        try:
            model = self._tokens[key]
        except KeyError:
            model = self._tokens[key] = await self.hub.token_model(token)
        return key, model

    async def _identity(self, token: str, *, via_cookie: bool) -> Identity | None:
        key, model = await self._token_model(token)
        if model is None or model.get("kind", "user") != "user":
            return None  # unknown, or a service's token: not a person
        scopes = set(model.get("scopes", []))
        if not scopes & {"access:services", f"access:services!service={self.service}"}:
            raise Forbidden(
                f"Your login does not give access to the {self.service} service.",
                code="no_service_access",
            )
        return Identity(model["name"], via_cookie, key, model)

    # --- who may read the metrics ---------------------------------------------

    async def check_metrics(self, request: web.Request) -> None:
        """A token (a user's or a service's) with `read:metrics`, or a direct request from
        `metrics.allowedNetworks`: a request the proxy relayed never counts as direct."""
        if self._from_metrics_network(request):
            return
        token = _header_token(request)
        if not token:
            raise Unauthorized(
                "Send `Authorization: token <hub token>` with a token that has the "
                f"{METRICS_SCOPE} scope.",
                code="not_logged_in",
            )
        _, model = await self._token_model(token)
        if model is None:
            raise Unauthorized("The hub does not know this token.", code="invalid_token")
        if METRICS_SCOPE not in model.get("scopes", []):
            raise Forbidden(f"Reading metrics needs the {METRICS_SCOPE} scope.")

    def _from_metrics_network(self, request: web.Request) -> bool:
        if not self.metrics_networks or "X-Forwarded-For" in request.headers:
            return False
        try:
            address = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return False  # a unix socket or no peer: not a network we know
        return any(address in network for network in self.metrics_networks)

    # --- cross-site request forgery -------------------------------------------

    def xsrf_token(self, identity: Identity) -> str:
        return hmac.new(self._xsrf_key, identity.session.encode(), "sha256").hexdigest()

    def check_xsrf(self, request: web.Request, identity: Identity, form_token: str | None) -> None:
        """Cookie-authenticated changes must carry the token only our own pages know."""
        if not identity.via_cookie:
            return  # a token header cannot be sent by another site
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            raise Forbidden("Cross-site requests are refused.", code="xsrf")
        sent = request.headers.get("X-XSRF-Token") or form_token or ""
        if not hmac.compare_digest(sent, self.xsrf_token(identity)):
            raise Forbidden(
                "This request is missing its form token; reload the page and try again.",
                code="xsrf",
            )

    # --- the OAuth flow with the hub ------------------------------------------

    def login_redirect(self, request: web.Request) -> web.Response:
        """Send a browser to the hub's OAuth authorize page, remembering where it was going."""
        state = secrets.token_urlsafe(16)
        next_url = self.safe_next(request.raw_path)  # as sent: keeps %-escapes
        query = urlencode(
            {
                "client_id": self.client_id,
                "redirect_uri": self.callback_url,
                "response_type": "code",
                "state": state,
            }
        )
        response = web.HTTPFound(f"{self.base_url}hub/api/oauth2/authorize?{query}")
        response.set_cookie(
            self.state_cookie,
            self._seal({"state": state, "next": next_url}),
            max_age=OAUTH_STATE_TTL,
            **self._cookie_options(request),
        )
        return response

    async def callback(self, request: web.Request) -> web.Response:
        """Finish the OAuth flow: check the state, exchange the code, set the session cookie."""
        sealed = self._open(request.cookies.get(self.state_cookie), OAUTH_STATE_TTL)
        state = json.loads(sealed) if sealed else {}
        sent = request.query.get("state", "")
        if not state or not hmac.compare_digest(sent, state.get("state", "")):
            raise Forbidden("The login could not be verified; start again.", code="oauth_state")
        code = request.query.get("code", "")
        token = code and await self.hub.oauth_token(
            {
                "client_id": self.client_id,
                "client_secret": self.hub.service_token,
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.callback_url,
            }
        )
        if not token:
            raise Forbidden("JupyterHub did not accept the login; start again.", code="oauth_code")
        response = web.HTTPFound(self.safe_next(state.get("next", "")))
        response.set_cookie(self.session_cookie, self._seal(token), **self._cookie_options(request))
        response.del_cookie(self.state_cookie, **self._cookie_options(request))
        return response

    def safe_next(self, target: str) -> str:
        """Only paths of this service: no other origin, no protocol-relative tricks."""
        parts = urlsplit(target)
        if (
            parts.scheme
            or parts.netloc
            or not target.startswith(self.prefix)
            or "\\" in target
            or target.startswith("//")
        ):
            return self.prefix
        return target

    # --- sealed cookies ---------------------------------------------------------

    def _cookie_options(self, request: web.Request) -> dict[str, Any]:
        """Scoped to the service, hidden from scripts, not sent cross-site; Secure behind HTTPS.
        `__Host-` cookies are Secure and on `/` by definition."""
        if self.host_cookies:
            return {"path": "/", "httponly": True, "samesite": "Lax", "secure": True}
        secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
        return {"path": self.prefix, "httponly": True, "samesite": "Lax", "secure": secure}

    def _seal(self, value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value)
        return self._fernet.encrypt(text.encode()).decode()

    def _open(self, sealed: str | None, ttl: int) -> str | None:
        if not sealed:
            return None
        try:
            return self._fernet.decrypt(sealed.encode(), ttl=ttl).decode()
        except (InvalidToken, ValueError):
            return None


def _header_token(request: web.Request) -> str:
    """The token of an `Authorization: token <t>` (or `Bearer <t>`) header, or ''."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() in ("token", "bearer") else ""


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, b"renku-notebooks:" + purpose, "sha256").digest()
