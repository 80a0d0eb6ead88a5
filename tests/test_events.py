"""The launch's event stream: the hub's spawn progress relayed as server-sent events.

The first tests follow real launches on the session hub; the last ones drive
the relay with a stand-in hub to check keepalives, state changes and errors
without waiting for real spawns.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from glue.core.config import validate
from glue.core.errors import GlueError, NotFound, UpstreamUnavailable
from glue.core.target import Target
from glue.providers.access import Access
from glue.providers.select import make_provider
from glue.service import events, failures
from glue.service import servers as servers_module
from glue.service.servers import Servers
from testing.hub import Client, RunningHub

Event = tuple[str, dict[str, Any]]


def parse(lines: list[str]) -> tuple[list[Event], int]:
    """The events of a text/event-stream, and how many comment lines it had."""
    found: list[Event] = []
    comments = 0
    name, data = "message", []
    for line in lines:
        if line.startswith(":"):
            comments += 1
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            found.append((name, json.loads("\n".join(data))))
            name, data = "message", []
    return found, comments


def follow(session: requests.Session, url: str) -> tuple[requests.Response, list[Event]]:
    with session.get(url, stream=True, timeout=90) as response:
        lines = list(response.iter_lines(decode_unicode=True))
    return response, parse(lines)[0]


@pytest.fixture
def user(hub: RunningHub) -> Client:
    client = Client(hub, f"ev-{secrets.token_hex(4)}")
    yield client
    hub.remove_all_servers(client.user)


def events_url(client: Client, path: str) -> str:
    return client.url("-/events/" + path)


def test_follow_a_launch_until_ready(hub, repos, user):
    sha = repos["shas"]["demo/hello"][1]
    path = f"demo/hello/{sha}/notebooks/analysis.ipynb"
    launched = user.post(path)
    assert launched.status_code in (201, 202), launched.text
    response, found = follow(user.session, events_url(user, path))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-store"
    names = [name for name, _ in found]
    assert names[-1] == "ready" and set(names[:-1]) == {"progress"}, found
    values = [data["progress"] for _, data in found]
    assert values == sorted(values) and values[-1] == 100, values
    messages = [data["message"] for _, data in found]
    assert "Checking access to demo/hello" in messages
    assert f"Cloning demo/hello at {sha[:7]}" in messages
    assert all("html_message" not in data for _, data in found)
    model = user.get(path).json()
    assert model["status"] == "running"
    assert found[-1][1]["url"] == f"{model['url']}lab/tree/notebooks/analysis.ipynb"
    # where the launch's time went, recorded as it went: each progress event carries the
    # phases done when it was said, the ready event all of them
    launch_phases = ["hub_checks", "clone", "session", "server", "proxy_route"]
    assert list(found[-1][1]["phases"]) == launch_phases, found[-1]
    assert found[-1][1]["phases"] == model["phases"]
    assert all(seconds > 0 for seconds in model["phases"].values()), model["phases"]
    said = [data["phases"] for _, data in found[:-1] if "phases" in data]
    assert said and list(said[-1]) == ["hub_checks", "clone", "session"], found
    # a running server: the stream says ready at once
    _, again = follow(user.session, events_url(user, path))
    assert again == [found[-1]]



def test_a_spawn_failed_at_the_hub_relays_the_hubs_message(hub, user):
    # the glue would refuse an unknown commit; started around it, the hub-side check fails
    target = Target("demo", "hello", secrets.token_hex(20))
    hub.admin("POST", f"users/{user.user}/servers/{target.server_name}", json=target.options())
    hub.wait_failed(user.user, target.server_name)
    path = f"demo/hello/{target.commit_sha}"
    response, found = follow(user.session, events_url(user, path))
    expected = f"Commit {target.commit_sha} was not found in demo/hello."
    assert response.status_code == 200
    ((name, data),) = found
    assert name == "failed"
    assert (data["error"], data["message"], data["reason"]) == (
        "spawn_failed", expected, "unknown_commit"
    )
    assert "Check the link" in data["next_step"] and data["log"] == []
    page = user.get(path, headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert expected in page.text and ">Retry</button>" in page.text
    assert 'data-reason="unknown_commit"' in page.text
    # the server model says the same
    model = user.get(path).json()
    assert model["status"] == "failed"
    assert model["failure"]["reason"] == "unknown_commit"
    assert model["failure"]["message"] == expected


def test_refusals_are_failed_events_not_http_errors(hub, repos, user):
    sha = repos["shas"]["demo/hello"][0]
    cases = [
        (requests.Session(), f"demo/hello/{sha}", "not_logged_in"),
        (user.session, "demo/hello/abc123", "invalid_commit"),
        (user.session, f"demo/hello/{sha}/a//b.ipynb", "invalid_notebook"),
        (user.session, f"demo/nothing/{sha}", "project_not_found"),
        (user.session, f"demo/hello/{sha}", "server_not_found"),
        (Client(hub, "carol").session, f"demo/hello/{sha}", "insufficient_access"),
        (Client(hub, "bob").session, f"demo/private/{sha}", "project_not_found"),
    ]
    for session, path, code in cases:
        response, found = follow(session, events_url(user, path))
        assert response.status_code == 200, path
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert len(found) == 1 and found[0][0] == "failed", (path, found)
        assert found[0][1]["error"] == code, (path, found)
        assert found[0][1]["message"], path


def test_static_files_are_served_and_nothing_else(hub, user):
    script = requests.get(hub.prefix + "-/static/launch.js", timeout=10)
    assert script.status_code == 200
    assert script.headers["Cache-Control"] == "no-cache"  # no version: ask again each time
    assert "javascript" in script.headers["Content-Type"]
    assert "EventSource" in script.text
    for path in ("-/static/../routes.py", "-/static/%2e%2e/routes.py", "-/static/nothing.js",
                 "-/static/launch.js/x", "-/nothing"):
        response = requests.get(hub.prefix + path, timeout=10)
        assert response.status_code == 404, path
        assert response.json()["error"] == "no_route", path



def test_the_launch_page_loads_its_script_by_version(hub, repos, user):
    """The page names the script's current content, which browsers may then keep for good."""
    path = f"demo/hello/{repos['shas']['demo/hello'][0]}"
    assert user.post(path).status_code == 202  # starting: the page follows it with the script
    page = user.get(path, headers={"Accept": "text/html"})
    assert page.status_code == 200, page.text
    static = Path(__file__).parent.parent / "glue" / "service" / "static"
    source = (static / "launch.js").read_bytes()
    version = hashlib.sha256(source).hexdigest()[:12]
    src = f"/services/notebooks/-/static/launch.js?v={version}"
    assert f'<script src="{src}"' in page.text
    script = requests.get(hub.url + src, timeout=10)
    assert script.status_code == 200 and script.content == source
    assert script.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    stale = requests.get(hub.prefix + "-/static/launch.js?v=0123456789ab", timeout=10)
    assert stale.headers["Cache-Control"] == "no-cache"

