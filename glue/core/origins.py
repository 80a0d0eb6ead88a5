"""Where people reach the embedded default, and whether each user gets an origin of their own.

Decided once, here: the embedded runner (glue.embedded.dev) prints these URLs and
the hub (glue.hub.setup.embedded) serves them, so the two never disagree.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit


def loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def public_origin(env: Mapping[str, str]) -> str:
    """Where people reach the embedded default: NOTEBOOKS_PUBLIC_URL, else the address it
    listens on, named `localhost` when that is loopback, so that users' own domains
    (`<user>.localhost`) resolve to this machine in every browser without DNS (RFC 6761)."""
    public = env.get("NOTEBOOKS_PUBLIC_URL", "").rstrip("/")
    if public:
        return public
    listen = env.get("NOTEBOOKS_LISTEN", "127.0.0.1")
    port = env.get("NOTEBOOKS_PORT", "8000")
    if loopback(listen):
        return f"http://localhost:{port}"
    if listen in ("0.0.0.0", "::"):  # noqa: S104 (every address: show loopback, which reaches it)
        return f"http://127.0.0.1:{port}"
    return f"http://[{listen}]:{port}" if ":" in listen else f"http://{listen}:{port}"


def single_origin_reason(env: Mapping[str, str]) -> str | None:
    """Why every server of the embedded default shares the hub's origin, or None when each
    user has an origin of their own (the default). A name is needed for that: an IP
    address has no subdomains."""
    if env.get("NOTEBOOKS_SINGLE_ORIGIN", "") not in ("", "0"):
        return "NOTEBOOKS_SINGLE_ORIGIN is set"
    host = urlsplit(public_origin(env)).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return (
        f"people reach it at an address ({host}), which has no subdomains: set "
        "NOTEBOOKS_PUBLIC_URL to a name whose subdomains lead here too (a wildcard DNS record)"
    )
