"""The glue keeps the contract of glue/openapi.yaml, whatever it is sent.

- The document is valid OpenAPI 3.1 (openapi-spec-validator), the glue serves
  it at `<prefix>openapi.json`, and every route the glue has is in it.
- `assert_conforms(response)` checks one response against it (status,
  content type, body schema, server-sent events, required headers); the
  tests of this module and of test_security, test_faults and test_metrics
  pass every response they see through it.
- schemathesis generates requests from the served document (examples,
  coverage and fuzzing phases, positive and negative data, every check) and
  sends them to the running glue with a user's token: zero 5xx and zero
  responses outside the document. NOTEBOOKS_FUZZ_EXAMPLES sets the cases per
  operation and phase (default 40: about 2,000 requests in total; `make fuzz`
  sends 250 a phase);
  NOTEBOOKS_FUZZ_VIA_PROXY=1 sends them through the hub's proxy instead of
  straight to the glue.
- Nasty requests by hand: huge and deep bodies, unicode and control
  characters in every path segment, wrong content types, 10,000-character
  notebook paths: each answered with its documented 4xx JSON, and nothing
  spawned.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import yaml
from openapi_spec_validator import validate as validate_openapi

from glue.core import target
from glue.core.errors import GlueError
from testing.contract import CONTRACT, DOCUMENT, PREFIX, assert_conforms, fuzz, raw
from testing.hub import Client, RunningHub, log_mark, log_since

# per operation and phase; the patterns of ref links make generation slow: 120 took 5 min of
# the suite's 2 cores, 40 takes under 2 (`make fuzz` is the deep run)
FUZZ_EXAMPLES = int(os.environ.get("NOTEBOOKS_FUZZ_EXAMPLES", "40"))
FUZZ_LAUNCH_EXAMPLES = int(os.environ.get("NOTEBOOKS_FUZZ_LAUNCH_EXAMPLES", "6"))
FUZZ_VIA_PROXY = os.environ.get("NOTEBOOKS_FUZZ_VIA_PROXY") == "1"
SHA0 = "0123456789abcdef0123456789abcdef01234567"


# --- checking one response against the document ------------------------------------------














# --- the document itself ---------------------------------------------------------------------


def test_document_is_valid_openapi() -> None:
    document = yaml.safe_load(DOCUMENT.read_text())
    validate_openapi(document)
    assert document["openapi"].startswith("3.1")


def test_served_document_is_valid_and_filled_in(hub: RunningHub) -> None:
    response = assert_conforms(requests.get(hub.prefix + "openapi.json", timeout=10))
    assert response.status_code == 200
    document = response.json()
    validate_openapi(document)
    assert document["servers"][0]["url"] == PREFIX
    options = document["components"]["schemas"]["LaunchOptions"]
    assert options["properties"]["profile"]["enum"] == ["small", "large"]
    assert "lfs" not in options["properties"]  # launch.lfsOption is off
    assert document["components"]["securitySchemes"]["session"]["name"] == "notebooks-session"


def test_every_route_of_the_glue_is_documented(tmp_path: Path) -> None:
    """The app's router and the document name the same endpoints (HEAD aside)."""
    from glue.core.config import validate
    from glue.service.app import HubSettings, build

    config = validate(
        {
            "images": {"default": "registry.example.org/x:1"},
            "profiles": [{"name": "small", "cpu": 1, "memory": "1G"}],
            "provider": {"kind": "local", "root": str(tmp_path)},
        }
    )
    settings = HubSettings.from_env(config, {"JUPYTERHUB_API_TOKEN": "unused"})
    app = build(config, settings)
    routed = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        canonical = route.resource.canonical.removeprefix(PREFIX) or "/"
        canonical = canonical.replace("{tail}", "{namespace}/{project}/{commit_sha}")
        routed.add((route.method.lower(), canonical))
    documented = set()
    for path, item in CONTRACT.paths.items():
        for method in ("get", "post", "put", "patch", "delete"):
            if method in item and not path.endswith("/{notebook}"):
                documented.add((method, path))
    assert routed == documented


# --- fuzzing with schemathesis -----------------------------------------------------------------





def assert_clean(report: dict[str, Any]) -> None:
    cases = report["test_cases"]
    assert report["returncode"] == 0 and not report["failures"] and not report["errors"], (
        f"{len(report['failures'])} failures, {len(report['errors'])} errors:\n"
        + report["output"][-12000:]
    )
    assert cases["with_failures"] == 0 and cases["errored"] == 0


