"""A stop the hub could not carry out (a pod that Kubernetes would not delete) is `stop_failed`.

The Kubernetes side is in tests/test_kube_manifest.py
(test_a_pod_that_cannot_be_deleted_keeps_its_server): the spawner stays active, so
JupyterHub's own removal refuses to forget the server, and it writes why into the
server's user_options. Here the glue's real `Hub` client and `Servers` talk to a
small stand-in of the JupyterHub REST API on 127.0.0.1 answering as JupyterHub
then does: DELETE `{"remove": true}` either fails (500: the removal raised "is
active and cannot be deleted") or answers 204 while the server stays (the stop,
whose failure JupyterHub swallows, ended within its slow-stop timeout and the
removal failed in the background).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from glue.core import contracts
from glue.core.config import validate
from glue.core.errors import StopFailed
from glue.core.target import Target
from glue.providers.access import Access
from glue.providers.select import make_provider
from glue.service.hubapi import Hub
from glue.service.servers import Servers, UserView

TARGET = Target("demo", "hello", "a" * 40, "")
WHY = "The pod hub-u-hello could not be deleted (Kubernetes: 500 Internal Server Error)."


class HubStandIn:
    """GET /notebooks/servers/{name} (glue.hub.serversapi) and
    DELETE /users/{name}/servers/{server}, as JupyterHub answers."""

    def __init__(self, delete_status: int, kept_because: str | None):
        self.delete_status = delete_status
        self.kept_because = kept_because
        self.deletes: list[Any] = []
        self.present = True

    def server(self) -> dict[str, Any]:
        options = {"namespace": "demo", "project": "hello", "commit_sha": TARGET.commit_sha}
        if self.kept_because:
            options[contracts.STOP_FAILED] = self.kept_because
        return {
            "name": TARGET.server_name,
            "ready": False,
            "pending": None,
            "stopped": False,
            "url": f"/user/u/{TARGET.server_name}/",
            "started": None,
            "last_activity": "2026-01-01T00:00:00Z",
            "user_options": options,
        }

    async def servers(self, request: web.Request) -> web.Response:
        servers = {TARGET.server_name: self.server()} if self.present else {}
        return web.json_response({"name": "u", "servers": servers})

    async def delete(self, request: web.Request) -> web.Response:
        self.deletes.append(await request.json())
        if self.delete_status == 500:  # JupyterHub's APIHandler.write_error for a RuntimeError
            return web.json_response(
                {"status": 500, "message": "Internal Server Error"}, status=500
            )
        if not self.kept_because:
            self.present = False
        return web.Response(status=self.delete_status)


@pytest.fixture
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    standin = HubStandIn(*request.param)
    app = web.Application()
    app.router.add_get("/hub/api/notebooks/servers/{name}", standin.servers)
    app.router.add_delete("/hub/api/users/{name}/servers/{server}", standin.delete)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    hub = Hub(f"http://127.0.0.1:{port}/hub/api", "service-token")
    config = validate({
        "images": {"default": "registry.example.org/renku/default:1"},
        "profiles": [{"name": "small", "cpu": 0.5, "memory": "1G"}],
        "provider": {"kind": "local", "root": str(tmp_path)},
        "launch": {"stopTimeoutSeconds": 2},
    })
    provider = make_provider(config)
    servers = Servers(
        hub, Access(provider, 30), provider, config, base_url="/"
    )
    try:
        yield standin, servers
    finally:
        await hub.close()
        await runner.cleanup()


async def stop(servers: Servers) -> tuple[int, Any]:
    view: UserView = await servers.view("u")
    return await servers.stop(view, TARGET)


@pytest.mark.parametrize("served", [(500, WHY), (204, WHY)], indirect=True)
async def test_a_stop_the_hub_could_not_do_is_stop_failed(served: Any) -> None:
    standin, servers = served
    with pytest.raises(StopFailed) as failed:
        await stop(servers)
    assert failed.value.status == 502 and failed.value.code == "stop_failed"
    assert WHY in failed.value.message and "retried" in failed.value.message
    assert standin.deletes == [{"remove": True}]
    assert standin.present  # the hub keeps it: a later stop can still remove it


@pytest.mark.parametrize("served", [(204, None)], indirect=True)
async def test_a_stop_that_worked_is_204(served: Any) -> None:
    standin, servers = served
    assert await stop(servers) == (204, None)
    assert not standin.present


@pytest.mark.parametrize("served", [(500, None)], indirect=True)
async def test_another_hub_failure_stays_a_hub_error(served: Any) -> None:
    _, servers = served
    with pytest.raises(Exception) as failed:
        await stop(servers)
    assert getattr(failed.value, "code", None) == "hub_error"
