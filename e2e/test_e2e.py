"""End to end on kind: log in through GitLab OAuth, launch an older commit, use it, push from
it, stop it, and find its unsaved work autosaved.

Run by e2e/run.sh, which creates the cluster, installs the chart with
values/kind.yaml and the GitLab stand-in, and sets E2E_NAMESPACE. This
process plays the browser: the hub's proxy is on localhost:31212 and the
stand-in (for the OAuth authorize step) on localhost:31280.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

HUB = os.environ.get("E2E_HUB_URL", "http://localhost:31212")
STANDIN = os.environ.get("E2E_STANDIN_URL", "http://localhost:31280")
NAMESPACE = os.environ.get("E2E_NAMESPACE", "")
USER, USER_GIT_TOKEN = "alice", "alice-e2e-token"  # e2e/fixture.yaml
PROJECT = "group/demo"
# its registry lists an image per commit (e2e/standin.py); e2e/run.sh pushes the older one to a
# registry that asks for credentials (the operator's, values/kind.yaml spawner.registrySecret)
PRIVATE_PROJECT = "group/private-demo"
REGISTRY = "registry.gitlab.test"
NOTEBOOK = "notebooks/analysis.ipynb"
START_SECONDS = 420
# after e2e/run.sh's upgrade: a profile only the new release has (hub and glue must agree)
PROFILE = os.environ.get("E2E_PROFILE", "")

pytestmark = pytest.mark.skipif(
    not NAMESPACE or not shutil.which("kubectl"),
    reason="needs the kind cluster that e2e/run.sh sets up (docker, kind, kubectl); "
    "run `bash e2e/run.sh`",
)


def kubectl(*args: str) -> str:
    return subprocess.run(
        ["kubectl", "--namespace", NAMESPACE, *args], check=True, capture_output=True, text=True
    ).stdout


def kube_json(*args: str) -> dict[str, Any]:
    return json.loads(kubectl(*args, "-o", "json"))


def wait_for(what: str, check: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(2)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def project_commits(project: str, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A project's commits, newest first, read with git from the stand-in."""
    repo = tmp_path_factory.mktemp("clone") / "repo.git"
    subprocess.run(["git", "clone", "-q", "--bare", standin_url(project), str(repo)], check=True)
    shas = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.split()
    assert len(shas) >= 2
    return shas


