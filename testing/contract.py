"""The glue's contract, glue/openapi.yaml, as a check the tests pass every response through.

`assert_conforms(response)` checks one response against the document (status, content type,
body schema, server-sent events, required headers); `fuzz` runs schemathesis over the served
document. Shared: test_contract, test_security, test_faults, test_metrics and the autosave
API tests all check what they see against the same document.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jsonschema
import requests

from glue.core.config import shipped_yaml
from glue.service.openapi import OPENAPI_PATH

DOCUMENT = OPENAPI_PATH


PREFIX = "/services/notebooks"


SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def _inline(node: Any, document: dict[str, Any]) -> Any:
    """The node with every `#/...` reference replaced by what it names (there are no cycles)."""
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            target: Any = document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return _inline(target, document)
        return {k: _inline(v, document) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, document) for v in node]
    return node


def sse_events(text: str) -> list[dict[str, str]]:
    """Server-sent events as `{"event", "data"}` dicts; comments and retry-only blocks dropped."""
    events = []
    for block in re.split(r"\r?\n\r?\n", text):
        event: dict[str, str] = {}
        data: list[str] = []
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field in ("event", "id"):
                event[field] = value
        if data:
            events.append({**event, "data": "\n".join(data)})
    return events


class Contract:
    """The operations of the document, found by method and request path."""

    def __init__(self, document: dict[str, Any]):
        self.document = _inline(document, document)
        self.prefix = urlsplit(document["servers"][0]["url"]).path.rstrip("/")
        self.paths: dict[str, dict[str, Any]] = self.document["paths"]

    @classmethod
    def from_file(cls) -> Contract:
        return cls(shipped_yaml(DOCUMENT))  # read as the glue reads it

    def template(self, path: str) -> str:
        """The documented path a request path (raw, below the origin) belongs to."""
        path = path.split("?", 1)[0]
        assert path.startswith(self.prefix), f"{path} is not below {self.prefix}"
        rest = path[len(self.prefix) :] or "/"
        if rest in self.paths:
            return rest
        segments = rest.lstrip("/").split("/")
        if rest.startswith("/-/static/"):
            return "/-/static/{file}"
        if re.search(r"/-/autosaves$", rest) and not rest.startswith("/-/"):
            return "/{namespace}/{project}/-/autosaves"
        if re.search(r"/-/autosaves/[^/]+$", rest) and not rest.startswith("/-/"):
            return "/{namespace}/{project}/-/autosaves/{commit_sha}"
        events = rest.startswith("/-/events/")
        if events:
            segments = segments[2:]
        # the sha is the first 40-hex segment; anything after it is the notebook
        sha = next((i for i, s in enumerate(segments) if re.fullmatch(r"[0-9a-fA-F]{40}", s)), None)
        notebook = sha is not None and sha + 1 < len(segments)
        base = "/-/events" if events else ""
        suffix = "/{notebook}" if notebook else ""
        return f"{base}/{{namespace}}/{{project}}/{{commit_sha}}{suffix}"

    def check(self, response: requests.Response) -> None:
        """Raise AssertionError unless the response is one the document describes."""
        request = response.request
        method = (request.method or "GET").lower()
        path = urlsplit(str(request.url)).path
        where = f"{request.method} {unquote(path)[:200]} -> {response.status_code}"
        template = self.template(path)
        operation = self.paths.get(template, {}).get(method)
        if operation is None:
            # an undocumented method: the glue's 405, which lists the allowed ones
            assert response.status_code == 405, f"{where}: undocumented method answered"
            assert "Allow" in response.headers, f"{where}: 405 without Allow"
            self._check_error_body(response, where)
            return
        responses = operation["responses"]
        documented = responses.get(str(response.status_code)) or responses.get("default")
        assert documented is not None, (
            f"{where}: status not documented for {method.upper()} {template} "
            f"(documented: {', '.join(responses)}); body: {response.text[:300]}"
        )
        for name, header in (documented.get("headers") or {}).items():
            value = response.headers.get(name)
            if header.get("required"):
                assert value is not None, f"{where}: required header {name} missing"
            if value is not None:
                jsonschema.validate(value, header.get("schema", {}))
        content = documented.get("content") or {}
        body = response.content
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not content:
            assert not body, f"{where}: a body where the document has none: {body[:200]!r}"
            return
        media = self._media(content, media_type)
        assert media is not None, (
            f"{where}: content type {media_type!r} not documented ({', '.join(content)})"
        )
        schema = media.get("schema", {})
        if media_type == "application/json":
            try:
                data = response.json()
            except ValueError:
                raise AssertionError(f"{where}: not JSON: {body[:200]!r}") from None
            self._validate(data, schema, where)
        elif media_type == "text/event-stream":
            events = sse_events(response.text)
            assert events, f"{where}: an event stream that sent no event"
            for event in events:
                self._check_event(event, schema, where)
        elif schema.get("type") == "string":
            assert response.text, f"{where}: an empty body"

    @staticmethod
    def _media(content: dict[str, Any], media_type: str) -> dict[str, Any] | None:
        if media_type in content:
            return content[media_type]
        major = media_type.split("/")[0]
        return content.get(f"{major}/*") or content.get("*/*")

    @staticmethod
    def _validate(data: Any, schema: dict[str, Any], where: str) -> None:
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=str)
        if errors:
            message = f"{where}: body breaks the document: {errors[0].message}; body: {data!r}"
            raise AssertionError(message[:2000])

    def _check_event(self, event: dict[str, str], schema: dict[str, Any], where: str) -> None:
        self._validate(event, schema, where)
        branches = [b for b in schema.get("oneOf", [schema]) if "properties" in b]
        branch = next(
            (b for b in branches if b["properties"]["event"].get("const") == event.get("event")),
            None,
        )
        assert branch is not None, f"{where}: undocumented event {event}"
        data_schema = branch["properties"]["data"].get("contentSchema")
        if data_schema is not None:
            self._validate(json.loads(event["data"]), data_schema, where)

    def _check_error_body(self, response: requests.Response, where: str) -> None:
        error = self.document["components"]["schemas"]["Error"]
        self._validate(response.json(), error, where)


CONTRACT = Contract.from_file()


def assert_conforms(response: requests.Response) -> requests.Response:
    """The response is one glue/openapi.yaml describes; returns it for chaining."""
    CONTRACT.check(response)
    return response


def raw(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """Send `path` byte for byte to the glue (no client or proxy normalises it), as a Response."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"token {token}"
    connection.putrequest(method, path, skip_accept_encoding=True)
    for name, value in sent.items():
        connection.putheader(name, value)
    if body is not None:
        connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    answer = connection.getresponse()
    response = requests.Response()
    response.status_code = answer.status
    response.headers = requests.structures.CaseInsensitiveDict(answer.getheaders())
    response._content = answer.read()
    response.url = f"http://127.0.0.1:{port}{path}"
    response.request = requests.Request(method, response.url).prepare()
    response.request.url = response.url  # keep the path as sent, encoded or not
    connection.close()
    return response