@pytest.fixture(scope="module")
def fuzzer(hub: RunningHub) -> Client:
    hub.remove_all_servers("fuzzer")
    client = Client(hub, "fuzzer")
    yield client
    hub.remove_all_servers("fuzzer")


def glue_url(hub: RunningHub) -> str:
    return hub.prefix.rstrip("/") if FUZZ_VIA_PROXY else f"http://127.0.0.1:{hub.glue_port}{PREFIX}"


# about 2,000 requests over 21 operations by default
@pytest.mark.timeout(900)
def test_fuzz_every_operation(
    hub: RunningHub, fuzzer: Client, repos: dict, tmp_path: Path
) -> None:
    """Thousands of generated requests: zero 5xx, zero answers outside the document."""
    document = requests.get(hub.prefix + "openapi.json", timeout=10).json()
    log_before = len(hub.log())
    report = fuzz(tmp_path, document, glue_url(hub), hub.token_for("fuzzer"), FUZZ_EXAMPLES)
    assert_clean(report)
    generated = report["test_cases"]["generated"]
    assert report["operations"]["tested"] == len(
        [
            m
            for item in document["paths"].values()
            for m in item
            if m in ("get", "post", "delete", "patch")
        ]
    )
    # the count scales with NOTEBOOKS_FUZZ_EXAMPLES
    assert generated >= 12 * FUZZ_EXAMPLES, generated
    # random projects and commits do not exist: nothing of them was ever started; the stateful
    # phase may follow the launcher's `commit_sha` link to a real launch, of a real commit only
    real = {
        target.Target(*path.rsplit("/", 1), sha).server_name
        for path, shas in repos["shas"].items()
        for sha in shas
    }
    assert set(hub.hub_servers("fuzzer")) <= real, hub.hub_servers("fuzzer")
    log = hub.log()[log_before:]
    glue_lines = [line for line in log.splitlines() if " INFO glue request id=" in line]
    assert len(glue_lines) >= generated  # every request was answered and logged by the glue
    assert not [line for line in glue_lines if " status=5" in line]
    assert "unexpected error in" not in log  # the error middleware's log line of a 500


def test_fuzz_launches_of_real_commits(hub: RunningHub, repos: dict, tmp_path: Path) -> None:
    """The same, with URLs naming real projects and commits: real launches, stops and events."""
    user = "fuzzlauncher"
    hub.remove_all_servers(user)
    document = requests.get(hub.prefix + "openapi.json", timeout=10).json()
    parameters = document["components"]["parameters"]
    parameters["Namespace"]["schema"] = {"enum": ["demo", "group/sub"]}
    parameters["Project"]["schema"] = {"enum": ["hello", "other", "deep"]}
    parameters["CommitSha"]["schema"] = {"enum": repos["shas"]["demo/hello"]}
    try:
        report = fuzz(
            tmp_path,
            document,
            glue_url(hub),
            hub.token_for(user),
            FUZZ_LAUNCH_EXAMPLES,
            "--phases",
            "examples,fuzzing",
            "--mode",
            "positive",
            "--include-path-regex",
            "commit_sha",
        )
        assert_clean(report)
        servers = hub.hub_servers(user)
        assert len(servers) <= 3  # launch.serversPerUser
        launched = [line for line in hub.log().splitlines() if f"user={user} action=POST" in line]
        assert any("status=201" in line or "status=202" in line for line in launched)
    finally:
        hub.remove_all_servers(user)


# --- nasty requests, by hand ---------------------------------------------------------------------


@pytest.fixture
def nasty(hub: RunningHub) -> Client:
    hub.remove_all_servers("nasty")
    client = Client(hub, "nasty")
    yield client
    assert hub.hub_servers("nasty") == {}, "a nasty request started a server"


def launch_path(repos: dict, notebook: str = "") -> str:
    path = f"{PREFIX}/demo/hello/{repos['shas']['demo/hello'][0]}"
    return f"{path}/{notebook}" if notebook else path


def error_of(response: requests.Response) -> str:
    assert_conforms(response)
    return response.json()["error"]


