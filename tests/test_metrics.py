"""What operators see: Prometheus metrics (who may read them, what they count), the access log."""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from testing.contract import assert_conforms
from testing.hub import Client, RunningHub
from testing.marks import starts_hub
from testing.metrics import samples, total, value
from testing.repos import make_repo

ACCESS_LINE = re.compile(
    r" INFO glue request id=(?P<id>[A-Za-z0-9._-]{1,64}) user=(?P<user>\S+) "
    r"action=(?P<method>[A-Z]+) (?P<path>\S*) status=(?P<status>\d{3}) "
    r"outcome=(?P<outcome>[a-z0-9_]+) duration_ms=(?P<ms>-?\d+\.\d)$"
)








@pytest.fixture(scope="module")
@starts_hub
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A hub whose glue lets loopback read metrics, and where `prom` is an admin (read:metrics)."""
    repos = tmp_path_factory.mktemp("metrics-repos")
    shas = make_repo(repos, "demo/hello")
    config = {
        "service": {"adminUsers": ["prom"]},
        "images": {"default": "registry.example.org/renku/default:1"},
        "profiles": [{"name": "small", "cpu": 0.5, "memory": "1G"}],
        "provider": {"kind": "local", "root": str(repos)},
        "launch": {"serversPerUser": 1, "startTimeoutSeconds": 60, "stopTimeoutSeconds": 20},
        "metrics": {"allowedNetworks": ["127.0.0.0/8", "::1/128"]},
    }
    hub = RunningHub(tmp_path_factory.mktemp("metrics-hub"), config)
    try:
        yield {"hub": hub.start(), "shas": shas}
    finally:
        hub.stop()


def direct_metrics(hub: RunningHub, **kwargs) -> requests.Response:
    """Straight to the glue, as Prometheus in the same network would scrape it."""
    url = f"http://127.0.0.1:{hub.glue_port}/services/notebooks/metrics"
    return assert_conforms(requests.get(url, timeout=10, **kwargs))


def scrape(hub: RunningHub) -> dict:
    response = direct_metrics(hub)
    assert response.status_code == 200, response.text
    return samples(response.text)


# --- who may read them ------------------------------------------------------------------------


def test_metrics_need_the_metrics_scope_or_an_allowed_network(world: dict) -> None:
    hub = world["hub"]
    proxied = hub.prefix + "metrics"
    # through the proxy (which adds X-Forwarded-For): a token with read:metrics, nothing else
    response = assert_conforms(requests.get(proxied, timeout=10))
    assert response.status_code == 401 and response.json()["error"] == "not_logged_in"
    user = {"Authorization": f"token {hub.token_for('watcher')}"}
    response = assert_conforms(requests.get(proxied, headers=user, timeout=10))
    assert response.status_code == 403 and "read:metrics" in response.json()["message"]
    bogus = {"Authorization": f"token {secrets.token_hex(16)}"}
    assert assert_conforms(requests.get(proxied, headers=bogus, timeout=10)).status_code == 401
    admin = {"Authorization": f"Bearer {hub.token_for('prom')}"}
    response = assert_conforms(requests.get(proxied, headers=admin, timeout=10))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    # straight from an allowed network: no token needed, unless a proxy relayed the request
    assert direct_metrics(hub).status_code == 200
    relayed = direct_metrics(hub, headers={"X-Forwarded-For": "203.0.113.9"})
    assert relayed.status_code == 401
    openmetrics = direct_metrics(hub, headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")


def test_no_network_is_allowed_by_default(hub: RunningHub) -> None:
    """The session hub's glue has no `metrics.allowedNetworks`: loopback needs a token too."""
    response = direct_metrics(hub)
    assert response.status_code == 401


# --- what they count ---------------------------------------------------------------------------


