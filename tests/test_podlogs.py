"""Server logs on Kubernetes: the glue's pod-log reader (glue/service/podlogs.py) against a
stand-in of the documented pods/log endpoint (testing/kube.py), alone and behind the real logs
endpoint of a glue whose hub is the session's real JupyterHub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from glue.core import contracts
from glue.core.config import ConfigError, validate
from glue.core.errors import NotFound, UpstreamError, UpstreamUnavailable
from glue.core.serverlogs import SCRUBBED
from glue.core.target import parse
from glue.service import podlogs
from glue.service.app import HubSettings, build
from glue.service.podlogs import CLONE_CONTAINER, NOTEBOOK_CONTAINER, Cluster, PodLogs, header
from testing.checks import assert_hidden
from testing.hub import RunningHub
from testing.kube import KubeStandin
from testing.net import free_port
from testing.worlds import local_config

NAMESPACE = "notebooks"
POD = "hub-lena--demo-hello-0123456789ab"
GIT_TOKEN = "glpat-lena-SECRET-0123456789abcdef"
SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.service-account-token"
CLONE_LOG = [
    "Fetching 0123456 from http://127.0.0.1:7480/demo/hello.git",
    f"warning: redirecting to https://oauth2:{GIT_TOKEN}@gitlab.example/demo/hello.git",
    "Cloned demo/hello at 0123456",
]
NOTEBOOK_LOG = [f"[I] line {i}" for i in range(50)] + [
    "[I] Jupyter Server is running at http://127.0.0.1:8888/lab?token=abcdef0123456789",
    f"[W] the notebook printed {GIT_TOKEN}",
]


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeStandin]:
    standin = await KubeStandin(NAMESPACE, SA_TOKEN).start()
    standin.pods[POD] = {CLONE_CONTAINER: list(CLONE_LOG), NOTEBOOK_CONTAINER: list(NOTEBOOK_LOG)}
    yield standin
    await standin.stop()


def service_account(tmp_path: Path, token: str = SA_TOKEN) -> Path:
    """A directory laid out like /var/run/secrets/kubernetes.io/serviceaccount."""
    account = tmp_path / "serviceaccount"
    account.mkdir(exist_ok=True)
    (account / "token").write_text(token)
    (account / "namespace").write_text(NAMESPACE)
    (account / "ca.crt").write_text("")
    return account


@pytest.fixture
async def reader(kube: KubeStandin, tmp_path: Path) -> AsyncIterator[PodLogs]:
    account = service_account(tmp_path)
    logs = PodLogs(Cluster(kube.url, NAMESPACE, account / "token", None))
    yield logs
    await logs.close()


async def test_the_standin_negotiates_the_answer_as_the_api_server_does(
    kube: KubeStandin,
) -> None:
    """Kubernetes 1.36 (a real cluster) refuses `Accept: text/plain` for a log with 406,
    although the log is text/plain: the stand-in does too, so the glue's header is checked."""
    url = f"{kube.url}/api/v1/namespaces/{NAMESPACE}/pods/{POD}/log"
    auth = {"Authorization": f"Bearer {SA_TOKEN}"}
    async with aiohttp.ClientSession() as session:
        answers = {}
        for accept in ("text/plain", "application/json, */*", "*/*", None):
            headers = {**auth, **({"Accept": accept} if accept else {})}
            params = {"container": NOTEBOOK_CONTAINER}
            async with session.get(url, params=params, headers=headers) as answer:
                answers[accept] = (answer.status, answer.content_type)
    assert answers["text/plain"] == (406, "application/json")
    assert {answers[a] for a in ("application/json, */*", "*/*", None)} == {(200, "text/plain")}


async def test_both_containers_tails_with_a_header_each(
    kube: KubeStandin, reader: PodLogs
) -> None:
    lines = await reader.tail(POD, 2, GIT_TOKEN)
    assert lines == [
        header(CLONE_CONTAINER),
        CLONE_LOG[1].replace(GIT_TOKEN, SCRUBBED),
        CLONE_LOG[2],
        header(NOTEBOOK_CONTAINER),
        NOTEBOOK_LOG[-2].replace("abcdef0123456789", SCRUBBED),
        NOTEBOOK_LOG[-1].replace(GIT_TOKEN, SCRUBBED),
    ]
    assert_hidden(GIT_TOKEN, "\n".join(lines), "the pod's log")
    assert "abcdef0123456789" not in "\n".join(lines)
    # as documented: one call a container, the service account's token, the tail asked for
    assert sorted((r["namespace"], r["pod"], r["query"]["container"]) for r in kube.requests) == [
        (NAMESPACE, POD, CLONE_CONTAINER),
        (NAMESPACE, POD, NOTEBOOK_CONTAINER),
    ]
    assert {r["query"]["tailLines"] for r in kube.requests} == {"2"}
    assert {r["authorization"] for r in kube.requests} == {f"Bearer {SA_TOKEN}"}
    longer = await reader.tail(POD, 40, None)
    assert len(longer) == 2 + len(CLONE_LOG) + 40
    assert longer[len(CLONE_LOG) + 2] == NOTEBOOK_LOG[-40]


