"""A stand-in of the one Kubernetes API endpoint the glue calls: a pod's container log.

Written from the Kubernetes API reference (core/v1 Pod, "read log of the specified
Pod": `GET /api/v1/namespaces/{namespace}/pods/{name}/log`, query parameters
`container`, `tailLines`, `limitBytes`, answer `text/plain`) and the API's
`Status` object for failures (`kind: Status`, `status: Failure`, `reason`,
`code`). What it checks, as the API server does:

- the bearer token (401 Unauthorized without the right one);
- RBAC: the token's Role allows `get` on `pods/log` in one namespace only (403
  Forbidden elsewhere, with the API server's message);
- the `Accept` header: the API server negotiates its answer's type among its
  serializers (JSON, YAML, protobuf) before it streams the log as text/plain, so
  `Accept: text/plain` alone is refused (406 NotAcceptable, seen on Kubernetes
  1.36); a list that admits one of them, `*/*` or none is served;
- the pod (404 NotFound), the container (400 BadRequest when it is missing for a
  pod of several containers, unknown, or still waiting to start);
- `tailLines` and `limitBytes` are non-negative integers (400 otherwise).

`fail_with` makes every request answer that status (an API server in trouble).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from testing.net import free_port

SERIALIZERS = {"application/json", "application/yaml", "application/vnd.kubernetes.protobuf"}


def acceptable(accept: str | None) -> bool:
    """Whether the API server's content negotiation finds a serializer in `Accept`."""
    if not accept:
        return True
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return bool(types & (SERIALIZERS | {"*/*", "application/*"}))


def status(code: int, reason: str, message: str, **details: Any) -> web.Response:
    """The API's `Status` object for a failure."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return web.Response(status=code, text=json.dumps(body), content_type="application/json")


@dataclass
class KubeStandin:
    namespace: str
    token: str
    # pod -> container -> its log lines, or None while the container waits to start
    pods: dict[str, dict[str, list[str] | None]] = field(default_factory=dict)
    fail_with: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    account: str = "system:serviceaccount:notebooks:rel-renku-notebooks"

    def __post_init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    async def start(self) -> KubeStandin:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}/log", self.log)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def log(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        self.requests.append(
            {
                "namespace": namespace,
                "pod": name,
                "query": dict(request.query),
                "authorization": request.headers.get("Authorization"),
            }
        )
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        if self.fail_with is not None:
            if self.fail_with == 403:
                return self.forbidden(namespace, name)
            return status(self.fail_with, "InternalError", "an error on the server")
        if namespace != self.namespace:
            return self.forbidden(namespace, name)
        if not acceptable(request.headers.get("Accept")):
            return status(
                406,
                "NotAcceptable",
                "only the following media types are accepted: application/json, "
                "application/yaml, application/vnd.kubernetes.protobuf",
            )
        query = request.query
        for number in ("tailLines", "limitBytes"):
            if number in query and not query[number].isdigit():
                return status(400, "BadRequest", f"invalid {number}: {query[number]!r}")
        pod = self.pods.get(name)
        if pod is None:
            return status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        container = query.get("container")
        if container is None:
            if len(pod) != 1:
                return status(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, "
                    f"choose one of: {sorted(pod)}",
                )
            (container,) = pod
        if container not in pod:
            return status(400, "BadRequest", f"container {container} is not valid for pod {name}")
        lines = pod[container]
        if lines is None:
            return status(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: PodInitializing',
            )
        if "tailLines" in query:
            lines = lines[len(lines) - int(query["tailLines"]):] if int(query["tailLines"]) else []
        text = "".join(f"{line}\n" for line in lines)
        if "limitBytes" in query:
            text = text.encode()[: int(query["limitBytes"])].decode(errors="ignore")
        return web.Response(text=text, content_type="text/plain")

    def forbidden(self, namespace: str, name: str) -> web.Response:
        return status(
            403,
            "Forbidden",
            f'pods "{name}" is forbidden: User "{self.account}" cannot get resource '
            f'"pods/log" in API group "" in the namespace "{namespace}"',
            name=name,
            kind="pods",
        )
