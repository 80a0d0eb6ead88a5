"""A fresh GitLab token for a session's git token component, through the hub.

GitLab rotates refresh tokens: whoever refreshes invalidates everyone else's
copy, so only the hub refreshes GitLab logins. When GitLab refuses the
component's token, the component asks the glue (`POST <prefix>-/git-token`),
and the glue lets the hub do it: one hub request authenticated with the
server's own hub token makes JupyterHub refresh its owner's login
(`BaseHandler.refresh_auth`, after `auth_refresh_age`), then the glue reads
the auth_state with its service token and answers the access token.

The component proves which server it serves with a component key: an HMAC of
`<user>/<server>` under a key derived from the notebooks service's API token,
which both the hub side (minting it at launch) and the glue know.
`glue.core.contracts.component_key` is that one derivation, shared with the hub.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from glue.core.contracts import component_key
from glue.core.errors import BadRequest, Forbidden, NotFound, Unauthorized

if TYPE_CHECKING:
    from glue.service.hubapi import Hub
    from glue.service.servers import Servers

MAX_FIELD = 4096
# a server that exists: its start (restore), its life (push, pull) and its stop (autosave)
LIVE = frozenset({"starting", "running", "stopping"})


@dataclass(frozen=True)
class TokenRequest:
    user: str
    server: str
    hub_token: str = field(repr=False)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> TokenRequest:
        """`{"user", "server", "hub_token"}`, each a non-empty string."""
        values = []
        for name in ("user", "server", "hub_token"):
            value = body.get(name)
            if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
                raise BadRequest(
                    f"Send `{name}` as a non-empty string.", code="invalid_token_request"
                )
            values.append(value)
        return cls(*values)

    def check_key(self, api_token: str, authorization: str) -> None:
        """`Authorization: Bearer <component key>` for exactly this user and server."""
        scheme, _, presented = authorization.partition(" ")
        wanted = component_key(api_token, self.user, self.server)
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), wanted.encode()
        ):
            raise Unauthorized(
                "Send `Authorization: Bearer <component key>` with this server's key.",
                code="invalid_component_key",
            )


async def fresh_token(hub: Hub, servers: Servers, wanted: TokenRequest) -> str:
    """The user's GitLab token after the hub had its chance to refresh it."""
    # this request, with the server's token, is what makes the hub refresh the login
    owner = await hub.token_model(wanted.hub_token)
    if owner is None:
        raise Unauthorized(
            "JupyterHub refused the server's token, or the user must log in again.",
            code="hub_token_refused",
        )
    if owner.get("kind", "user") != "user" or owner.get("name") != wanted.user:
        raise Forbidden("The server's token belongs to someone else.", code="token_not_owned")
    view = await servers.view(wanted.user)
    model = next((m for m in view.servers if m["name"] == wanted.server), None)
    if model is None or model["status"] not in LIVE:
        raise NotFound(f"{wanted.user} has no server {wanted.server}.", code="server_not_found")
    if view.caller.git_token is None:
        raise Unauthorized(
            f"JupyterHub holds no GitLab login for {wanted.user}; they must log in again.",
            code="gitlab_login_required",
        )
    return view.caller.git_token