async def test_a_container_that_has_not_started_has_no_lines(
    kube: KubeStandin, reader: PodLogs
) -> None:
    kube.pods[POD][NOTEBOOK_CONTAINER] = None  # the API's 400 "waiting to start"
    lines = await reader.tail(POD, 100, None)
    # without the caller's token to scrub, a password in a URL is still one
    scrubbed = CLONE_LOG[1].replace(GIT_TOKEN, SCRUBBED)
    assert lines == [
        header(CLONE_CONTAINER), CLONE_LOG[0], scrubbed, CLONE_LOG[2], header(NOTEBOOK_CONTAINER)
    ]


async def test_an_unknown_pod_is_not_found(kube: KubeStandin, reader: PodLogs) -> None:
    with pytest.raises(NotFound) as gone:
        await reader.tail("hub-nobody--x", 10, None)
    assert gone.value.status == 404 and gone.value.code == "pod_not_found"


@pytest.mark.parametrize(
    "status, code",
    [(403, "kubernetes_forbidden"), (500, "kubernetes_error"), (503, "kubernetes_error")],
)
async def test_the_api_failing_fails_closed(
    kube: KubeStandin, reader: PodLogs, status: int, code: str
) -> None:
    kube.fail_with = status
    with pytest.raises(UpstreamError) as failed:
        await reader.tail(POD, 10, None)
    assert failed.value.status == 502 and failed.value.code == code
    assert str(status) in failed.value.message
    if status == 403:
        assert "pods/log" in failed.value.message  # what the operator must grant


async def test_a_wrong_namespace_or_token_is_refused(
    kube: KubeStandin, tmp_path: Path
) -> None:
    account = service_account(tmp_path)
    elsewhere = PodLogs(Cluster(kube.url, "other", account / "token", None))
    try:
        with pytest.raises(UpstreamError, match="403"):
            await elsewhere.tail(POD, 1, None)
    finally:
        await elsewhere.close()
    stale_account = service_account(tmp_path, "stale")
    stale = PodLogs(Cluster(kube.url, NAMESPACE, stale_account / "token", None))
    try:
        with pytest.raises(UpstreamError, match="401"):
            await stale.tail(POD, 1, None)
        # the kubelet rotates the token in place: the next call reads the new one
        (stale_account / "token").write_text(SA_TOKEN)
        assert (await stale.tail(POD, 1, None))[0] == header(CLONE_CONTAINER)
    finally:
        await stale.close()


async def test_an_unreachable_api_is_a_503(tmp_path: Path) -> None:
    account = service_account(tmp_path)
    logs = PodLogs(Cluster(f"http://127.0.0.1:{free_port()}", NAMESPACE, account / "token", None))
    try:
        with pytest.raises(UpstreamUnavailable) as down:
            await logs.tail(POD, 1, None)
    finally:
        await logs.close()
    assert down.value.status == 503


