"""Security: cross-site requests, login redirects, other users' servers, no identity, token leaks.

Browsers are real sessions (requests.Session) that log in through the hub's
login form and the glue's OAuth flow, so the cookies and redirects are the
ones a browser gets.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psutil
import pytest
import requests

from glue.service.auth import Auth
from testing.contract import CONTRACT, PREFIX, assert_conforms, fuzz, sse_events
from testing.hub import Client, RunningHub
from testing.kernels import single_user_processes
from testing.logins import HTML, Browser
from testing.net import listening_pid

# the glue's cookies (`__Host-` ones only over HTTPS: glue.core.config.host_cookies)
SESSION, STATE = "notebooks-session", "notebooks-oauth-state"


def launch_path(repos: dict, index: int = 0, project: str = "demo/hello") -> str:
    return f"{project}/{repos['shas'][project][index]}"




@pytest.fixture
def browser(hub: RunningHub) -> Browser:
    hub.remove_all_servers("brenda")
    browser = Browser(hub, "brenda")
    browser.log_in_to_hub()
    yield browser
    hub.remove_all_servers("brenda")


# --- cross-site requests --------------------------------------------------------------------------


def test_cookie_requests_need_the_page_token(hub: RunningHub, browser: Browser, repos: dict):
    path = launch_path(repos, 2)
    page = browser.open(path)
    assert page.status_code == 200 and page.url == hub.prefix + path, page.url
    assert SESSION in browser.session.cookies  # set by the glue's oauth_callback
    cookie = next(c for c in browser.session.cookies if c.name == SESSION)
    assert cookie.path == PREFIX + "/" and cookie.has_nonstandard_attr("HttpOnly")
    token = browser.xsrf(page)

    # a form posted from another site carries the cookie but not the token
    response = browser.request("POST", path, data={"profile": "small"})
    assert response.status_code == 403 and response.json()["error"] == "xsrf"
    response = browser.request("POST", path, data={"profile": "small", "_xsrf": "0" * 64})
    assert response.status_code == 403 and response.json()["error"] == "xsrf"
    # even with the token, a browser that says the request is cross-site is refused
    response = browser.request(
        "POST", path, data={"profile": "small", "_xsrf": token},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 403 and response.json()["error"] == "xsrf"
    response = browser.request("DELETE", path)
    assert response.status_code == 403 and response.json()["error"] == "xsrf"
    response = browser.request("POST", path, json={}, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert hub.hub_servers("brenda") == {}

    # the page's own form works: 303 back to the page, and the server starts
    response = browser.request(
        "POST", path, data={"profile": "small", "_xsrf": token},
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert response.status_code == 303 and response.headers["Location"] == PREFIX + "/" + path
    assert len(hub.hub_servers("brenda")) == 1
    # and a script of the page, with the token in a header
    response = browser.request("DELETE", path, headers={"X-XSRF-Token": token})
    assert response.status_code in (202, 204)
    # the token belongs to this login: another user's page token does not work for brenda
    other = Browser(hub, "brenda2")
    other.log_in_to_hub()
    other_token = other.xsrf(other.open(path))
    assert other_token != token
    response = browser.request("POST", path, data={"_xsrf": other_token})
    assert response.status_code == 403


# --- where a login may lead -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "///evil.example/",
        "/\\evil.example/",
        "\\\\evil.example/",
        "http:/evil.example",
        "javascript:alert(1)",
        "/services/notebooksevil/",
        "/services/notebooks/\\..\\..\\evil",
        "/hub/home",
        "",
    ],
)
def test_safe_next_keeps_logins_on_the_service(target: str) -> None:
    auth = Auth(
        None,  # type: ignore[arg-type]  # safe_next never asks the hub
        service="notebooks",
        prefix="/services/notebooks/",
        base_url="/",
        client_id="service-notebooks",
        callback_url="/services/notebooks/oauth_callback",
        secret=b"k" * 32,
    )
    assert auth.safe_next(target) == "/services/notebooks/"
    assert auth.safe_next("/services/notebooks/demo/x?y=1") == "/services/notebooks/demo/x?y=1"


def test_login_returns_to_the_page_it_began_on_and_nowhere_else(hub: RunningHub, repos: dict):
    browser = Browser(hub, "navigator")
    browser.log_in_to_hub()
    page = browser.open("?filter=mine")
    assert page.status_code == 200
    hops = [urlsplit(r.headers["Location"]) for r in page.history]
    # glue -> hub authorize -> glue callback -> the page: never another origin
    assert [h.path for h in hops][-1] == PREFIX + "/"
    for hop in hops:
        assert hop.netloc in ("", urlsplit(hub.url).netloc), hop
    assert urlsplit(page.url).query == "filter=mine"


def test_oauth_callback_needs_the_state_of_this_browser(hub: RunningHub) -> None:
    # browser A begins a login: the glue sends it to the hub with a state it keeps in a cookie
    a = Browser(hub, "victim")
    a.log_in_to_hub()
    start = a.session.get(hub.prefix, headers=HTML, timeout=30, allow_redirects=False)
    assert start.status_code == 302
    authorize = a.session.get(hub.absolute(start.headers["Location"]), timeout=30,
                              allow_redirects=False)
    callback = authorize.headers["Location"]
    assert urlsplit(callback).path == PREFIX + "/oauth_callback"
    state = parse_qs(urlsplit(callback).query)["state"][0]

    # an attacker who got the callback URL (code and state) cannot finish A's login elsewhere
    attacker = requests.Session()
    response = assert_conforms(
        attacker.get(hub.absolute(callback), timeout=30, allow_redirects=False)
    )
    assert response.status_code == 403 and response.json()["error"] == "oauth_state"
    # a forged state cookie does not open either
    attacker.cookies.set(STATE, "forged", path=PREFIX + "/")
    response = assert_conforms(
        attacker.get(hub.absolute(callback), timeout=30, allow_redirects=False)
    )
    assert response.status_code == 403
    # nor does A's own cookie with a state that is not A's
    forged = callback.replace(state, state[::-1])
    response = assert_conforms(
        a.session.get(hub.absolute(forged), timeout=30, allow_redirects=False)
    )
    assert response.status_code == 403 and response.json()["error"] == "oauth_state"
    # A itself completes the login
    copied = a.session.cookies.copy()
    done = a.session.get(hub.absolute(callback), timeout=30, allow_redirects=False)
    assert done.status_code == 302 and done.headers["Location"] == PREFIX + "/"
    assert STATE not in a.session.cookies  # used up
    # and the code cannot be used twice, even with the state cookie it came with
    again = requests.Session()
    again.cookies = copied
    response = assert_conforms(again.get(hub.absolute(callback), timeout=30, allow_redirects=False))
    assert response.status_code == 403 and response.json()["error"] == "oauth_code"


@pytest.mark.parametrize("name", [".", "..", "a/b", "tab\there", "100%"])
def test_names_the_hubs_urls_cannot_carry_are_refused_at_login(hub: RunningHub, name: str):
    browser = Browser(hub, name)
    form = browser.session.get(f"{hub.url}/hub/login", timeout=30)
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
    assert xsrf
    response = browser.session.post(
        f"{hub.url}/hub/login",
        data={"username": name, "password": "any password", "_xsrf": xsrf[1]},
        timeout=30,
        allow_redirects=False,
    )
    assert response.status_code == 403, response.status_code
    assert "jupyterhub-session-id" not in browser.session.cookies
    users = hub.admin("GET", "users", params={"limit": 1000}).json()
    assert name not in [user["name"] for user in users]


# --- other users' servers -------------------------------------------------------------------------


def test_a_user_can_neither_see_nor_stop_anothers_server(hub: RunningHub, repos: dict):
    hub.remove_all_servers("owner")
    hub.remove_all_servers("intruder")
    owner, intruder = Client(hub, "owner"), Client(hub, "intruder")
    path = launch_path(repos, 1)
    try:
        assert assert_conforms(owner.post(path)).status_code in (201, 202)
        model = owner.wait_running(path)
        assert assert_conforms(intruder.get(path)).status_code == 404
        assert assert_conforms(intruder.delete(path)).status_code == 404
        assert assert_conforms(intruder.get("")).json() == {"servers": []}
        user = assert_conforms(intruder.get("user")).json()
        assert user["name"] == "intruder" and model["name"] not in user["servers"]
        events = sse_events(assert_conforms(intruder.get(f"-/events/{path}")).text)
        assert events[-1]["event"] == "failed" and "server_not_found" in events[-1]["data"]
        # the server itself, through the proxy: the hub lets only its owner in
        response = intruder.session.get(f"{hub.absolute(model['url'])}api/contents/", timeout=30,
                                        allow_redirects=False)
        assert response.status_code in (302, 403), response.status_code
        assert "README.md" not in response.text
        # and the hub API does not let the intruder stop it either
        response = intruder.session.delete(
            f"{hub.url}/hub/api/users/owner/servers/{model['name']}", timeout=30)
        assert response.status_code in (403, 404)
        assert assert_conforms(owner.get(path)).json()["status"] == "running"
    finally:
        hub.remove_all_servers("owner")


# --- no identity ---------------------------------------------------------------------------


# the badge is an image in READMEs, fetched without a login
PUBLIC = {"/health", "/openapi.json", "/oauth_callback", "/-/static/{file}", "/-/badge.svg"}
# a session's git component proves itself with its own key (tests/test_gitproxy.py checks it)
OWN_KEY = {"/-/git-token"}


def concrete(template: str, repos: dict) -> str:
    sha = repos["shas"]["demo/hello"][0]
    return (
        template.replace("{namespace}", "demo").replace("{project}", "hello")
        .replace("{commit_sha}", sha).replace("{notebook}", "notebooks/analysis.ipynb")
        .replace("{file}", "launch.js")
    )


def test_every_endpoint_without_identity_is_401_or_a_login(hub: RunningHub, repos: dict):
    checked = 0
    for template, item in CONTRACT.paths.items():
        for method in ("get", "post", "delete"):
            if method not in item or template in PUBLIC | OWN_KEY:
                continue
            url = hub.prefix.rstrip("/") + concrete(template, repos)
            # no identity, a token the hub does not know (told apart: issue 14), a forged cookie
            for headers, code in (
                ({}, "not_logged_in"),
                ({"Authorization": "token not-a-token"}, "invalid_token"),
                ({"Cookie": "notebooks-session=forged"}, "not_logged_in"),
            ):
                response = assert_conforms(requests.request(
                    method, url, headers=headers, timeout=30, allow_redirects=False))
                checked += 1
                if template.startswith("/-/events/"):
                    # an EventSource cannot read statuses: the refusal is the stream's event
                    events = sse_events(response.text)
                    assert response.status_code == 200 and events[-1]["event"] == "failed"
                    assert code in events[-1]["data"]
                else:
                    assert response.status_code == 401, (method, template, headers)
                    assert response.json()["error"] == code, (method, template, headers)
            if method == "get" and not template.startswith(("/-/", "/metrics")):
                page = assert_conforms(requests.get(url, headers=HTML, timeout=30,
                                                    allow_redirects=False))
                assert page.status_code == 302, (template, page.status_code)
                assert page.headers["Location"].startswith("/hub/api/oauth2/authorize?")
    assert checked >= 3 * 10


# --- tokens never leak ----------------------------------------------------------------------


def glue_token(hub: RunningHub) -> str:
    pid = listening_pid(hub.glue_port)
    assert pid is not None
    return psutil.Process(pid).environ()["JUPYTERHUB_API_TOKEN"]




def test_tokens_appear_nowhere(hub: RunningHub, repos: dict, tmp_path: Path) -> None:
    """After launches and fuzzing: logs, answers, server environments, clones, process table."""
    hub.remove_all_servers("scanned")
    client = Client(hub, "scanned")
    responses = []
    try:
        for index in (0, 1):
            path = launch_path(repos, index, "demo/other")
            responses.append(assert_conforms(client.post(path)))
            client.wait_running(path)
            responses += [assert_conforms(client.get(path)), assert_conforms(client.get(""))]
            responses.append(assert_conforms(client.get("user")))
        responses.append(assert_conforms(client.get(f"-/events/{path}")))
        document = requests.get(hub.prefix + "openapi.json", timeout=10).json()
        report = fuzz(tmp_path, document, f"http://127.0.0.1:{hub.glue_port}{PREFIX}",
                      hub.tokens["scanned"], 10, "--phases", "fuzzing")
        assert report["test_cases"]["generated"] > 0  # traffic only: test_contract judges it

        secrets = {f"user token of {u}": t for u, t in hub.tokens.items()}
        secrets["the glue's service token"] = glue_token(hub)
        leaks = []

        def scan(where: str, text: str | bytes) -> None:
            data = text if isinstance(text, bytes) else text.encode()
            leaks.extend(f"{name} in {where}" for name, s in secrets.items() if s.encode() in data)

        scan("the hub and glue log", hub.log())
        for response in responses:
            scan(f"the answer to {response.request.method} {response.request.url}",
                 response.content + str(response.headers).encode())
        servers = single_user_processes()
        assert servers, "no single-user server to look at"
        for process in servers:
            with contextlib.suppress(psutil.Error):
                scan(f"the environment of server pid {process.pid}",
                     "\n".join(f"{k}={v}" for k, v in process.environ().items()))
                scan(f"the command line of server pid {process.pid}", " ".join(process.cmdline()))
        clones = list(hub.workspaces.glob("*/*/.git"))
        assert clones
        for git_dir in clones:
            for file in git_dir.rglob("*"):
                if file.is_file():
                    scan(str(file), file.read_bytes())
        table = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True)
        scan("the process table", table.stdout)
        assert not leaks, leaks
    finally:
        hub.remove_all_servers("scanned")