# --- the relay on its own, with a stand-in hub ----------------------------------------

TARGET = Target("demo", "hello", "a" * 40, "a b.ipynb")
HUB_STATES = {
    "starting": {"ready": False, "pending": "spawn"},
    "running": {"ready": True, "pending": None},
    "stopping": {"ready": False, "pending": "stop"},
    "failed": {"ready": False, "pending": None},
}


class FakeHub:
    """A stand-in for the hub's API: the user's server goes through `statuses` (None: gone),
    one per read, and its progress stream sends `steps` (floats are pauses)."""

    def __init__(self, *steps: Any, statuses: tuple[str | None, ...] = ("starting",)):
        self.steps = steps
        self.statuses = list(statuses)

    async def servers(self, name: str) -> dict[str, Any]:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status is None:
            return {"name": name, "servers": {}}
        server = {
            "name": TARGET.server_name,
            "url": "/user/u/nb/",
            "user_options": TARGET.options(),
            **HUB_STATES[status],
        }
        return {"name": name, "servers": {TARGET.server_name: server}}

    async def progress(self, user: str, server: str) -> AsyncIterator[dict[str, Any]]:
        for step in self.steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
            elif isinstance(step, Exception):
                raise step
            else:
                yield step


def real_servers(hub: FakeHub, tmp_path: Path) -> Servers:
    """The glue's own `Servers`, talking to the stand-in hub."""
    config = validate({
        "images": {"default": "registry.example.org/renku/default:1"},
        "profiles": [{"name": "small", "cpu": 0.5, "memory": "1G"}],
        "provider": {"kind": "local", "root": str(tmp_path)},
    })
    provider = make_provider(config)
    access = Access(provider, config["provider"]["minAccessLevel"])
    return Servers(
        hub,  # type: ignore[arg-type]  # a stand-in answering what Servers asks a Hub
        access,
        provider,
        config,
        base_url="/",
    )