FUZZ_CONFIG = """
# every check, for every operation, except as below
[checks]
enabled = true
# a body over `launch.maxBodyBytes` is refused with 413 before it is read (documented), which
# schemathesis' default list of rejections lacks
negative_data_rejection.expected-statuses = [
  "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx",
]

# the events stream answers every refusal as a `failed` event on a 200 stream (documented):
# invalid input there is refused inside the stream, not with a 4xx
[[operations]]
include-path-regex = "^/-/events/"
checks.negative_data_rejection.enabled = false

# the launcher's fields are free text, as typed into its form (a project path or URL, a ref, a
# notebook); the glue parses them and answers 400 with the rule a field broke (documented), which
# the schema cannot state for every URL form
[[operations]]
include-path-regex = "^/-/launcher$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404"]

[headers]
Authorization = "token ${NOTEBOOKS_FUZZ_TOKEN}"
"""


def fuzz(
    tmp_path: Path,
    document: dict[str, Any],
    base_url: str,
    token: str,
    examples: int,
    *extra: str,
) -> dict[str, Any]:
    """Run schemathesis over the document; return its JSON report (the output on failure)."""
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    (tmp_path / "schemathesis.toml").write_text(FUZZ_CONFIG)
    report = tmp_path / "report.json"
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(tmp_path / "schemathesis.toml"),
        "run",
        str(tmp_path / "openapi.json"),
        "--url",
        base_url,
        "--max-examples",
        str(examples),
        "--seed",
        os.environ.get("NOTEBOOKS_FUZZ_SEED", "20260601"),
        "--workers",
        "1",  # Python 3.11's ast module is not thread-safe in hypothesis' lambda descriptions
        "--request-timeout",
        "60",
        "--warnings",
        "off",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *extra,
    ]
    env = {**os.environ, "NOTEBOOKS_FUZZ_TOKEN": token, "NO_COLOR": "1"}
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    assert report.exists(), result.stdout[-5000:] + result.stderr[-3000:]
    data = json.loads(report.read_text())
    data["output"] = result.stdout
    data["returncode"] = result.returncode
    return data
