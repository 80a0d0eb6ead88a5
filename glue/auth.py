"""Who is calling: hub tokens for API clients, hub OAuth and a session cookie for browsers.

Nothing here is kept in process memory that a restart or a second replica
would miss: the OAuth state and the session both live in encrypted,
authenticated cookies whose key derives from the service's secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from cachetools import TTLCache
from cryptography.fernet import Fernet, InvalidToken

from .errors import Forbidden
from .hub import Hub

OAUTH_STATE_TTL = 600
SESSION_TTL = 7 * 24 * 3600
IDENTITY_CACHE_SECONDS = 30
IDENTITY_CACHE_MAX = 4096
MISSING = object()


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
    ):
        self.hub = hub
        self.service = service
        self.prefix = prefix
        self.base_url = base_url
        self.client_id = client_id
        self.callback_url = callback_url
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret, b"cookie")))
        self._xsrf_key = _derive(secret, b"xsrf")
        self.session_cookie = f"{service}-session"
        self.state_cookie = f"{service}-oauth-state"
        # token hash -> its owner's model (None: not a user's valid token), briefly
        self._cache: TTLCache[str, dict[str, Any] | None] = TTLCache(
            IDENTITY_CACHE_MAX, IDENTITY_CACHE_SECONDS
        )

    # --- identifying a request ------------------------------------------------

    async def identify(self, request: web.Request) -> Identity | None:
        """The caller, from an `Authorization: token` header or the session cookie."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("token", "bearer") and value.strip():
            return await self._identity(value.strip(), via_cookie=False)
        token = self._open(request.cookies.get(self.session_cookie), SESSION_TTL)
        if token:
            return await self._identity(token, via_cookie=True)
        return None

    async def _identity(self, token: str, *, via_cookie: bool) -> Identity | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        model = self._cache.get(key, MISSING)
        if model is MISSING:
            model = self._cache[key] = await self.hub.token_owner(token)
        if model is None:
            return None
        scopes = set(model.get("scopes", []))
        if not scopes & {"access:services", f"access:services!service={self.service}"}:
            raise Forbidden(
                f"Your login does not give access to the {self.service} service.",
                code="no_service_access",
            )
        return Identity(model["name"], via_cookie, key, model)

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
        response.del_cookie(self.state_cookie, path=self.prefix)
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
        """Scoped to the service, hidden from scripts, not sent cross-site; Secure behind HTTPS."""
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


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, b"renku-notebooks:" + purpose, "sha256").digest()
