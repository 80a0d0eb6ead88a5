"""The logs of one server: the clone step's and the server's own output, as a tail.

The embedded default's local spawner writes one file per server (`log_path`),
beside the workspaces, never inside a workspace; the glue runs on the same
machine and reads its tail. Nothing else writes or reads these files.

No log ever carries a token: the clone step never prints one, and both the
writer and the reader scrub the caller's git token (`scrub`) all the same.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import deque
from pathlib import Path

from glue.core.config import Config

MAX_LINES = 1000
DEFAULT_LINES = 100
MAX_LINE_CHARS = 2000
SCRUBBED = "[secret]"
# what looks like a credential whoever's it is: a URL's password (`https://oauth2:<t>@`),
# a token in a query (`?token=<t>`), a GitLab personal, OAuth or deploy token by its prefix
TOKEN_LIKE = re.compile(
    r"(://[^/\s:@]*:)[^/\s@]+(?=@)"
    r"|([?&](?:token|access_token|private_token)=)[^&\s]+"
    r"|\bgl(?:pat|oas|dt|rt|ft|cbt)-[\w-]{16,}",
    re.IGNORECASE,
)


def log_path(config: Config, user: str, server_name: str) -> Path:
    """`<workspaceRoot>.logs/<user>/<server>.log`: a sibling of the workspaces, so no user's
    server (or a user named like a directory) can see or replace it."""
    root = Path(str(config["spawner"]["workspaceRoot"]).rstrip("/") + ".logs")
    return root / user / f"{server_name}.log"


def scrub(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret`, and anything token-like, replaced."""
    text = text.replace(secret, SCRUBBED) if secret else text
    return TOKEN_LIKE.sub(lambda m: (m[1] or m[2] or "") + SCRUBBED, text)


def open_for_server(config: Config, user: str, server_name: str) -> int:
    """A fresh log file for a launch (mode 0600), as a file descriptor the spawner hands on."""
    path = log_path(config, user, server_name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)


def _tail(path: Path, lines: int) -> list[str] | None:
    try:
        with path.open(encoding="utf-8", errors="replace") as log:
            kept = deque(log, maxlen=lines)
    except FileNotFoundError:
        return None
    return [line.rstrip("\n")[:MAX_LINE_CHARS] for line in kept]


async def tail(
    config: Config, user: str, server_name: str, lines: int, secret: str | None
) -> list[str] | None:
    """The last `lines` lines of the server's log, scrubbed; None when it has none."""
    found = await asyncio.to_thread(_tail, log_path(config, user, server_name), lines)
    return None if found is None else [scrub(line, secret) for line in found]


def remove(config: Config, user: str, server_name: str) -> None:
    """The server is removed: its log goes with it."""
    log_path(config, user, server_name).unlink(missing_ok=True)