@pytest.fixture(scope="module")
def commits(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return project_commits(PROJECT, tmp_path_factory)


@pytest.fixture(scope="module")
def private_commits(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return project_commits(PRIVATE_PROJECT, tmp_path_factory)


@pytest.fixture(scope="module")
def hub_token() -> str:
    """Log in as a browser does (hub -> GitLab OAuth -> hub), then make an API token."""
    browser = requests.Session()
    page = browser.get(f"{HUB}/hub/oauth_login", params={"next": "/hub/home"}, timeout=60)
    assert page.status_code == 200 and page.url.endswith("/hub/home"), (page.status_code, page.url)
    xsrf = browser.cookies.get("_xsrf", path="/hub/") or browser.cookies.get("_xsrf")
    made = browser.post(
        f"{HUB}/hub/api/users/{USER}/tokens",
        json={"note": "e2e", "expires_in": 3600},
        headers={"X-XSRFToken": xsrf},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    return made.json()["token"]


@pytest.fixture
def api(hub_token: str) -> Iterator[requests.Session]:
    session = requests.Session()
    session.headers.update({"Authorization": f"token {hub_token}", "Accept": "application/json"})
    yield session
    session.close()


def test_launch_an_older_commit(api: requests.Session, commits: list[str], tmp_path: Path) -> None:
    older = commits[-1]
    launch_url = f"{HUB}/services/notebooks/{PROJECT}/{older}/{NOTEBOOK}"
    started = api.post(launch_url, json={"profile": PROFILE} if PROFILE else {}, timeout=60)
    assert started.status_code in (201, 202), started.text
    try:
        model = wait_for("the server", lambda: running(api, launch_url), START_SECONDS)

        pod = pod_for(older)
        statuses = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
        assert statuses["git-clone"]["state"]["terminated"]["exitCode"] == 0
        # no privileged metadata blocker: the namespace enforces `restricted`
        assert "block-cloud-metadata" not in statuses
        assert pod["metadata"]["labels"]["renku.io/project"] == "demo"
        secret_name = f"{pod['metadata']['name']}-git-token"
        secret = kube_json("get", "secret", secret_name)
        assert secret["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
        git_token = base64.b64decode(secret["data"]["token"]).decode()
        assert git_token and git_token not in json.dumps(pod)
        # the logs endpoint reads the pod through the glue's Role (get on pods/log only)
        logs = api.get(
            f"{HUB}/services/notebooks/{PROJECT}/{older}/-/logs", params={"lines": 50}, timeout=30
        )
        assert logs.status_code == 200, logs.text
        lines = logs.json()["lines"]
        assert lines[0] == "===== git-clone =====" and "===== notebook =====" in lines, lines
        assert git_token not in logs.text

        server = f"{HUB}{model['url']}"
        data = api.get(
            f"{server}api/contents/data.txt", params={"content": "1", "type": "file"}, timeout=30
        )
        assert data.status_code == 200, data.text
        assert data.json()["content"] == "the older commit\n"
        notebook = api.get(f"{server}api/contents/{NOTEBOOK}", timeout=30)
        assert notebook.status_code == 200 and notebook.json()["type"] == "notebook"
        lab = api.get(f"{server}lab/tree/{NOTEBOOK}", headers={"Accept": "text/html"}, timeout=30)
        assert lab.status_code == 200 and "JupyterLab" in lab.text

        # git in the session: commit and push through the git-proxy sidecar, then leave
        # uncommitted work for the autosave of the stop
        assert {c["name"] for c in pod["spec"]["containers"]} == {"notebook", "git-proxy"}
        assert statuses["git-session"]["state"]["terminated"]["exitCode"] == 0
        # this run's own words and branch: e2e/run.sh launches the commit again after the
        # upgrade, which restores this run's autosave first
        run = uuid.uuid4().hex[:8]
        out = run_in_kernel(api, server, SESSION_CODE.replace("RUN", run))
        results = json.loads(out.strip().splitlines()[-1])
        assert [code for code, _ in results] == [0, 0, 0], results
        assert git_token not in out
    finally:
        stopped = api.delete(launch_url, timeout=60)
        assert stopped.status_code in (202, 204), stopped.text

    wait_for("the pod to go", lambda: not pods_for(older), 180)
    assert secret_name not in kubectl("get", "secrets", "-o", "name")

    # the push from the session, and the preStop autosave of the uncommitted file
    branches = remote_branches()
    assert f"refs/heads/e2e-push-{run}" in branches
    autosave = f"refs/heads/notebooks/autosave/{USER}/{older}"
    assert autosave in branches, branches
    assert remote_file(autosave, "unsaved.txt", tmp_path) == f"not committed {run}\n"
    assert remote_file(autosave, "pushed.txt", tmp_path) == f"from the session {run}\n"


def test_a_private_image_runs_with_a_pull_secret_of_its_own(
    api: requests.Session, private_commits: list[str]
) -> None:
    """The commit's image is pulled with the operator's registry credentials, copied for this
    launch into a Secret that the pod owns and the session cannot read."""
    older = private_commits[-1]
    launch_url = f"{HUB}/services/notebooks/{PRIVATE_PROJECT}/{older}"
    started = api.post(launch_url, json={}, timeout=60)
    assert started.status_code in (201, 202), started.text
    try:
        model = wait_for("the server", lambda: running(api, launch_url), START_SECONDS)
        image = f"{REGISTRY}/{PRIVATE_PROJECT}:{older[:7]}"
        assert model["image"] == image and model["image_fallback"] is False, model
        pod = pod_for(older)
        notebook = next(c for c in pod["spec"]["containers"] if c["name"] == "notebook")
        assert notebook["image"] == image
        secret_name = f"{pod['metadata']['name']}-registry"
        assert {"name": secret_name} in pod["spec"]["imagePullSecrets"]
        # never mounted: only the kubelet reads it
        assert secret_name not in json.dumps(pod["spec"].get("volumes", []))
        secret = kube_json("get", "secret", secret_name)
        assert secret["type"] == "kubernetes.io/dockerconfigjson"
        assert secret["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
        config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
        assert list(config["auths"]) == [REGISTRY]  # this image's registry only
    finally:
        stopped = api.delete(launch_url, timeout=60)
        assert stopped.status_code in (202, 204), stopped.text
    wait_for("the pod to go", lambda: not pods_for(older), 180)
    assert secret_name not in kubectl("get", "secrets", "-o", "name")


def test_an_image_that_cannot_be_pulled_fails_the_launch_at_once(
    api: requests.Session, private_commits: list[str]
) -> None:
    """The registry lists the newer commit's image but has no such manifest: the launch fails
    with the kubelet's reason well before the start timeout, and its pod is removed."""
    newer = private_commits[0]
    launch_url = f"{HUB}/services/notebooks/{PRIVATE_PROJECT}/{newer}"
    began = time.monotonic()
    started = api.post(launch_url, json={}, timeout=60)
    try:
        if started.status_code in (201, 202):
            model = wait_for("the launch to fail", lambda: failed(api, launch_url), 120)
            failure = model["failure"]
        else:  # the start failed within the request
            assert started.status_code == 502, started.text
            body = started.json()
            failure = {"reason": body["error"], "message": body["message"]}
        assert time.monotonic() - began < 120
        assert failure["reason"] in ("image_not_found", "image_pull_failed"), failure
        assert "cannot be pulled" in failure["message"], failure
    finally:
        api.delete(launch_url, params={"force": "true"}, timeout=60)
    wait_for("the pod to go", lambda: not pods_for(newer), 180)


# runs in the server's kernel, in the workspace: an ignored file (git's own exclude list of
# the checkout, so the project needs no .gitignore) and an untracked one
PAUSE_CODE = """
import pathlib, subprocess
pathlib.Path(".git/info/exclude").open("a").write("\\n/ignored-RUN.bin\\n")
pathlib.Path("ignored-RUN.bin").write_bytes(bytes(range(256)) * 4096)
pathlib.Path("untracked-RUN.txt").write_text("untracked RUN\\n")
ignored = subprocess.run(["git", "check-ignore", "-q", "ignored-RUN.bin"]).returncode
print(ignored)
"""
READ_BACK_CODE = """
import hashlib, pathlib
print(hashlib.sha256(pathlib.Path("ignored-RUN.bin").read_bytes()).hexdigest())
print(pathlib.Path("untracked-RUN.txt").read_text(), end="")
"""


def claims_for(commit: str) -> list[dict[str, Any]]:
    return kube_json("get", "pvc", "-l", f"renku.io/commit-sha={commit}")["items"]


def state_of(api: requests.Session, url: str, state: str) -> dict[str, Any] | None:
    answer = api.get(url, timeout=30)
    assert answer.status_code == 200, answer.text
    model = answer.json()
    return model if model.get("state") == state or model.get("status") == state else None


def test_a_paused_session_resumes_with_its_whole_workspace(
    api: requests.Session, commits: list[str], tmp_path: Path
) -> None:
    """The workspace is the server's PersistentVolumeClaim (kind's local-path provisioner):
    a pause deletes the pod and keeps the claim; the resume's pod mounts the same claim, its
    clone step keeps the workspace as it is, and the ignored and untracked files are there,
    byte for byte; the deletion autosaves (without the ignored file), then removes the claim."""
    commit = commits[-1]
    launch_url = f"{HUB}/services/notebooks/{PROJECT}/{commit}"
    started = api.post(launch_url, json={}, timeout=60)
    assert started.status_code in (201, 202), started.text
    try:
        model = wait_for("the server", lambda: running(api, launch_url), START_SECONDS)
        pod = pod_for(commit)
        claim = f"{pod['metadata']['name']}-workspace"
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["notebooks-workspace"]["persistentVolumeClaim"] == {"claimName": claim}
        bound = kube_json("get", "pvc", claim)
        assert bound["status"]["phase"] == "Bound", bound["status"]
        # the profile's disk (values/kind.yaml), as the notebook's ephemeral-storage request
        notebook = next(c for c in pod["spec"]["containers"] if c["name"] == "notebook")
        disk = notebook["resources"]["requests"]["ephemeral-storage"]
        assert bound["spec"]["resources"]["requests"]["storage"] == disk
        run = uuid.uuid4().hex[:8]
        out = run_in_kernel(api, f"{HUB}{model['url']}", PAUSE_CODE.replace("RUN", run))
        assert out.strip() == "0", out  # git ignores it
        expected = run_in_kernel(api, f"{HUB}{model['url']}", READ_BACK_CODE.replace("RUN", run))

        paused = api.patch(launch_url, json={"state": "hibernated"}, timeout=120)
        assert paused.status_code in (200, 202), paused.text
        wait_for("the pod to go", lambda: not pods_for(commit), 180)
        wait_for("the paused state", lambda: state_of(api, launch_url, "hibernated"), 60)
        assert [c["metadata"]["name"] for c in claims_for(commit)] == [claim]

        resumed = api.patch(launch_url, json={"state": "running"}, timeout=120)
        assert resumed.status_code in (200, 201, 202), resumed.text
        model = wait_for("the resumed server", lambda: running(api, launch_url), START_SECONDS)
        again = pod_for(commit)
        assert again["metadata"]["uid"] != pod["metadata"]["uid"]
        volumes = {v["name"]: v for v in again["spec"]["volumes"]}
        assert volumes["notebooks-workspace"]["persistentVolumeClaim"] == {"claimName": claim}
        clone_log = kubectl("logs", again["metadata"]["name"], "-c", "git-clone")
        assert "kept as it is" in clone_log, clone_log  # no clone over the workspace
        out = run_in_kernel(api, f"{HUB}{model['url']}", READ_BACK_CODE.replace("RUN", run))
        assert out == expected
    finally:
        stopped = api.delete(launch_url, timeout=120)
        assert stopped.status_code in (202, 204), stopped.text
    wait_for("the pod to go", lambda: not pods_for(commit), 180)
    wait_for("the claim to go", lambda: not claims_for(commit), 120)
    autosave = f"refs/heads/notebooks/autosave/{USER}/{commit}"
    assert remote_file(autosave, f"untracked-{run}.txt", tmp_path) == f"untracked {run}\n"
    # what git ignores stayed on the claim over the pause, but is not pushed by the autosave
    saved = subprocess.run(
        ["git", "-C", str(tmp_path / "fetched"), "ls-tree", "-r", "--name-only", "FETCH_HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert f"ignored-{run}.bin" not in saved, saved


# runs in the server's kernel, in the workspace (the server's root directory)
SESSION_CODE = """
import json, pathlib, subprocess
pathlib.Path("pushed.txt").write_text("from the session RUN\\n")
steps = [
    ["git", "add", "pushed.txt"],
    ["git", "commit", "-q", "-m", "pushed from the e2e session"],
    ["git", "push", "-q", "origin", "HEAD:refs/heads/e2e-push-RUN"],
]
results = []
for step in steps:
    done = subprocess.run(step, capture_output=True, text=True)
    results.append([done.returncode, done.stderr[-500:]])
pathlib.Path("unsaved.txt").write_text("not committed RUN\\n")
print(json.dumps(results))
"""


def run_in_kernel(api: requests.Session, server: str, code: str) -> str:
    """Run `code` in a new kernel of the server (REST to start it, its websocket to execute);
    returns what it printed."""
    started = api.post(f"{server}api/kernels", json={"name": "python3"}, timeout=60)
    assert started.status_code == 201, started.text
    kernel = started.json()["id"]
    try:
        return asyncio.run(_execute(api.headers["Authorization"], server, kernel, code))
    finally:
        api.delete(f"{server}api/kernels/{kernel}", timeout=30)


async def _execute(authorization: str, server: str, kernel: str, code: str) -> str:
    url = f"{server.replace('http', 'ws', 1)}api/kernels/{kernel}/channels"
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": USER,
            "session": uuid.uuid4().hex,
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": False},
        "channel": "shell",
    }
    printed = []
    timeout = aiohttp.ClientTimeout(total=120)
    headers = {"Authorization": authorization}
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.ws_connect(url, headers=headers) as ws,
    ):
        await ws.send_json(request)
        async for message in ws:
            data = json.loads(message.data)
            if data.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = data["msg_type"], data["content"]
            if kind == "stream":
                printed.append(content["text"])
            elif kind == "error":
                raise AssertionError(f"the kernel failed: {content['ename']}: {content['evalue']}")
            elif kind == "status" and content["execution_state"] == "idle":
                break
    return "".join(printed)


def standin_url(project: str = PROJECT) -> str:
    return STANDIN.replace("://", f"://oauth2:{USER_GIT_TOKEN}@") + f"/{project}.git"


def remote_branches() -> str:
    return subprocess.run(
        ["git", "ls-remote", "--heads", standin_url()], check=True, capture_output=True, text=True
    ).stdout


def remote_file(ref: str, path: str, tmp_path: Path) -> str:
    repo = tmp_path / "fetched"
    if not repo.exists():
        subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "fetch", "-q", standin_url(), ref], check=True)
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"FETCH_HEAD:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def running(api: requests.Session, url: str) -> dict[str, Any] | None:
    answer = api.get(url, timeout=30)
    assert answer.status_code in (200, 404), answer.text
    model = answer.json() if answer.status_code == 200 else {}
    if model.get("status") == "failed":
        raise AssertionError(f"the launch failed: {model}\n{kubectl('get', 'events')}")
    return model if model.get("status") == "running" else None


def failed(api: requests.Session, url: str) -> dict[str, Any] | None:
    answer = api.get(url, timeout=30)
    assert answer.status_code in (200, 404), answer.text
    model = answer.json() if answer.status_code == 200 else {}
    assert model.get("status") != "running", model
    return model if model.get("status") == "failed" else None


def pods_for(commit: str) -> list[dict[str, Any]]:
    return kube_json("get", "pods", "-l", f"renku.io/commit-sha={commit}")["items"]


def pod_for(commit: str) -> dict[str, Any]:
    pods = pods_for(commit)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


# --- a session over an upgrade and through `helm uninstall` (e2e/run.sh: E2E_STAGE) ---------
# The stages run apart, with the chart's upgrade and its uninstall between them; what the
# first leaves for the others is in E2E_STATE (a file e2e/run.sh makes).
STAGE = os.environ.get("E2E_STAGE", "")
STATE = Path(os.environ.get("E2E_STATE", "/nonexistent"))


def stage(name: str) -> Any:
    return pytest.mark.skipif(name != STAGE, reason=f"e2e/run.sh runs it as E2E_STAGE={name}")


@stage("before-upgrade")
def test_leave_a_dirty_session(api: requests.Session, commits: list[str]) -> None:
    newest = commits[0]
    launch_url = f"{HUB}/services/notebooks/{PROJECT}/{newest}"
    started = api.post(launch_url, json={}, timeout=60)
    assert started.status_code in (201, 202), started.text
    model = wait_for("the server", lambda: running(api, launch_url), START_SECONDS)
    run = uuid.uuid4().hex[:8]
    code = f"open('kept.txt', 'w').write('kept over the upgrade and the uninstall {run}\\n')"
    run_in_kernel(api, f"{HUB}{model['url']}", code)
    uid = pod_for(newest)["metadata"]["uid"]
    STATE.write_text(json.dumps({"commit": newest, "run": run, "uid": uid, "url": launch_url}))


@stage("after-upgrade")
def test_the_session_outlived_the_upgrade(api: requests.Session) -> None:
    """The hub and the glue were replaced; the server was not, and its work is still there."""
    state = json.loads(STATE.read_text())
    assert pod_for(state["commit"])["metadata"]["uid"] == state["uid"]
    model = wait_for("the server", lambda: running(api, state["url"]), 120)
    out = run_in_kernel(api, f"{HUB}{model['url']}", "print(open('kept.txt').read(), end='')")
    assert out == f"kept over the upgrade and the uninstall {state['run']}\n"


@stage("after-uninstall")
def test_the_uninstall_saved_the_session_first(tmp_path: Path) -> None:
    """`helm uninstall`'s pre-delete hook stopped the server through the hub's saving stop:
    its work is on its autosave branch, and no user pod is left."""
    state = json.loads(STATE.read_text())
    assert not pods_for(state["commit"])
    # the removed server's workspace claim went with it
    assert not claims_for(state["commit"])
    autosave = f"refs/heads/notebooks/autosave/{USER}/{state['commit']}"
    assert autosave in remote_branches()
    kept = remote_file(autosave, "kept.txt", tmp_path)
    assert kept == f"kept over the upgrade and the uninstall {state['run']}\n"