def test_launches_stops_upstream_and_cache_are_counted(world: dict) -> None:
    hub, shas = world["hub"], world["shas"]
    hub.remove_all_servers("counted")
    client = Client(hub, "counted")
    path = f"demo/hello/{shas[0]}"
    before = scrape(hub)

    assert assert_conforms(client.get(path)).status_code == 404  # no server: access miss
    assert assert_conforms(client.get(path)).status_code == 404  # the cached decision: a hit
    assert assert_conforms(client.post("demo/hello/abc")).status_code == 400
    response = assert_conforms(client.post(path))
    assert response.status_code in (201, 202)
    started = "started" if response.status_code == 201 else "starting"
    assert assert_conforms(client.post(path)).status_code == 200
    other = f"demo/hello/{shas[1]}"
    assert assert_conforms(client.post(other)).status_code == 429  # serversPerUser: 1
    client.wait_running(path)
    assert assert_conforms(client.delete(path)).status_code == 204
    # a form post (as the launch page sends it) answers 303 and still counts as what it did
    form = client.post(path, data={"profile": "small"})
    assert assert_conforms(form).status_code == 303
    client.wait_running(path)
    after = scrape(hub)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # a path that names no launch is refused before any launch: a request, not a launch
    assert delta("notebooks_launches_total", outcome="invalid_commit") == 0
    assert delta("notebooks_requests_total", route="post", status="400",
                 outcome="invalid_commit") == 1
    assert delta("notebooks_launches_total", outcome="existing") == 1
    assert delta("notebooks_launches_total", outcome="too_many_servers") == 1
    assert delta("notebooks_launches_total", outcome=started) >= 1
    assert (
        delta("notebooks_launches_total", outcome="started")
        + delta("notebooks_launches_total", outcome="starting")
        == 2
    )
    assert delta("notebooks_stops_total", outcome="stopped") == 1
    launched = sum(
        delta("notebooks_launch_duration_seconds_count", result=r)
        for r in ("accepted", "refused", "failed")
    )
    assert launched == 4
    assert delta("notebooks_launch_duration_seconds_count", result="refused") == 1
    assert delta("notebooks_access_cache_misses_total") >= 1
    assert delta("notebooks_access_cache_hits_total") >= 1
    hub_calls = total(after, "notebooks_upstream_request_duration_seconds_count", upstream="hub")
    assert hub_calls - total(before, "notebooks_upstream_request_duration_seconds_count",
                             upstream="hub") >= 8
    assert total(after, "notebooks_upstream_errors_total", upstream="hub") == 0
    assert delta("notebooks_requests_total", route="show", status="404",
                 outcome="server_not_found") == 2
    assert value(after, "process_resident_memory_bytes") > 10_000_000
    hub.remove_all_servers("counted")