async def relay(
    hub: FakeHub, tmp_path: Path, *, authorize_error: GlueError | None = None
) -> tuple[list[Event], int]:
    servers = real_servers(hub, tmp_path)

    async def handler(request: web.Request) -> web.StreamResponse:
        if authorize_error:
            return await events.refuse(request, authorize_error)
        model = await servers.get("u", TARGET)  # as the routes' authorize step reads it
        return await events.serve(request, servers, "u", TARGET, model, keepalive=0.05)

    app = web.Application()
    app.router.add_get("/events", handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/events")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        text = await response.text()
    return parse(text.split("\n"))


async def test_relay_keeps_quiet_streams_alive_and_sends_text_only(tmp_path: Path):
    hub = FakeHub(
        {"progress": 10, "message": "<b>cloning</b>\n now", "html_message": "<b>x</b>"},
        0.3,
        # the phases recorded so far: known names with seconds only, in launch order
        {"progress": 400, "message": "almost",
         "phases": {"clone": 0.25, "hub_checks": 0.5, "bogus": 1, "session": "1", "server": -1}},
        {"progress": 100, "ready": True, "url": "http://elsewhere.example/"},
        statuses=("starting", "running"),
    )
    found, comments = await relay(hub, tmp_path)
    assert comments >= 3  # keepalives every 0.05 s while the hub was quiet for 0.3 s
    assert list(found[1][1]["phases"]) == ["hub_checks", "clone"]
    assert found == [
        ("progress", {"progress": 10, "message": "<b>cloning</b> now"}),
        ("progress", {"progress": 100, "message": "almost",
                      "phases": {"hub_checks": 0.5, "clone": 0.25}}),
        # the hub's own URL is not used: ours, on our origin, at the page's notebook
        (
            "ready",
            {
                "progress": 100,
                "message": "Your server is ready.",
                "url": "/user/u/nb/lab/tree/a%20b.ipynb",
                "phases": {},
            },
        ),
    ]


async def test_relay_failures_and_state_changes(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(servers_module, "STOP_POLL_SECONDS", 0.01)
    boom = {"progress": 100, "failed": True, "message": "Spawn failed: boom"}
    said = {"error": "spawn_failed", "message": "boom.", "reason": "unknown",
            "next_step": "Launch it again.", "log": []}
    found, _ = await relay(FakeHub(boom), tmp_path)
    assert found == [("failed", said)]
    # a failed server: the hub's last failure, or a sentence when the hub forgot it
    found, _ = await relay(FakeHub(boom, statuses=("failed",)), tmp_path)
    assert found == [("failed", said)]
    found, _ = await relay(FakeHub(statuses=("failed",)), tmp_path)
    assert found[0][1]["message"] == failures.UNKNOWN
    # a timeout after the scheduler said no machine fits: the scheduler's reason
    full = "0/1 nodes are available: 1 Insufficient memory."
    timeout = {"progress": 100, "failed": True,
               "message": "Spawn failed: pod x did not start in 5 seconds!"}
    warning = {"progress": 50, "message": f"[Warning] {full}"}
    found, _ = await relay(FakeHub(warning, timeout), tmp_path)
    assert found[-1][1]["reason"] == "unschedulable"
    assert full in found[-1][1]["message"]
    # stopping: the page is told to render again once the server is gone
    found, _ = await relay(FakeHub(statuses=("stopping", "stopping", None)), tmp_path)
    assert [name for name, _ in found] == ["progress", "reload"]
    assert found[-1][1] == {"status": "stopped"}
    # the hub's stream ends without an outcome while the server stays "starting"
    found, _ = await relay(FakeHub(), tmp_path)
    assert found == [("failed", {"error": "spawn_unknown", "message": events.UNKNOWN_FAILURE})]
    # the hub goes away mid-stream; an unexpected error; a refusal before anything
    gone = UpstreamUnavailable("Lost the connection.", code="hub_unavailable")
    found, _ = await relay(FakeHub({"progress": 1, "message": "a"}, gone), tmp_path)
    assert found[-1] == ("failed", {"error": "hub_unavailable", "message": "Lost the connection."})
    found, _ = await relay(FakeHub(RuntimeError("bug")), tmp_path)
    assert found == [("failed", {"error": "internal_error", "message": events.INTERNAL_FAILURE})]
    refused = NotFound("Project demo/hello was not found.", code="project_not_found")
    found, _ = await relay(FakeHub(statuses=("running",)), tmp_path, authorize_error=refused)
    assert found == [("failed", refused.body())]


async def test_failure_reads_only_a_failed_spawn(tmp_path: Path):
    def failure(hub: FakeHub) -> Any:
        return real_servers(hub, tmp_path).failure("u", TARGET)

    assert await failure(FakeHub({"progress": 100, "failed": True, "message": "x"})) == "x"
    assert await failure(FakeHub({"progress": 0, "message": "Server requested"})) is None
    assert await failure(FakeHub(UpstreamUnavailable("gone"))) is None
    assert await failure(FakeHub()) is None