def test_huge_bodies_are_413(hub: RunningHub, nasty: Client, repos: dict) -> None:
    token = hub.token_for("nasty")
    big = b'{"profile": "' + b"x" * 200_000 + b'"}'
    for content_type in ("application/json", "application/x-www-form-urlencoded", "text/plain"):
        response = raw(
            hub.glue_port, "POST", launch_path(repos), token=token, body=big,
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 413 or (
            content_type == "text/plain" and response.status_code == 415
        ), response.content[:200]
        assert error_of(response) in ("payload_too_large", "unsupported_media_type")
    # through the proxy too, with a streamed body of unannounced length
    response = nasty.post(
        launch_path(repos).removeprefix(PREFIX),
        data=iter([b"[" * 50_000] * 4),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413 and error_of(response) == "payload_too_large"


def test_deep_json_is_refused(hub: RunningHub, nasty: Client, repos: dict) -> None:
    token = hub.token_for("nasty")
    headers = {"Content-Type": "application/json"}
    deep = b"[" * 100_000 + b"]" * 100_000  # 200 kB: over launch.maxBodyBytes
    response = raw(hub.glue_port, "POST", launch_path(repos), token=token, body=deep,
                   headers=headers)
    assert response.status_code == 413 and error_of(response) == "payload_too_large"
    # just under the body limit, deep enough to exhaust the JSON parser's recursion
    for opening, closing in ((b"[", b"]"), (b'{"a":', b"}")):
        depth = 60_000 // (len(opening) + len(closing))
        body = opening * depth + b"1" + closing * depth
        response = raw(hub.glue_port, "POST", launch_path(repos), token=token, body=body,
                       headers=headers)
        assert response.status_code == 400 and error_of(response) == "invalid_json"
    for body in (b"\xff\xfe not utf-8", b'{"profile": "small"'):
        response = raw(hub.glue_port, "POST", launch_path(repos), token=token, body=body,
                       headers=headers)
        assert response.status_code == 400 and error_of(response) == "invalid_json"
    response = raw(hub.glue_port, "POST", launch_path(repos), token=token, body=b"{}",
                   headers={"Content-Type": "application/json; charset=no-such-charset"})
    assert response.status_code == 400 and error_of(response) == "invalid_json"


NASTY_TEXT = [
    "é",  # a letter outside ASCII
    "日本語",
    "\u202e",  # right-to-left override
    "\ufeff",  # byte order mark
    "😀",
    "\x00",
    "\x1b[31m",
    "\n",
    "\r\n",
    "\t",
    "\x7f",
    "%",
    "a b",
    "..",
    "\\",
]


@pytest.mark.parametrize("text", NASTY_TEXT, ids=lambda t: t.encode("unicode_escape").decode())
def test_unicode_and_control_characters_in_every_segment(
    hub: RunningHub, nasty: Client, text: str
) -> None:
    """Percent-encoded, as clients send them: the documented 400, or 404 for a valid path.

    The commit is one no repository has, so even a valid path cannot start anything.
    """
    token = hub.token_for("nasty")
    segments = {
        "namespace": ("demo{t}", "hello", SHA0, ""),
        "subgroup": ("demo/{t}", "hello", SHA0, ""),
        "project": ("demo", "hel{t}lo", SHA0, ""),
        "sha": ("demo", "hello", SHA0[:20] + "{t}" + SHA0[20:39], ""),
        "notebook": ("demo", "hello", SHA0, "nb{t}.ipynb"),
        "notebook-dir": ("demo", "hello", SHA0, "{t}/nb.ipynb"),
    }
    for where, parts in segments.items():
        filled = [p.replace("{t}", text) for p in parts]
        tail = "/".join(p for p in filled if p)
        try:
            target.parse(tail)
            expected = (404, {"server_not_found", "commit_not_found", "project_not_found"})
        except GlueError as e:
            expected = (e.status, {e.code})
        path = "/".join(quote(p, safe="/") for p in filled if p)
        for method in ("GET", "POST", "DELETE"):
            wanted = expected
            if method == "GET" and not target.has_sha(tail):  # a link by ref (test_links)
                readable = target.ref_candidates(tail)
                wanted = (404, {"ref_not_found"}) if readable else (400, {"invalid_path"})
            response = raw(hub.glue_port, method, f"{PREFIX}/{path}", token=token)
            assert response.status_code == wanted[0], (where, method, response.content[:200])
            assert error_of(response) in wanted[1], (where, method)


def test_raw_bytes_in_the_request_line_are_refused(hub: RunningHub, nasty: Client,
                                                     repos: dict) -> None:
    """Unencoded non-ASCII or control bytes are not HTTP: the glue's HTTP parser refuses them."""
    token = hub.token_for("nasty")
    for text in ("é", "\x01", "\x7f"):
        path = launch_path(repos, "nb" + text + ".ipynb").encode()
        with socket_to(hub.glue_port) as sock:
            sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: token "
                         + token.encode() + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0], answer[:200]


def test_wrong_content_types_are_415(hub: RunningHub, nasty: Client, repos: dict) -> None:
    token = hub.token_for("nasty")
    for content_type in ("text/plain", "application/xml", "application/json-patch+json",
                         "application/octet-stream", "image/png", "text/html"):
        response = raw(hub.glue_port, "POST", launch_path(repos), token=token,
                       body=b'{"profile": "small"}', headers={"Content-Type": content_type})
        assert response.status_code == 415, (content_type, response.content[:200])
        assert error_of(response) == "unsupported_media_type"
    # a body without any content type is bytes of no known kind, too
    response = raw(hub.glue_port, "POST", launch_path(repos), token=token, body=b"profile=small")
    assert response.status_code == 415 and error_of(response) == "unsupported_media_type"
    # a form that cannot be parsed
    for content_type, body in (
        ("multipart/form-data", b"--x\r\n\r\n"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="\x10\r'
                                             b'"\r\n\r\nv\r\n--x--\r\n'),
    ):
        response = raw(hub.glue_port, "POST", launch_path(repos), token=token, body=body,
                       headers={"Content-Type": content_type})
        assert response.status_code == 400, (content_type, response.content[:300])
        assert error_of(response) == "invalid_form"


@pytest.mark.parametrize("length", [4097, 10_000])
def test_long_notebook_paths_are_400(hub: RunningHub, nasty: Client, repos: dict,
                                     length: int) -> None:
    token = hub.token_for("nasty")
    for notebook in ("x" * length, "é" * length):
        for method in ("GET", "POST", "DELETE"):
            path = launch_path(repos, quote(notebook))
            response = raw(hub.glue_port, method, path, token=token)
            assert response.status_code == 400, (method, len(path), response.content[:200])
            assert error_of(response) == "invalid_notebook"
    # through the proxy, as a browser or script sends it
    response = nasty.get(launch_path(repos, "x" * length).removeprefix(PREFIX))
    assert response.status_code == 400 and error_of(response) == "invalid_notebook"


OVERLONG = {
    # a project's full path may have at most 255 characters (GitLab's Route#path)
    "project of 252": ("demo", "p" * 252),
    "project of 255": ("demo", "p" * 255),
    "project of 256": ("demo", "p" * 256),
    "deep namespace": ("/".join(["g" * 200] * 20), "p"),
    "long namespace": ("g" * 255, "p"),
}


@pytest.mark.parametrize("name", OVERLONG)
def test_overlong_project_paths_are_400_before_anything_else(
    hub: RunningHub, nasty: Client, name: str
) -> None:
    """Names GitLab cannot hold: the documented 400, directly at the glue and through the proxy."""
    namespace, project = OVERLONG[name]
    path = f"{namespace}/{project}/{SHA0}"
    token = hub.token_for("nasty")
    for method in ("GET", "POST", "DELETE"):
        response = raw(hub.glue_port, method, f"{PREFIX}/{path}", token=token)
        assert response.status_code == 400, (method, response.content[:200])
        assert error_of(response) == "invalid_path"
        assert "255" in response.json()["message"]
        response = nasty.request(method, path)
        assert response.status_code == 400 and error_of(response) == "invalid_path", method
    # the longest full path GitLab allows is an ordinary unknown project
    response = nasty.get(f"demo/{'p' * 250}/{SHA0}")
    assert response.status_code == 404, response.content[:200]


def test_the_longest_valid_launch_url_is_answered_by_the_glue(hub: RunningHub, nasty: Client,
                                                              repos: dict) -> None:
    """4096 characters of notebook, each percent-encoded to 12 bytes: still the glue's answer."""
    token = hub.token_for("nasty")
    path = launch_path(repos, quote("😀" * 4096))
    response = raw(hub.glue_port, "GET", path, token=token)
    assert response.status_code == 404 and error_of(response) == "server_not_found"


def test_a_body_that_is_not_what_its_content_encoding_says_is_400(
    hub: RunningHub, nasty: Client, repos: dict
) -> None:
    """Not gzip under `Content-Encoding: gzip`: the documented 400, nothing started, and the
    connection (the proxy's keep-alive one, shared by every user) stays usable."""
    token = hub.token_for("nasty")
    encoded = {"Content-Type": "application/json", "Authorization": f"token {token}"}
    connection = http.client.HTTPConnection("127.0.0.1", hub.glue_port, timeout=60)
    for encoding, body in (
        ("gzip", b'{"profile": "small"}'),
        ("gzip", gzip.compress(b'{"profile": "small"}')[:-6]),  # cut short
        ("deflate", b"\x1f\x8b not deflate"),
    ):
        connection.request("POST", launch_path(repos), body=body,
                           headers={**encoded, "Content-Encoding": encoding})
        answer = connection.getresponse()
        content = answer.read()
        assert answer.status == 400, (encoding, content[:300])
        assert json.loads(content)["error"] == "invalid_encoding"
        assert "Content-Encoding" in json.loads(content)["message"]
        # the same connection answers the next request
        connection.request("GET", f"{PREFIX}/health")
        next_answer = connection.getresponse()
        assert next_answer.status == 200, next_answer.read()[:300]
        next_answer.read()
    connection.close()
    # decoded, then judged as any body: bad JSON, too large once inflated, an unknown coding
    for body, headers, status, code in (
        (gzip.compress(b"{not json"), {"Content-Encoding": "gzip"}, 400, "invalid_json"),
        (zlib.compress(b"{not json"), {"Content-Encoding": "deflate"}, 400, "invalid_json"),
        (gzip.compress(b" " * 10_000_000), {"Content-Encoding": "gzip"}, 413,
         "payload_too_large"),
        (b"{}", {"Content-Encoding": "compress"}, 415, "unsupported_media_type"),
    ):
        response = raw(hub.glue_port, "POST", launch_path(repos), token=token, body=body,
                       headers={"Content-Type": "application/json", **headers})
        assert response.status_code == status, (headers, response.content[:300])
        assert error_of(response) == code
    # through the proxy: the answer, a browser's page, then another user's requests succeed
    bob = Client(hub, "bob")
    path = launch_path(repos).removeprefix(PREFIX)
    for _ in range(5):
        response = nasty.post(path, data=b'{"profile": "small"}',
                              headers={"Content-Type": "application/json",
                                       "Content-Encoding": "gzip"})
        assert response.status_code == 400 and error_of(response) == "invalid_encoding"
        other = bob.get("")
        assert other.status_code == 200, other.content[:300]
    page = nasty.post(path, data=b"not gzip", headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip", "Accept": "text/html"})
    assert page.status_code == 400 and page.headers["Content-Type"].startswith("text/html")
    assert "Content-Encoding" in page.text and "<html" in page.text.lower()
    assert bob.get("").status_code == 200


BIDI = "\u202e\u2066\u2067\u2068\u2069\u200e\u200f\x1b\x85"


def test_control_and_bidi_characters_are_escaped_in_the_log(hub: RunningHub, nasty: Client,
                                                            repos: dict) -> None:
    """A path, or a user name, holding bidi controls or control characters reaches the log
    escaped, in the glue's access log line and in the hub's own request line."""
    mark = log_mark(hub)
    path = launch_path(repos, quote(f"nb{BIDI}.ipynb"))
    response = raw(hub.glue_port, "GET", path, token=hub.token_for("nasty"))
    assert response.status_code == 400  # control characters make no notebook name
    name = "bidi\u202eresu"
    user = Client(hub, name)  # the hub makes the user
    assert user.get("").status_code == 200
    assert requests.get(f"{hub.url}/hub/api/user", timeout=30,
                        headers={"Authorization": f"token {hub.token_for(name)}"}).ok
    log = log_since(hub, mark, settle=1)
    escaped = "".join(f"\\u{ord(c):04x}" if ord(c) > 0xFF else f"\\x{ord(c):02x}"
                      for c in BIDI)
    assert f"nb{escaped}.ipynb status=400" in log  # the glue's access log
    assert "user=bidi\\u202eresu action=GET" in log  # the glue's, with the user's name
    assert re.search(r"200 GET /hub/api/user \(bidi\\u202eresu@", log), log[-2000:]  # the hub's
    assert not any(c in log for c in BIDI), [c for c in BIDI if c in log]


# --- small helpers for raw sockets ---------------------------------------------------------------


def socket_to(port: int):
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return sock


def read_all(sock) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