def hub_metrics(hub: RunningHub) -> dict:
    """JupyterHub's own /hub/metrics, where the hub's phases of a launch are counted."""
    response = requests.get(
        f"{hub.url}/hub/metrics",
        headers={"Authorization": f"token {hub.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return samples(response.text)


def test_each_phase_of_a_launch_is_counted_where_it_happens(world: dict) -> None:
    """The glue's checks and its spawn call in the glue's metrics, the spawner's and the
    proxy's phases in the hub's, one histogram name for both."""
    hub, shas = world["hub"], world["shas"]
    hub.remove_all_servers("phased")
    client = Client(hub, "phased")
    path = f"demo/hello/{shas[0]}"
    glue_before, hub_before = scrape(hub), hub_metrics(hub)
    assert assert_conforms(client.post(path)).status_code in (201, 202)
    client.wait_running(path)
    assert assert_conforms(client.post(path)).status_code == 200  # no new launch: no phases
    glue_after, hub_after = scrape(hub), hub_metrics(hub)
    name = "notebooks_launch_phase_seconds_count"
    for phase in ("checks", "spawn_call"):
        assert value(glue_after, name, phase=phase) - value(glue_before, name, phase=phase) == 1
        assert value(hub_after, name, phase=phase) == 0
    for phase in ("hub_checks", "clone", "session", "server", "proxy_route"):
        assert value(hub_after, name, phase=phase) - value(hub_before, name, phase=phase) == 1
        assert value(glue_after, name, phase=phase) == 0
    seconds = value(hub_after, "notebooks_launch_phase_seconds_sum", phase="server")
    assert seconds > value(hub_before, "notebooks_launch_phase_seconds_sum", phase="server")
    hub.remove_all_servers("phased")


def test_log_and_metrics_agree_on_every_outcome(world: dict) -> None:
    """One middleware decides each request's outcome: the access log line and
    `notebooks_requests_total` must say the same for every status the glue answers."""
    hub, shas = world["hub"], world["shas"]
    hub.remove_all_servers("agreeing")
    client = Client(hub, "agreeing")
    path, other = f"demo/hello/{shas[0]}", f"demo/hello/{shas[1]}"
    before, mark = scrape(hub), len(hub.log())
    sent = [
        client.get(""),  # 200
        client.post(path),  # 201 or 202
        client.post(path),  # 200 existing
        client.post(other),  # 429: serversPerUser is 1
        client.get(path + "?x", headers={"Accept": "application/json"}),  # 200 model
        requests.get(hub.prefix + path, headers={"Accept": "text/html"}, timeout=10,
                     allow_redirects=False),  # 302 to the login
        client.post("demo/hello/abc"),  # 400 invalid_commit
        client.post(path, data=b"{", headers={"Content-Type": "application/json"}),  # 400
        requests.get(hub.prefix + "", timeout=10),  # 401
        client.get("metrics"),  # 403: no read:metrics
        client.get("-/nothing"),  # 404 no_route
        client.get(f"demo/hello/{shas[2]}"),  # 404 server_not_found
        client.post("user"),  # 405
        # over launch.maxBodyBytes, yet small enough to be sent whole before the glue's
        # 413 closes the connection (a larger body meets a reset while still sending)
        client.post(path, data=b"x" * 200_000,
                    headers={"Content-Type": "application/json"}),  # 413
        client.post(path, data=b"x", headers={"Content-Type": "text/plain"}),  # 415
        client.get(f"-/events/demo/hello/{shas[2]}"),  # 200 stream that refused
    ]
    client.wait_running(path)
    sent.append(client.delete(path))  # 204
    sent.append(client.post(other))  # the limit is free again
    client.wait_running(other)
    sent.append(client.post(other, data={"_method": "DELETE"}))  # 303: the page's Stop
    statuses = {r.status_code for r in sent}
    assert {200, 302, 303, 400, 401, 403, 404, 405, 413, 415, 429} <= statuses, statuses
    assert statuses & {201, 202} and 204 in statuses
    after = scrape(hub)

    def scrape_itself(status: str, path_or_route: str) -> bool:
        return status == "200" and path_or_route.endswith("metrics")

    logged: Counter[tuple[str, str]] = Counter()
    for line in hub.log()[mark:].splitlines():
        match = ACCESS_LINE.search(line)
        if match and not scrape_itself(match["status"], match["path"]):
            logged[(match["status"], match["outcome"])] += 1
    counted: Counter[tuple[str, str]] = Counter()
    for (name, labels), now in after.items():
        found = dict(labels)
        if name == "notebooks_requests_total" and not scrape_itself(found["status"],
                                                                      found["route"]):
            counted[(found["status"], found["outcome"])] += int(now - before.get((name, labels), 0))
    counted = +counted  # drop the series that did not move
    assert logged == counted
    assert logged[("200", "project_not_found")] == 0
    assert logged[("302", "login")] == 1 and logged[("404", "no_route")] == 1
    assert logged[("405", "method_not_allowed")] == 1
    assert logged[("413", "payload_too_large")] == 1
    assert logged[("200", "server_not_found")] == 1  # the event stream's refusal
    hub.remove_all_servers("agreeing")


# --- the access log -----------------------------------------------------------------------------


def test_access_log_has_one_line_per_request_and_never_a_token(world: dict) -> None:
    hub, shas = world["hub"], world["shas"]
    client = Client(hub, "logged")
    token = hub.token_for("logged")
    mark = len(hub.log())
    sent = [
        client.get("", headers={"X-Request-Id": "trace-0001"}),
        client.get(f"demo/hello/{shas[2]}", headers={"X-Request-Id": "bad id with spaces"}),
        client.post("demo/hello/nothex", headers={"X-Request-Id": "x" * 65}),
        # a token in the query string (a mistake clients make) must not reach the log either
        client.get(f"demo/hello/{shas[2]}?token={token}&access_token={token}"),
        requests.get(hub.prefix + "user", timeout=10, headers={"Authorization": f"token {token}x"}),
    ]
    for response in sent:
        assert_conforms(response)
    # an event stream sends its headers before its handler returns: it is named all the same
    events = requests.get(hub.prefix + f"-/events/demo/hello/{shas[2]}", timeout=10,
                          headers={"X-Request-Id": "trace-events"})
    assert events.headers["Content-Type"].startswith("text/event-stream")
    assert events.headers["X-Request-Id"] == "trace-events"
    sent.append(events)
    assert sent[0].headers["X-Request-Id"] == "trace-0001"
    for response in sent[1:-1]:
        assert re.fullmatch(r"[0-9a-f]{16}", response.headers["X-Request-Id"])
    log = hub.log()[mark:]
    lines = {}
    for line in log.splitlines():
        match = ACCESS_LINE.search(line)
        if match:
            lines[match["id"]] = match
    for response in sent:
        line = lines.get(response.headers["X-Request-Id"])
        where = response.request.path_url.split("?")[0]  # its query holds a token
        assert line is not None, f"no access log line for {where}"
        assert int(line["status"]) == response.status_code
        assert line["method"] == response.request.method
        assert float(line["ms"]) >= 0
    first = lines["trace-0001"]
    assert (first["user"], first["path"], first["outcome"]) == ("logged", "/services/notebooks/",
                                                                 "ok")
    invalid = lines[sent[2].headers["X-Request-Id"]]
    assert (invalid["user"], invalid["outcome"]) == ("-", "invalid_commit")
    assert lines[sent[4].headers["X-Request-Id"]]["outcome"] == "invalid_token"  # not the hub's
    assert "?" not in "".join(m["path"] for m in lines.values())
    whole = hub.log()
    secrets = {**hub.tokens, "the admin service": hub.admin_token}
    leaked = [owner for owner, secret in secrets.items() if secret in whole]
    assert not leaked, f"tokens in the log (their owners): {leaked}"  # never the tokens
