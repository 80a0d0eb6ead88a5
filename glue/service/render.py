"""Turn results and errors into responses: JSON for API clients, HTML pages for people."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from glue.core.errors import GlueError

JSON_TYPE = "application/json"


def wants_html(request: web.Request) -> bool:
    """Browsers ask for HTML; everything else (curl's */*, scripts) gets JSON."""
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and JSON_TYPE not in accept


def open_url(model: dict[str, Any], notebook: str) -> str:
    """Where a running server is opened: its URL on the hub's origin, at the notebook if any."""
    url = model["url"]
    return f"{url}lab/tree/{quote(notebook)}" if notebook else url


def ago(timestamp: str | None, now: datetime | None = None) -> str:
    """`3 minutes ago` for a hub timestamp (ISO 8601, UTC); '' when there is none."""
    then = _parse(timestamp) if timestamp else None
    if then is None:
        return ""
    now = now or datetime.now(UTC)
    seconds = int((now - then).total_seconds())
    if seconds < 10:
        return "just now"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "just now"


def _parse(timestamp: str) -> datetime | None:
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return then if then.tzinfo else then.replace(tzinfo=UTC)


def cull_notice(
    cull_at: str | None, warning_seconds: int, now: datetime | None = None
) -> tuple[str, bool] | None:
    """What a page says about the culler's stop at `cull_at`, and whether it is a warning
    (within `culling.warningSeconds`); None when the server is never culled."""
    at = _parse(cull_at) if cull_at else None
    if at is None:
        return None
    left = int((at - (now or datetime.now(UTC))).total_seconds())
    when = f"{at:%Y-%m-%d %H:%M} UTC"
    if left <= 0:
        return f"Idle: it is being stopped (its work is autosaved first), due {when}.", True
    minutes = max(1, round(left / 60))
    text = f"Stops at {when} (in {minutes} minute{'' if minutes == 1 else 's'}) if it stays idle."
    if left <= warning_seconds:
        return f"{text} Use it to keep it running; its work is autosaved when it stops.", True
    return text, False


def memory_notice(memory: dict[str, Any] | None) -> str | None:
    """What a page says of a server whose processes the OOM killer ended (the server model's
    `memory`); None while none was."""
    if not memory or not memory.get("oom_kills"):
        return None
    kills = memory["oom_kills"]
    what = "process was" if kills == 1 else f"{kills} processes were"
    return (
        f"Out of memory: {'one ' if kills == 1 else ''}{what} stopped for using more than "
        f"the profile's {memory['limit']} (a notebook's kernel, say: restart it and use less "
        "memory, or launch with a larger profile)."
    )


DISK_AUTOSAVE_TEXT = {
    "saving": "its work is being autosaved now",
    "saved": "its work up to now has been autosaved",
    "clean": "it had no unsaved work to autosave",
    "failed": "its autosave FAILED: commit and push your work now",
    None: "",
}


def disk_notice(disk: dict[str, Any] | None) -> str | None:
    """What a page says of a server whose workspace is nearly full (the server model's
    `disk`); None while it is not."""
    if not disk or not disk.get("near_limit"):
        return None
    used = f"{disk['used_percent']}% of" if disk.get("used_percent") is not None else "nearly"
    saved = DISK_AUTOSAVE_TEXT.get(disk.get("autosave"), "")
    return (
        f"Disk nearly full: the workspace uses {used} the profile's {disk['limit']}"
        f"{'; ' + saved if saved else ''}. Delete files you do not need, or launch with a "
        "larger profile: writes past the limit fail."
    )


class Renderer:
    def __init__(self, *, prefix: str, base_url: str, cull_warning_seconds: int = 0):
        self.prefix = prefix
        self.env = Environment(
            loader=PackageLoader("glue.service", "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(prefix=prefix, base_url=base_url, open_url=open_url)
        self.env.filters["ago"] = ago
        self.env.filters["cull_notice"] = lambda at: cull_notice(at, cull_warning_seconds)
        self.env.filters["memory_notice"] = memory_notice
        self.env.filters["disk_notice"] = disk_notice

    @staticmethod
    def json(data: Any, status: int = 200) -> web.Response:
        return web.Response(
            text=json.dumps(data, indent=None), status=status, content_type=JSON_TYPE
        )

    def page(self, template: str, status: int = 200, **context: Any) -> web.Response:
        html = self.env.get_template(template).render(**context)
        return web.Response(
            text=html,
            status=status,
            content_type="text/html",
            headers={"Cache-Control": "no-store", "Content-Security-Policy": self.csp()},
        )

    @staticmethod
    def csp() -> str:
        """Our pages load nothing from elsewhere (clusters may have no internet)."""
        return (
            "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self'; "
            "img-src 'self' data:; frame-ancestors 'self'; form-action 'self'; base-uri 'none'"
        )

    def error(self, request: web.Request, error: GlueError) -> web.Response:
        if wants_html(request):
            return self.page("error.html", error.status, error=error)
        return self.json(error.body(), error.status)