def test_the_cluster_is_the_pods_own(tmp_path: Path) -> None:
    account = service_account(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    cluster = Cluster.from_env(env, account)
    assert cluster == Cluster(
        "https://10.96.0.1:443", NAMESPACE, account / "token", account / "ca.crt"
    )
    v6 = Cluster.from_env({**env, "KUBERNETES_SERVICE_HOST": "fd00::1"}, account)
    assert v6.api_url == "https://[fd00::1]:443"
    with pytest.raises(ConfigError, match="service-account token"):
        Cluster.from_env({}, account)
    with pytest.raises(ConfigError, match="service-account token"):
        Cluster.from_env(env, tmp_path / "none")
    assert podlogs.from_config("local", {}) is None  # the embedded default: log files
    in_a_pod = podlogs.from_config("kubernetes", env, account)
    assert in_a_pod is not None and in_a_pod.cluster == cluster


async def test_outside_a_pod_the_glue_starts_and_logs_say_why(tmp_path: Path) -> None:
    reader = podlogs.from_config("kubernetes", {}, tmp_path / "none")
    assert reader is not None
    with pytest.raises(UpstreamUnavailable, match="service-account token") as unavailable:
        await reader.tail(POD, 10, None)
    assert unavailable.value.status == 503 and unavailable.value.code == "kubernetes_unavailable"
    await reader.close()


# --- behind the real endpoint: a glue for Kubernetes, the session's real hub ---------------


@pytest.fixture
async def kube_glue(
    hub: RunningHub, repos: dict[str, Any], kube: KubeStandin, tmp_path: Path
) -> AsyncIterator[str]:
    """A second glue on the session hub, configured for Kubernetes, its pod-log reader on the
    stand-in; the base URL of its service prefix."""
    config = validate({**local_config(repos["root"]), "spawner": {"kind": "kubernetes"}})
    settings = HubSettings.from_env(
        config,
        {"JUPYTERHUB_API_TOKEN": hub.admin_token, "JUPYTERHUB_API_URL": f"{hub.url}/hub/api"},
    )
    account = service_account(tmp_path)
    reader = PodLogs(Cluster(kube.url, NAMESPACE, account / "token", None))
    runner = web.AppRunner(build(config, settings, reader), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}{settings.prefix}"
    await runner.cleanup()


def start_with_pod(hub: RunningHub, user: str, path: str, pod: str) -> None:
    """A server whose user_options name its pod, as CommitKubeSpawner records it at start."""
    target = parse(path)
    options = {
        "namespace": target.namespace,
        "project": target.project,
        "commit_sha": target.commit_sha,
        contracts.POD_NAME: pod,
    }
    hub.token_for(user)
    response = hub.admin("POST", f"users/{user}/servers/{target.server_name}", json=options)
    assert response.status_code in (201, 202), response.text


async def test_the_logs_endpoint_reads_the_pod(
    hub: RunningHub, repos: dict[str, Any], kube: KubeStandin, kube_glue: str
) -> None:
    sha = repos["shas"]["demo/hello"][0]
    path = f"demo/hello/{sha}"
    hub.remove_all_servers("kira")
    start_with_pod(hub, "kira", path, POD)
    try:
        kira = {"Authorization": f"token {hub.token_for('kira')}"}
        async with aiohttp.ClientSession() as http:

            async def get(url: str, headers: dict[str, str]) -> tuple[int, Any]:
                async with http.get(kube_glue + url, headers=headers) as response:
                    if response.content_type == "application/json":
                        return response.status, await response.json()
                    return response.status, await response.text()

            status, body = await get(f"{path}/-/logs?lines=3", kira)
            assert status == 200, body
            assert body["lines"][0] == header(CLONE_CONTAINER)
            assert body["lines"][4] == header(NOTEBOOK_CONTAINER)
            assert body["lines"][-3] == NOTEBOOK_LOG[-3]
            assert len(body["lines"]) == 2 + 3 + 3
            assert_hidden(GIT_TOKEN, str(body), "the logs endpoint")
            assert {r["pod"] for r in kube.requests} == {POD}
            assert {r["query"]["tailLines"] for r in kube.requests} == {"3"}

            # a browser's "show log" link: plain text
            status, text = await get(f"{path}/-/logs", {**kira, "Accept": "text/html"})
            assert status == 200 and text.startswith(header(CLONE_CONTAINER))

            # nobody else's, and never asked of Kubernetes for them
            asked = len(kube.requests)
            # (a user of this test's own: the session's hub is other modules' context too)
            nadia = {"Authorization": f"token {hub.token_for('nadia')}"}
            status, body = await get(f"{path}/-/logs", nadia)
            assert status == 404 and body["error"] == "server_not_found"
            assert len(kube.requests) == asked

            status, body = await get(f"{path}/-/logs?lines=0", kira)
            assert status == 400 and body["error"] == "invalid_lines"

            kube.fail_with = 403  # the Role is missing: fail closed, say what to grant
            status, body = await get(f"{path}/-/logs", kira)
            assert status == 502 and body["error"] == "kubernetes_forbidden", body
            assert "pods/log" in body["message"]
            kube.fail_with = 500
            status, body = await get(f"{path}/-/logs", kira)
            assert status == 502 and body["error"] == "kubernetes_error", body
            kube.fail_with = None

            del kube.pods[POD]  # the pod is gone
            status, body = await get(f"{path}/-/logs", kira)
            assert status == 404 and body["error"] == "pod_not_found", body
    finally:
        hub.remove_all_servers("kira")
