"""`python -m glue.hub.culler [options]`: jupyterhub-idle-culler through the hub's culling API,
and the removal of paused servers kept too long.

The hub runs this as its culler service (glue.hub.setup.culler_service). It is
jupyterhub-idle-culler with `--url` set to the hub's API under `notebooks/culling`
(glue.hub.pauseapi): there an idle server's DELETE pauses it (`culling.idleAction:
hibernate`) or autosaves it first and then removes it (`stop`, answering 409 when the
save fails, so an idle server whose work cannot be saved keeps running and is tried
again at the next round).

Beside it, every `--cull-every` seconds, a paused server older than
`culling.hibernatedKeepSeconds` (KEEP_PAUSED_ENV; 0 keeps them) is removed through the
hub's saving DELETE, which autosaves its kept workspace first and keeps it when that
fails (tried again at the next round).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any
from urllib.parse import quote

from glue.core.contracts import CULLING_API, HIBERNATED_AT, SAVING_API

KEEP_PAUSED_ENV = "NOTEBOOKS_KEEP_PAUSED_SECONDS"
PAGE = 200  # users a list request asks for (JupyterHub's largest page by default)
log = logging.getLogger("glue.hub.culler")


def culler_url(api_url: str) -> str:
    """The culler's API root below the hub's API URL (JUPYTERHUB_API_URL)."""
    return f"{api_url.rstrip('/')}/{CULLING_API}"


def expired(users: list[dict[str, Any]], keep_seconds: float, now: float) -> list[tuple[str, str]]:
    """(user, server) of every paused server paused more than `keep_seconds` ago."""
    found = []
    for user in users:
        for name, server in (user.get("servers") or {}).items():
            at = (server.get("user_options") or {}).get(HIBERNATED_AT)
            if server.get("ready") or server.get("pending") or not isinstance(at, int | float):
                continue
            if now - at > keep_seconds:
                found.append((user["name"], name))
    return found


async def remove_expired(api_url: str, token: str, keep_seconds: float) -> None:
    """One round: find the paused servers kept too long and remove each, autosave first."""
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError

    client = AsyncHTTPClient()
    headers = {"Authorization": f"token {token}"}
    api = api_url.rstrip("/")
    users: list[dict[str, Any]] = []
    while True:  # page by page: the hub answers at most its page limit (200) at once
        try:
            answer = await client.fetch(
                f"{api}/users?include_stopped_servers=1&offset={len(users)}&limit={PAGE}",
                headers=headers,
            )
        except (HTTPClientError, OSError) as e:
            log.error("Could not list the users' paused servers: %s", e)
            return
        body = json.loads(answer.body)
        page = body["items"] if isinstance(body, dict) else body
        users += page
        if len(page) < PAGE:
            break
    for user, server in expired(users, keep_seconds, time.time()):
        url = f"{api}/{SAVING_API}/users/{quote(user, safe='')}/servers/{quote(server, safe='')}"
        try:
            await client.fetch(
                url, method="DELETE", headers=headers, body=json.dumps({"remove": True}),
                allow_nonstandard_methods=True,
            )
            log.info("Removed %s:%s, paused longer than %s s", user, server, keep_seconds)
        except (HTTPClientError, OSError) as e:
            log.warning("Kept paused %s:%s for now: %s", user, server, e)


def main() -> None:
    from jupyterhub_idle_culler import main as cull
    from tornado.ioloop import IOLoop, PeriodicCallback

    api_url, token = os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"]
    sys.argv.append(f"--url={culler_url(api_url)}")
    keep = float(os.environ.get(KEEP_PAUSED_ENV) or 0)
    every = next(
        (float(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--cull-every=")), 600.0
    )
    if keep:
        logging.basicConfig(level=logging.INFO)

        def sweep() -> None:
            IOLoop.current().add_callback(remove_expired, api_url, token, keep)

        IOLoop.current().add_callback(sweep)
        PeriodicCallback(sweep, 1e3 * every).start()
    cull()


if __name__ == "__main__":
    main()
