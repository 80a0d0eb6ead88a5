"""CommitKubeSpawner's pods, built offline through the same steps start() takes.

No cluster: KubeSpawner builds pod manifests without one (`_mock=True`, its
kube config loader patched out), and the launch is checked against a real
local bare repository, so prepare_launch() runs exactly as on the hub. Every
manifest is validated strictly against the Kubernetes 1.28 schema.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub import orm
from jupyterhub.user import User as JupyterHubUser
from jupyterhub.utils import iterate_until
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from kubespawner.slugs import is_valid_label, is_valid_object_name
from kubespawner.spawner import PodReflector
from tornado import web

import glue.providers.local
from glue.core.contracts import (
    HIBERNATED_AT,
    POD_NAME,
    PROXY_CONTAINER,
    RESTORE_REFUSED,
    RESTORED_FROM,
    SESSION_CONTAINER,
)
from glue.core.errors import AutosaveFailed, BadRequest
from glue.core.launch import from_user_options
from glue.hub import kubespawner as kube
from glue.hub import podspec
from glue.hub.autosaveapi import AutosaveAPIHandler
from glue.providers.base import Caller
from glue.service.gittoken import component_key
from glue.service.podlogs import CLONE_CONTAINER, NOTEBOOK_CONTAINER
from glue.service.servers import server_model
from glue.session import autosave, gitproxy
from testing.kubepods import (
    CLONE_IMAGE,
    COOKIE_SECRET,
    DEFAULT_IMAGE,
    HUB_TOKEN,
    PROJECT_IMAGE,
    SERVICE_TOKEN,
    TOKEN,
    WORK_DIR,
    FakeCoreApi,
    User,
    by_name,
    git,
    hub_config,
    kube_repos,
    make_spawner,
    no_kube_config,
    options,
    restricted_violations,
    serialize,
    shaped_pod,
    valid,
)


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return kube_repos(tmp_path_factory)










@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    no_kube_config(monkeypatch)


@pytest.fixture
def token_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the local provider ask for the caller's git token, as the GitLab one does."""
    monkeypatch.setattr(glue.providers.local.LocalProvider, "needs_token", True)














async def test_pod_for_project_image_with_token(
    repos: SimpleNamespace, token_provider: None
) -> None:
    spawner = make_spawner(
        repos, options(repos, image=PROJECT_IMAGE, image_fallback=False, profile="gpu")
    )
    pod = valid(await shaped_pod(spawner))
    spec = pod["spec"]
    notebook = spec["containers"][0]

    assert notebook["image"] == PROJECT_IMAGE
    assert notebook["imagePullPolicy"] == "Always"
    assert notebook["workingDir"] == WORK_DIR
    # the profile's disk bounds what the pod writes: its layer and logs here, the workspace as
    # its claim's size
    assert notebook["resources"]["requests"] == {
        "cpu": 2.0, "memory": 8 * 2**30, "ephemeral-storage": "20Gi"
    }
    assert notebook["resources"]["limits"] == {
        "cpu": 2.0,
        "memory": 8 * 2**30,
        "nvidia.com/gpu": "1",
        "ephemeral-storage": "20Gi",
    }
    assert spawner.default_url == "/lab/tree/notebooks/analysis.ipynb"

    # z2jh's metadata blocker stays first, ours is added after it
    assert [c["name"] for c in spec["initContainers"]] == [
        "block-cloud-metadata",
        "git-clone",
        "git-session",
    ]
    clone = spec["initContainers"][1]
    source = (repos.root / "group" / "project.git").as_uri()
    assert clone["image"] == CLONE_IMAGE
    assert clone["command"] == [
        "python",
        "-m",
        "glue.session.clone",
        "--source",
        source,
        "--commit",
        repos.old,
        "--dest",
        "/workspace/repo",
    ]
    assert {
        "name": "NOTEBOOKS_GIT_TOKEN_FILE",
        "value": "/var/run/secrets/renku-notebooks/token",
    } in clone["env"]
    assert clone["resources"] == {
        "requests": {"cpu": 2.0, "memory": 8 * 2**30},
        "limits": {"cpu": 2.0, "memory": 8 * 2**30},
    }
    assert clone["securityContext"]["runAsUser"] == 1000
    assert clone["securityContext"]["allowPrivilegeEscalation"] is False
    assert clone["securityContext"]["capabilities"] == {"drop": ["ALL"]}

    volumes = by_name(spec["volumes"])
    # the server's own claim (created before the pod, kept while it is paused)
    assert volumes["notebooks-workspace"] == {
        "name": "notebooks-workspace",
        "persistentVolumeClaim": {"claimName": f"{spawner.pod_name}-workspace"},
    }
    assert spec["securityContext"] == {"fsGroup": 100, "fsGroupChangePolicy": "OnRootMismatch"}
    secret_name = f"{spawner.pod_name}-git-token"
    assert volumes["notebooks-git-token"]["secret"] == {
        "secretName": secret_name,
        "defaultMode": 0o440,
    }
    assert by_name(clone["volumeMounts"])["notebooks-git-token"] == {
        "name": "notebooks-git-token",
        "mountPath": "/var/run/secrets/renku-notebooks",
        "readOnly": True,
    }
    # only the clone steps and the sidecar see the token; the notebook gets the checkout
    mounts = by_name(notebook["volumeMounts"])
    assert "notebooks-git-token" not in mounts
    assert mounts["notebooks-workspace"] == {
        "name": "notebooks-workspace",
        "mountPath": WORK_DIR,
        "subPath": "repo",
    }

    labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]
    assert labels["renku.io/namespace"] == "group"
    assert labels["renku.io/project"] == "project"
    assert labels["renku.io/commit-sha"] == repos.old
    assert labels["hub.jupyter.org/network-access-hub"] == "true"
    assert annotations["renku.io/image-fallback"] == "false"

    assert TOKEN not in json.dumps(pod)
    assert TOKEN not in json.dumps(spawner.get_state())


async def test_default_image_without_token(repos: SimpleNamespace) -> None:
    """No image offered: the default one; no token (local provider): no Secret, no token file."""
    spawner = make_spawner(repos, options(repos, commit_sha=repos.new, notebook=""))
    pod = valid(await shaped_pod(spawner))
    spec = pod["spec"]
    notebook = spec["containers"][0]
    assert notebook["image"] == DEFAULT_IMAGE
    assert notebook["resources"]["limits"] == {  # Kubernetes' G; the default disk
        "cpu": 0.5, "memory": 10**9, "ephemeral-storage": "10G"
    }
    assert notebook["resources"]["requests"]["ephemeral-storage"] == "10G"
    workspace = by_name(spec["volumes"])["notebooks-workspace"]
    assert workspace == {
        "name": "notebooks-workspace",
        "persistentVolumeClaim": {"claimName": spawner.pvc_name},
    }
    # the init steps and the sidecar get none of it: they write only into the workspace
    others = [*spec["initContainers"], *spec["containers"][1:]]
    assert all("ephemeral-storage" not in json.dumps(c.get("resources")) for c in others)
    assert pod["metadata"]["annotations"]["renku.io/image-fallback"] == "true"
    assert spawner.default_url == "/lab"
    clone = by_name(spec["initContainers"])["git-clone"]
    assert repos.new in clone["command"]
    assert "NOTEBOOKS_GIT_TOKEN_FILE" not in {e["name"] for e in clone["env"]}
    assert "notebooks-git-token" not in by_name(clone["volumeMounts"])
    # the Secret holds no GitLab token then, only the component's secrets (and the kernel spec)
    spawner.api = api = FakeCoreApi()
    await spawner.after_pod_created_hook(spawner, {"metadata": {"uid": "pod-uid-0"}})
    data = api.secrets[spawner.token_secret_name].string_data
    assert "token" not in data
    assert set(data) == {
        "session-secret", "hub-token", "component-key", "control-secret", "kernel.json"
    }


async def test_image_from_other_registry_is_refused(repos: SimpleNamespace) -> None:
    spawner = make_spawner(repos, options(repos, image="evil.example.org/miner:latest"))
    with pytest.raises(BadRequest, match="not from an allowed registry"):
        await spawner.prepare_launch()


async def test_long_names_fit_kubernetes(repos: SimpleNamespace) -> None:
    user = "someone.with.a.very.long.email.address+tag@an-institution.example.org"
    spawner = make_spawner(
        repos,
        options(repos, namespace=repos.long_namespace, project=repos.long_project, notebook=""),
        user=user,
        server="an-extremely-long-pr-0123456789ab",
    )
    pod = valid(await shaped_pod(spawner))
    name = pod["metadata"]["name"]
    assert len(name) <= 63 and is_valid_object_name(name), name
    labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]
    for key, value in labels.items():
        assert is_valid_label(value), (key, value)
    assert annotations["renku.io/namespace"] == repos.long_namespace
    assert annotations["renku.io/project"] == repos.long_project
    assert labels["renku.io/project"] != repos.long_project[:63]  # shortened with a hash suffix


async def test_restart_adds_nothing_twice(repos: SimpleNamespace, token_provider: None) -> None:
    """The hub reuses a spawner across stop and start: shaping again must not pile up."""
    spawner = make_spawner(repos, options(repos, profile="gpu"))
    await shaped_pod(spawner)
    spawner.user_options = options(repos, profile="small")
    pod = valid(await shaped_pod(spawner))
    init = [c["name"] for c in pod["spec"]["initContainers"]]
    assert init == ["block-cloud-metadata", "git-clone", "git-session"]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["notebook", "git-proxy"]
    assert [v["name"] for v in pod["spec"]["volumes"]].count("notebooks-workspace") == 1
    assert "nvidia.com/gpu" not in pod["spec"]["containers"][0]["resources"]["limits"]


async def test_clone_command_checks_out_the_commit(
    repos: SimpleNamespace, tmp_path: Path, token_provider: None
) -> None:
    """Run the init container's command here: the commit's file is in the workspace."""
    spawner = make_spawner(repos, options(repos))
    clone = by_name((await shaped_pod(spawner))["spec"]["initContainers"])["git-clone"]
    command = [
        sys.executable if arg == "python" else arg.replace("/workspace", str(tmp_path))
        for arg in clone["command"]
    ]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    env = {"PATH": "/usr/bin:/bin", "NOTEBOOKS_GIT_TOKEN_FILE": str(token_file)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=Path.cwd())
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "repo" / "data.txt").read_text() == "first\n"




async def test_token_secret_lifecycle(
    repos: SimpleNamespace, token_provider: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created once the pod exists, owned by it, deleted on stop; an operator's hook still runs."""
    seen: list[str] = []
    spawner = make_spawner(repos, options(repos))
    spawner.operator_after_pod_created_hook = lambda s, pod: seen.append(pod["metadata"]["uid"])
    spawner.api = api = FakeCoreApi()
    await shaped_pod(spawner)
    name = spawner.token_secret_name
    api.secrets[name] = "left over from an earlier pod of this name"

    await spawner.after_pod_created_hook(spawner, {"metadata": {"uid": "pod-uid-1"}})
    secret = await serialize(api.secrets[name])
    valid(secret)
    data = secret["stringData"]
    assert data["token"] == TOKEN and data["hub-token"] == HUB_TOKEN
    assert data["component-key"] == component_key(SERVICE_TOKEN, "alice", spawner.name)
    assert len(data["session-secret"]) >= 32
    assert len(data["control-secret"]) >= 32 and data["control-secret"] != data["session-secret"]
    assert set(data) == {
        "token", "hub-token", "component-key", "session-secret", "control-secret", "kernel.json"
    }
    assert secret["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": spawner.pod_name,
            "uid": "pod-uid-1",
            "blockOwnerDeletion": False,
            "controller": False,
        }
    ]
    assert secret["metadata"]["labels"]["renku.io/commit-sha"] == repos.old
    assert seen == ["pod-uid-1"]
    assert spawner._git_token is None  # the spawner does not keep it
    assert spawner._session_secret is None
    assert data["session-secret"] not in json.dumps(spawner.get_state())
    # the hub's control secret stays, in the hub's database, while the pod runs
    assert spawner.get_state()[kube.CONTROL_STATE] == data["control-secret"]

    async def pod_deleted(self: KubeSpawner, now: bool = False) -> None:
        api.calls.append(("stop", self.pod_name))

    monkeypatch.setattr(KubeSpawner, "stop", pod_deleted)
    await spawner.stop()
    assert name not in api.secrets
    assert api.calls[-4:] == [
        ("stop", spawner.pod_name),
        ("delete", name),
        ("delete", spawner.autosave_key_secret_name),
        ("delete", spawner.registry_secret_name),
    ]
    await spawner.stop()  # nothing left to delete: a 404 is fine


async def test_progress_relays_pod_events(
    repos: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawner = make_spawner(repos, options(repos))
    await shaped_pod(spawner)
    spawner.hand_over()
    secret = spawner.token_secret_name

    async def pod_events(self: KubeSpawner):
        for reason, message in (
            ("FailedMount", f'secret "{secret}" not found'),
            ("FailedScheduling", "0/1 nodes are available: Insufficient cpu."),
        ):
            yield {
                "progress": 50,
                "message": message,
                "raw_event": {"reason": reason, "message": message},
            }

    monkeypatch.setattr(KubeSpawner, "progress", pod_events)
    messages = [event["message"] async for event in spawner.progress()]
    assert messages == [
        "Checking access to group/project",
        "0/1 nodes are available: Insufficient cpu.",
    ]




async def test_pod_passes_restricted_with_the_charts_settings(
    repos: SimpleNamespace, token_provider: None
) -> None:
    """The chart turns z2jh's privileged metadata blocker off; every container is restricted."""
    spawner = make_spawner(repos, options(repos, image=PROJECT_IMAGE), blocker=False)
    pod = valid(await shaped_pod(spawner))
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["git-clone", "git-session"]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["notebook", "git-proxy"]
    assert restricted_violations(pod) == []
    # and the check can fail: z2jh's own default pod does not pass
    blocked = valid(await shaped_pod(make_spawner(repos, options(repos))))
    assert "block-cloud-metadata: privileged" in restricted_violations(blocked)


async def test_root_notebook_gets_a_non_root_clone_step(repos: SimpleNamespace) -> None:
    """uid 0 (docker-stacks images that start as root): the kubelet refuses runAsNonRoot with
    runAsUser 0, so the clone step runs as the glue image's user instead."""
    spawner = make_spawner(repos, options(repos), blocker=False, uid=0)
    pod = valid(await shaped_pod(spawner))
    spec = pod["spec"]
    for step in [*spec["initContainers"], spec["containers"][1]]:
        context = step["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == podspec.CLONE_UID
    notebook = pod["spec"]["containers"][0]["securityContext"]
    assert notebook["runAsUser"] == 0 and "runAsNonRoot" not in notebook


async def test_refused_options_are_a_400_before_start(repos: SimpleNamespace) -> None:
    """JupyterHub 5.3+ runs apply_user_options before start(): a profile the config does not
    have (an upgrade removed it) is a 400 with our sentence, not a 500 from start()."""
    spawner = make_spawner(repos, options(repos, profile="bigger"))
    with pytest.raises(web.HTTPError) as refused:
        await spawner._run_apply_user_options(spawner.user_options)
    assert refused.value.status_code == 400
    message = refused.value.log_message % refused.value.args
    assert "bigger" in message
    spawner.user_options = options(repos)
    await spawner._run_apply_user_options(spawner.user_options)  # accepted, no warning


def pod_status(reason: str, message: str) -> dict[str, Any]:
    waiting = {"reason": reason, "message": message}
    return {
        "metadata": {"uid": "u"},
        "status": {
            "phase": "Pending",
            "podIP": None,
            "initContainerStatuses": [{"name": "git-clone", "ready": False, "state": {}}],
            "containerStatuses": [
                {
                    "name": "notebook",
                    "image": PROJECT_IMAGE,
                    "ready": False,
                    "state": {"waiting": waiting},
                }
            ],
        },
    }


async def test_an_image_pull_failure_ends_the_start(repos: SimpleNamespace) -> None:
    spawner = make_spawner(repos, options(repos))
    spawner._waiting_for_pod = True
    assert spawner.is_pod_running(pod_status("ContainerCreating", "")) is False
    with pytest.raises(RuntimeError, match=r"cannot be pulled \(ErrImagePull\): 401 Unauthorized"):
        spawner.is_pod_running(pod_status("ErrImagePull", "401 Unauthorized"))
    spawner._waiting_for_pod = False  # poll() after the start only asks whether it runs
    assert spawner.is_pod_running(pod_status("ErrImagePull", "401 Unauthorized")) is False


async def test_the_start_records_the_pod_whose_log_the_glue_reads(
    repos: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KubeSpawner names the pod (its template: the hub's name, or the operator's); the start
    writes that name into the hub's user_options, where the glue's logs endpoint reads it,
    and the containers carry the names the glue asks the API for."""
    seen: list[dict[str, Any]] = []

    async def pod_started(self: KubeSpawner) -> str:
        seen.append(dict(self.user_options))
        return "http://10.0.0.7:8888"

    monkeypatch.setattr(KubeSpawner, "start", pod_started)
    spawner = make_spawner(repos, options(repos))
    await spawner.start()
    assert seen[0][POD_NAME] == spawner.pod_name
    assert spawner.orm_spawner.user_options[POD_NAME] == spawner.pod_name  # what the hub stores
    pod = await serialize(await spawner.get_pod_manifest())
    assert pod["metadata"]["name"] == spawner.pod_name
    assert pod["spec"]["containers"][0]["name"] == NOTEBOOK_CONTAINER
    assert CLONE_CONTAINER in by_name(pod["spec"]["initContainers"])
    # a later start from the options the hub kept is accepted, and names the pod again
    assert from_user_options(spawner.notebooks, spawner.user_options).target.commit_sha == repos.old
    with pytest.raises(BadRequest, match="Unknown launch options"):
        from_user_options(spawner.notebooks, {**spawner.user_options, "pod": "other"})


REGISTRY_AUTH = {
    "auths": {
        "registry.example.com": {"username": "deploy-token", "password": "gldt-SECRET"},
        "other.example.org": {"username": "x", "password": "other-SECRET"},
    }
}


class RegistryCoreApi(FakeCoreApi):
    async def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        assert name == "registry-credentials"
        raw = base64.b64encode(json.dumps(REGISTRY_AUTH).encode()).decode()
        return SimpleNamespace(data={".dockerconfigjson": raw})


async def test_project_image_gets_a_pull_secret_of_its_own(
    repos: SimpleNamespace, token_provider: None
) -> None:
    spawner = make_spawner(
        repos,
        options(repos, image=PROJECT_IMAGE, image_fallback=False),
        registrySecret="registry-credentials",
    )
    spawner.api = api = RegistryCoreApi()
    pod = valid(await shaped_pod(spawner))
    name = spawner.registry_secret_name
    assert pod["spec"]["imagePullSecrets"] == [{"name": name}]
    await spawner.after_pod_created_hook(spawner, {"metadata": {"uid": "pod-uid-2"}})
    secret = valid(await serialize(api.secrets[name]))
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "pod-uid-2"
    assert json.loads(secret["stringData"][".dockerconfigjson"]) == {
        "auths": {"registry.example.com": REGISTRY_AUTH["auths"]["registry.example.com"]}
    }
    assert "gldt-SECRET" not in json.dumps(pod)

    # the default image needs no credentials
    default = make_spawner(repos, options(repos), registrySecret="registry-credentials")
    assert not valid(await shaped_pod(default))["spec"].get("imagePullSecrets")


async def test_the_charts_pull_secrets_reach_every_container_of_the_glue_image(
    repos: SimpleNamespace, token_provider: None
) -> None:
    """z2jh gives KubeSpawner the chart-wide jupyterhub.imagePullSecrets (the glue's too): they
    are the pod's, so the clone and session init containers and the git-proxy sidecar, which
    run the glue image (spawner.cloneImage), pull with them; a per-commit image's own pull
    secret is added beside them, not instead."""
    spawner = make_spawner(
        repos,
        options(repos, image=PROJECT_IMAGE, image_fallback=False),
        registrySecret="registry-credentials",
    )
    spawner.image_pull_secrets = ["glue-registry"]  # z2jh: imagePullSecrets, as its config sets it
    spawner.api = RegistryCoreApi()
    pod = valid(await shaped_pod(spawner))
    assert pod["spec"]["imagePullSecrets"] == [
        {"name": "glue-registry"},
        {"name": spawner.registry_secret_name},
    ]
    glue_image = [
        c["name"]
        for c in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]
        if c["image"] == CLONE_IMAGE
    ]
    assert {CLONE_CONTAINER, SESSION_CONTAINER, PROXY_CONTAINER} <= set(glue_image)


async def test_removing_a_server_deletes_a_pod_left_behind(
    repos: SimpleNamespace, token_provider: None
) -> None:
    """A start failed and so did the hub's cleanup: the hub forgot the server, the pod and its
    Secrets remain. Removing the server (the hub calls delete_forever, never stop) deletes them;
    a pod that still cannot be deleted is an error, not a silent success."""
    spawner = make_spawner(repos, options(repos))
    spawner.api = api = FakeCoreApi()
    await shaped_pod(spawner)
    await spawner.after_pod_created_hook(spawner, {"metadata": {"uid": "pod-uid-3"}})
    api.pods[spawner.pod_name] = "running"
    spawner.clear_state()  # what the hub's failed cleanup leaves: no state, the pod's name only

    api.claims[spawner.pvc_name] = "the server's workspace"
    await spawner.delete_forever()
    assert api.pods == {} and api.secrets == {} and api.claims == {}
    assert ("delete pod", spawner.pod_name) in api.calls
    await spawner.delete_forever()  # nothing left: fine

    api.pods[spawner.pod_name] = "undeletable"
    with pytest.raises(RuntimeError, match=rf"pod renku/{spawner.pod_name} .* is left behind"):
        await spawner.delete_forever()


class PodCreated(Exception):
    """The fake API's answer to a pod's creation: the test's start ends there."""


async def start_until_the_pod(spawner: kube.CommitKubeSpawner, api: FakeCoreApi) -> dict[str, Any]:
    """What start() does (the launch's checks and shape, then KubeSpawner's own start) until
    KubeSpawner creates the pod, which it does after the claim: the pod's manifest."""
    created: list[Any] = []

    async def create_namespaced_pod(namespace: str, body: Any) -> None:
        created.append(body)
        raise PodCreated

    api.create_namespaced_pod = create_namespaced_pod  # type: ignore[attr-defined]
    spawner.clear_state()  # the hub's, before every spawn
    spawner.shape_pod(await spawner.prepare_launch())
    with pytest.raises(PodCreated):
        await spawner._start()
    return await serialize(created[0])


async def test_the_workspace_claim_is_made_at_the_first_start_kept_by_a_pause_and_deleted(
    repos: SimpleNamespace, token_provider: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's workspace is its own PersistentVolumeClaim: created before the first pod
    (the profile's disk, the configured class, labelled as the pod), met again (409) and kept
    as it is by a resume's start, kept by a stop (a pause), deleted with the server; a claim
    that cannot be deleted is an error. On claims the spawner only creates and deletes (and
    reads one a quota refused): no list, no patch, within z2jh's hub Role."""
    spawner = make_spawner(repos, options(repos, profile="gpu"), storageClass="fast-ssd")
    spawner.api = api = FakeCoreApi()
    spawner.events_enabled = False
    monkeypatch.setattr(spawner, "_start_watching_pods", lambda **kwargs: asyncio.sleep(0))
    name = f"{spawner.pod_name}-workspace"
    assert spawner.pvc_name == name

    pod = await start_until_the_pod(spawner, api)
    assert api.claim_calls == [("create", name)]
    claim = valid(await serialize(api.claims[name]))
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "20Gi"}},
        "storageClassName": "fast-ssd",
    }
    # the pod's labels (its launch's too), but KubeSpawner's `component` of a user's storage
    labels = dict(claim["metadata"]["labels"])
    assert labels.pop("component") == "singleuser-storage"
    assert labels.items() <= pod["metadata"]["labels"].items()
    assert {"renku.io/commit-sha", "hub.jupyter.org/username"} <= set(labels)
    assert claim["metadata"]["annotations"]["renku.io/commit-sha"] == repos.old
    assert by_name(pod["spec"]["volumes"])["notebooks-workspace"]["persistentVolumeClaim"] == {
        "claimName": name
    }
    # the hub remembers the claim's name (KubeSpawner's state) across its restarts
    assert spawner.get_state()["pvc_name"] == name

    # a pause: the pod goes, the claim stays
    async def pod_deleted(self: KubeSpawner, now: bool = False) -> None:
        api.calls.append(("stop", self.pod_name))

    monkeypatch.setattr(KubeSpawner, "stop", pod_deleted)
    await spawner.stop()
    assert name in api.claims and ("delete", name) not in api.claim_calls

    # the resume: the same claim, as it is (409 from the API is fine)
    kept = api.claims[name]
    pod = await start_until_the_pod(spawner, api)
    assert api.claim_calls == [("create", name), ("create", name)]
    assert api.claims[name] is kept
    assert by_name(pod["spec"]["volumes"])["notebooks-workspace"]["persistentVolumeClaim"] == {
        "claimName": name
    }
    # a quota that refuses the creation of a claim that exists: KubeSpawner reads it
    api.claim_refusal = 403
    await start_until_the_pod(spawner, api)
    assert api.claim_calls[-2:] == [("create", name), ("get", name)]
    api.claim_refusal = None

    # the hub restarts while the server is paused: the claim's name comes back from its state
    await spawner.stop()
    spawner = make_spawner(repos, options(repos, profile="gpu"), storageClass="fast-ssd")
    spawner.api = api
    spawner.pvc_name = "not-yet-loaded"
    spawner.load_state({"pvc_name": name, "pod_name": spawner.pod_name})
    assert spawner.pvc_name == name

    # the server's removal deletes it; nothing left is fine
    await spawner.delete_forever()
    assert api.claims == {} and api.claim_calls[-1] == ("delete", name)
    await spawner.delete_forever()
    api.claims[name] = "undeletable"
    with pytest.raises(RuntimeError, match=rf"workspace claim renku/{name} .* is left behind"):
        await spawner.delete_forever()
    assert {verb for verb, _ in api.claim_calls} == {"get", "create", "delete"}


async def test_z2jhs_storage_settings_do_not_move_the_workspace(repos: SimpleNamespace) -> None:
    """z2jh's `singleuser.storage.type: dynamic` sets KubeSpawner's claim settings for a home
    volume; the workspace claim stays the server's own, and is always made."""
    c = hub_config(repos.root)
    c.KubeSpawner.storage_pvc_ensure = False
    c.KubeSpawner.pvc_name_template = "claim-{username}{servername}"
    spawner = kube.CommitKubeSpawner(
        config=c,
        _mock=True,
        user=User("alice", TOKEN),
        orm_spawner=SimpleNamespace(name="project-0123456789ab", server=None),
    )
    assert spawner.storage_pvc_ensure is True
    assert spawner.pvc_name == f"{spawner.pod_name}-workspace"


def mounts_of(container: dict[str, Any]) -> set[str]:
    return {m["name"] for m in container.get("volumeMounts") or []}


async def test_sidecar_holds_the_token_and_autosaves_on_deletion(
    repos: SimpleNamespace, token_provider: None
) -> None:
    """The token Secret is mounted only into the clone steps and the git-proxy sidecar; the
    sidecar's preStop hook autosaves within the pod's grace period."""
    spawner = make_spawner(repos, options(repos), blocker=False)
    pod = valid(await shaped_pod(spawner))
    spec, secret_name = pod["spec"], spawner.token_secret_name
    notebook, proxy = spec["containers"]
    assert proxy["name"] == "git-proxy" and proxy["image"] == CLONE_IMAGE

    mounting = {
        c["name"]
        for c in [*spec["initContainers"], *spec["containers"]]
        if "notebooks-git-token" in mounts_of(c)
    }
    assert mounting == {"git-clone", "git-session", "git-proxy"}
    # nothing of the Secret reaches the notebook: no mount, no variable, no path
    assert "notebooks-git-token" not in mounts_of(notebook)
    for var in notebook.get("env") or []:
        assert secret_name not in json.dumps(var.get("valueFrom") or {}), var
        assert podspec.TOKEN_DIR not in str(var.get("value")), var
    assert podspec.TOKEN_DIR not in json.dumps(notebook)
    # the sidecar reads the whole workspace volume, for the autosave
    assert by_name(proxy["volumeMounts"])["notebooks-workspace"]["mountPath"] == "/workspace"

    secrets_dir = "/var/run/secrets/renku-notebooks"
    project_url = "http://127.0.0.1:7480/group/project.git"
    branch = f"notebooks/autosave/alice/{repos.old}"
    # one process: the hub's autosave control on the pod's IP, and after `--` the component
    command = proxy["command"]
    at = command.index("--")
    control, command = command[:at], command[at + 1 :]
    assert control[:3] == ["python", "-m", "glue.session.autosavecontrol"]
    assert dict(zip(control[3::2], control[4::2], strict=True)) == {
        "--listen": "$(POD_IP):7481",
        "--secret-file": f"{secrets_dir}/control-secret",
        "--workspace": "/workspace/repo",
        "--launched": repos.old,
        "--remote": project_url,
        "--branch": branch,
        "--max-file-bytes": str(10 * 2**20),
        "--timeout": "120",
        # whom the autosave commit is by: the user's git identity (GitLab push rules)
        "--name": "alice",
        "--email": "alice@users.renku-notebooks.invalid",
    }
    # the kubelet puts the pod's IP into the command line; the port is named for the chart
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in (
        proxy["env"]
    )
    assert proxy["ports"] == [{"name": "autosave", "containerPort": 7481, "protocol": "TCP"}]
    assert "ports" not in notebook or all(p["containerPort"] != 7481 for p in notebook["ports"])
    flags = dict(zip(command[::2], command[1::2], strict=True))
    assert flags == {
        "--listen": "127.0.0.1:7480",
        "--project": "group/project",
        "--secret-file": f"{secrets_dir}/session-secret",
        "--repo": str(repos.root / "group" / "project.git"),
        "--token-endpoint": spawner.git_token_endpoint,
        "--key-file": f"{secrets_dir}/component-key",
        "--hub-token-file": f"{secrets_dir}/hub-token",
        "--user": "alice",
        "--server": spawner.name,
        "--autosave-prefix": "notebooks/autosave",
        "--autosave-branch": branch,
        "--signing-key-file": "/var/run/secrets/renku-autosave/autosave-key",
    }
    service_url = spawner.notebooks["service"]["url"].rstrip("/")
    assert spawner.git_token_endpoint == f"{service_url}/services/notebooks/-/git-token"

    assert proxy["lifecycle"]["preStop"]["exec"]["command"] == [
        "python",
        "-m",
        "glue.session.autosave",
        "save",
        "--workspace",
        "/workspace/repo",
        "--launched",
        repos.old,
        "--remote",
        project_url,
        "--branch",
        branch,
        "--max-file-bytes",
        str(10 * 2**20),
        "--name",
        "alice",
        "--email",
        "alice@users.renku-notebooks.invalid",
    ]
    # the autosave pushes through the component, with the component's secret
    assert {"name": "NOTEBOOKS_GIT_TOKEN_FILE", "value": f"{secrets_dir}/session-secret"} in (
        proxy["env"]
    )
    # autosave.timeoutSeconds (120) plus the margin, on the pod and on the hub's delete
    assert spec["terminationGracePeriodSeconds"] == 150 == spawner.delete_grace_period

    session = by_name(spec["initContainers"])["git-session"]
    assert session["command"][:3] == ["python", "-m", "glue.session.gitsession"]
    assert project_url in session["command"] and branch in session["command"]
    control_secret = spawner.control_secret
    assert control_secret and len(control_secret) >= 32
    for secret in (
        TOKEN,
        SERVICE_TOKEN,
        component_key(SERVICE_TOKEN, "alice", spawner.name),
        control_secret,
    ):
        assert secret not in json.dumps(pod)
    # the control secret's file is named only in the sidecar, which mounts the Secret
    naming = {c["name"] for c in [*spec["initContainers"], *spec["containers"]]
              if "control-secret" in json.dumps(c)}
    assert naming == {"git-proxy"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PodHere:
    """A pod's git steps run on this machine: its paths and the sidecar's port mapped here."""

    def __init__(
        self, root: Path, port: int, secret_data: dict[str, str], key_data: dict[str, str]
    ):
        self.root, self.port = root, port
        self.secrets = root / "secrets"
        self.secrets.mkdir(parents=True)
        for key, value in secret_data.items():
            (self.secrets / key).write_text(value)
        keys = root / "autosave-key"
        keys.mkdir()
        for key, value in key_data.items():
            (keys / key).write_text(value)
        self.checkout = root / "workspace" / "repo"
        (root / "home").mkdir()
        self.paths = {
            "/workspace": str(root / "workspace"),
            podspec.TOKEN_DIR: str(self.secrets),
            podspec.AUTOSAVE_KEY_DIR: str(keys),
            WORK_DIR: str(self.checkout),  # where the notebook sees the checkout
            "127.0.0.1:7480": f"127.0.0.1:{port}",
            podspec.REPORT_PATH: str(root / "report"),
        }
        self.pattern = re.compile("|".join(map(re.escape, self.paths)))

    def argv(self, command: list[str]) -> list[str]:
        mapped = [self.pattern.sub(lambda m: self.paths[m.group()], arg) for arg in command]
        return [sys.executable if arg == "python" else arg for arg in mapped]

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        env = {}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = self.argv([var["value"]])[0]
            else:  # the downward API: this machine is the pod, its IP loopback
                assert var["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}, var
                env[var["name"]] = "127.0.0.1"
        return {**env, "PATH": os.environ["PATH"], "HOME": str(self.root / "home")}

    def command(self, container: dict[str, Any], command: list[str] | None = None) -> list[str]:
        """As the kubelet runs it: `$(VAR)` of the container's env expanded, then mapped here."""
        env = self.env(container)
        expanded = [
            re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), arg)
            for arg in command or container["command"]
        ]
        return self.argv(expanded)

    @contextlib.contextmanager
    def sidecar(self, container: dict[str, Any], *ports: int) -> Iterator[subprocess.Popen[bytes]]:
        """The sidecar's command running here until the block ends, once its ports listen."""
        with (self.root / "sidecar.log").open("wb") as log:
            process = subprocess.Popen(
                self.command(container), env=self.env(container), stdout=log, stderr=log
            )
        try:
            for port in ports:
                for _ in range(100):
                    with socket.socket() as s:
                        if s.connect_ex(("127.0.0.1", port)) == 0:
                            break
                    assert process.poll() is None, (self.root / "sidecar.log").read_text()
                    time.sleep(0.1)
            yield process
        finally:
            process.terminate()
            process.wait(10)

    def run(self, container: dict[str, Any], command: list[str] | None = None) -> str:
        result = subprocess.run(
            self.command(container, command),
            env=self.env(container),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def notebook_git(self, *args: str) -> str:
        """git as the notebook runs it: its own environment, nothing of the pod's Secret."""
        env = {"PATH": os.environ["PATH"], "HOME": str(self.root / "home")}
        env.update(GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
        result = subprocess.run(
            ["git", *args], cwd=self.checkout, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


async def launched_pod(
    spawner: kube.CommitKubeSpawner, root: Path, port: int
) -> tuple[dict[str, Any], PodHere]:
    spawner.api = api = FakeCoreApi()
    pod = valid(await shaped_pod(spawner))
    await spawner.after_pod_created_hook(spawner, {"metadata": {"uid": "pod-uid"}})
    here = PodHere(
        root,
        port,
        api.secrets[spawner.token_secret_name].string_data,
        api.secrets[spawner.autosave_key_secret_name].string_data,
    )
    init = by_name(pod["spec"]["initContainers"])
    here.run(init["git-clone"])
    here.run(init["git-session"])
    return pod, here


def own_repos(repos: SimpleNamespace, tmp_path: Path) -> SimpleNamespace:
    """A copy of the repositories that a test may push to."""
    mine = SimpleNamespace(**vars(repos))
    mine.root = tmp_path / "repos"
    shutil.copytree(repos.root, mine.root)
    return mine


async def test_the_pods_git_steps_run_as_written(
    repos: SimpleNamespace, tmp_path: Path, token_provider: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clone, session step, the notebook's push through the sidecar, the preStop autosave on
    deletion, and the next pod getting the work back: the pod's own commands, run here."""
    mine = own_repos(repos, tmp_path)
    bare = mine.root / "group" / "project.git"
    branch = f"notebooks/autosave/alice/{repos.old}"
    port = free_port()
    monkeypatch.setattr(podspec, "CONTROL_PORT", free_port())
    spawner = make_spawner(mine, options(mine), blocker=False)
    pod, here = await launched_pod(spawner, tmp_path / "pod1", port)
    assert json.loads((tmp_path / "pod1" / "report").read_text())["restored_from"] is None

    # git in the session: origin is the sidecar, the user's identity, no token anywhere
    assert here.notebook_git("remote", "get-url", "origin") == (
        f"http://127.0.0.1:{port}/group/project.git"
    )
    assert here.notebook_git("config", "user.name") == "alice"
    assert here.notebook_git("config", "user.email") == "alice@users.renku-notebooks.invalid"
    secret_file = here.checkout / ".git" / "renku-session-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    for path in here.checkout.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path

    proxy = pod["spec"]["containers"][1]
    with here.sidecar(proxy, port):
        (here.checkout / "result.txt").write_text("committed\n")
        here.notebook_git("add", "result.txt")
        here.notebook_git("commit", "-q", "-m", "result")
        here.notebook_git("push", "-q", "origin", "HEAD:refs/heads/e2e-push")
        head = here.notebook_git("rev-parse", "HEAD")
        assert git("rev-parse", "refs/heads/e2e-push", cwd=bare) == head
        author = git("log", "-1", "--format=%an <%ae>", head, cwd=bare)
        assert author == "alice <alice@users.renku-notebooks.invalid>"

        # uncommitted work, then the pod is deleted: the kubelet runs the preStop hook
        (here.checkout / "notes.txt").write_text("not committed\n")
        (here.checkout / "data.txt").write_text("changed\n")
        saved = json.loads(here.run(proxy, proxy["lifecycle"]["preStop"]["exec"]["command"]))
        assert saved["pushed"] is True and saved["branch"] == branch
        assert git("rev-parse", f"refs/heads/{branch}^", cwd=bare) == head

    # the next launch of the commit gets it all back
    spawner.clear_state()
    _, again = await launched_pod(spawner, tmp_path / "pod2", port)
    report = json.loads((tmp_path / "pod2" / "report").read_text())
    assert report["restored_from"] == branch
    assert (again.checkout / "notes.txt").read_text() == "not committed\n"
    assert (again.checkout / "data.txt").read_text() == "changed\n"
    assert again.notebook_git("rev-parse", "HEAD") == head
    assert again.notebook_git("status", "--porcelain") == "M data.txt\n?? notes.txt".strip()

    # a launch asking for a clean start gets the commit and deletes the autosave
    spawner.clear_state()
    spawner.user_options = options(mine, autosave="discard")
    _, clean = await launched_pod(spawner, tmp_path / "pod3", port)
    assert json.loads((tmp_path / "pod3" / "report").read_text())["discarded"] is True
    assert clean.notebook_git("rev-parse", "HEAD") == repos.old
    assert not (clean.checkout / "notes.txt").exists()
    assert git("branch", "--list", "notebooks/*", cwd=bare) == ""


async def test_the_autosave_key_is_only_the_sidecars_and_the_restores(
    repos: SimpleNamespace, token_provider: None
) -> None:
    """The signing key of the server's autosave branch: a Secret of its own, mounted into the
    sidecar (which signs) and the session step (which checks before the sidecar runs), never
    into the notebook or the clone step; nowhere in the pod's spec itself."""
    spawner = make_spawner(repos, options(repos), blocker=False)
    spawner.api = api = FakeCoreApi()
    pod = valid(await shaped_pod(spawner))
    await spawner.after_pod_created_hook(spawner, {"metadata": {"uid": "pod-uid"}})
    branch = f"notebooks/autosave/alice/{repos.old}"
    key = autosave.branch_key(COOKIE_SECRET, branch)
    secret = await serialize(api.secrets[spawner.autosave_key_secret_name])
    valid(secret)
    assert secret["stringData"] == {"autosave-key": key}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "pod-uid"
    assert key not in json.dumps(await serialize(api.secrets[spawner.token_secret_name]))
    spec = pod["spec"]
    volume = by_name(spec["volumes"])["notebooks-autosave-key"]
    assert volume["secret"]["secretName"] == spawner.autosave_key_secret_name
    containers = [*spec["initContainers"], *spec["containers"]]
    mounting = {c["name"] for c in containers if "notebooks-autosave-key" in mounts_of(c)}
    assert mounting == {"git-session", "git-proxy"}
    naming = {c["name"] for c in containers if podspec.AUTOSAVE_KEY_DIR in json.dumps(c)}
    assert naming == {"git-session", "git-proxy"}
    assert key not in json.dumps(pod)
    assert spawner._autosave_key is None  # the spawner keeps none once the Secret holds it
    assert key not in json.dumps(spawner.get_state())


async def test_a_pods_restore_applies_only_what_its_sidecar_signed(
    repos: SimpleNamespace, tmp_path: Path, token_provider: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notebook's git cannot write another user's autosave branch through the sidecar;
    an autosave branch changed behind the sidecar's back is not restored, and the session
    step's report says why."""
    mine = own_repos(repos, tmp_path)
    bare = mine.root / "group" / "project.git"
    branch = f"notebooks/autosave/alice/{repos.old}"
    port = free_port()
    monkeypatch.setattr(podspec, "CONTROL_PORT", free_port())
    spawner = make_spawner(mine, options(mine), blocker=False)
    pod, here = await launched_pod(spawner, tmp_path / "pod1", port)
    proxy = pod["spec"]["containers"][1]
    with here.sidecar(proxy, port):
        bob = f"refs/heads/notebooks/autosave/bob/{repos.old}"
        env = {"PATH": os.environ["PATH"], "HOME": str(here.root / "home")}
        forged = subprocess.run(
            ["git", "push", "origin", f"HEAD:{bob}"],
            cwd=here.checkout, env=env, capture_output=True, text=True, check=False,
        )
        assert forged.returncode != 0
        assert f"({gitproxy.NOT_OWN_AUTOSAVE})" in forged.stderr, forged.stderr
        assert git("for-each-ref", bob, cwd=bare) == ""
        (here.checkout / "notes.txt").write_text("mine\n")
        saved = json.loads(here.run(proxy, proxy["lifecycle"]["preStop"]["exec"]["command"]))
        assert saved["pushed"] is True

    spawner.clear_state()
    _, again = await launched_pod(spawner, tmp_path / "pod2", port)
    report = json.loads((tmp_path / "pod2" / "report").read_text())
    assert report["restored_from"] == branch and report["restore_refused"] is None
    assert (again.checkout / "notes.txt").read_text() == "mine\n"

    # someone with access to the project rewrites the branch on the remote (no sidecar)
    planted = git("commit-tree", f"{repos.old}^{{tree}}", "-p", repos.old, "-m", "x", cwd=bare)
    git("update-ref", f"refs/heads/{branch}", planted, cwd=bare)
    spawner.clear_state()
    _, third = await launched_pod(spawner, tmp_path / "pod3", port)
    report = json.loads((tmp_path / "pod3" / "report").read_text())
    assert report["restored_from"] is None
    assert "carries no signature" in report["restore_refused"]
    assert third.notebook_git("rev-parse", "HEAD") == repos.old
    assert git("rev-parse", f"refs/heads/{branch}", cwd=bare) == planted  # kept


def control(port: int, method: str, secret: str | None) -> tuple[int, dict[str, Any]]:
    """One request to the sidecar's control listener, as anyone in the cluster could send it."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/autosave", method=method)
    if secret is not None:
        request.add_header("Authorization", f"Bearer {secret}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def pod_server(ip: str = "127.0.0.1") -> orm.Server:
    """The hub's record of a started server: KubeSpawner's URL, the pod's IP (here loopback)."""
    return orm.Server(proto="http", ip=ip, port=8888, base_url="/", cookie_name="c")


class HubHandler:
    """What AutosaveAPIHandler uses of a tornado handler inside the hub: the user's spawners
    and the response it writes."""

    _json = AutosaveAPIHandler._json

    def __init__(self, spawner: kube.CommitKubeSpawner):
        self.user = SimpleNamespace(spawners={spawner.name: spawner})
        self.status, self.body = 200, ""

    def find_user(self, name: str) -> Any:
        return self.user

    def set_status(self, status: int) -> None:
        self.status = status

    def set_header(self, name: str, value: str) -> None:
        pass

    def write(self, text: str) -> None:
        self.body += text

    async def answer(self, method: str) -> tuple[int, dict[str, Any]]:
        server = next(iter(self.user.spawners))
        self.status, self.body = 200, ""
        await AutosaveAPIHandler._answer(self, "alice", server, method)  # type: ignore[arg-type]
        return self.status, json.loads(self.body)


async def test_the_hub_autosaves_through_the_sidecars_control_port(
    repos: SimpleNamespace,
    tmp_path: Path,
    token_provider: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stop through the glue or the culler: the hub's spawner asks the pod's sidecar (here
    on loopback, the "pod IP") what a save would push and to save, with the control secret
    only the hub and the sidecar know; a failed push or an unreachable sidecar is
    AutosaveFailed with the reason, so the stop is refused."""
    mine = own_repos(repos, tmp_path)
    bare = mine.root / "group" / "project.git"
    branch = f"notebooks/autosave/alice/{repos.old}"
    port, control_port = free_port(), free_port()
    monkeypatch.setattr(podspec, "CONTROL_PORT", control_port)
    spawner = make_spawner(mine, options(mine), blocker=False)
    pod, here = await launched_pod(spawner, tmp_path / "pod", port)
    spawner.orm_spawner.server = pod_server()
    assert spawner.ready
    hub = HubHandler(spawner)
    proxy = pod["spec"]["containers"][1]

    with here.sidecar(proxy, port, control_port):
        # nothing changed yet: a clean workspace pushes nothing
        assert (await spawner.autosave_status())["clean"] is True
        (here.checkout / "notes.txt").write_text("not committed\n")
        (here.checkout / "data.txt").write_text("changed\n")
        # the hub's endpoint answers for this spawner (it was 501 without the control port)
        status, body = await hub.answer("autosave_status")
        assert status == 200, body
        assert body == {"clean": False, "uncommitted": 2, "unpushed": 0, "skipped": []}
        assert git("branch", "--list", "notebooks/*", cwd=bare) == ""  # a status pushes nothing

        # nobody else gets in: no secret, another, the notebook's git secret, other paths
        assert control(control_port, "POST", None)[0] == 401
        assert control(control_port, "POST", "x" * 43)[0] == 403
        session_secret = (here.secrets / "session-secret").read_text()
        assert control(control_port, "POST", session_secret) == (
            403,
            {
                "error": "forbidden",
                "message": "Only the hub, with this pod's control secret, may ask.",
            },
        )
        assert git("branch", "--list", "notebooks/*", cwd=bare) == ""

        # a hub restarted meanwhile knows the secret from its database
        reloaded = make_spawner(mine, options(mine), blocker=False)
        reloaded.load_state(json.loads(json.dumps(spawner.get_state())))
        reloaded.orm_spawner.server = pod_server()
        saved = await reloaded.autosave()
        assert saved["pushed"] is True and saved["branch"] == branch
        tip = git("rev-parse", f"refs/heads/{branch}", cwd=bare)
        assert saved["commit"] == tip
        assert git("rev-parse", f"{tip}^", cwd=bare) == repos.old
        assert git("show", f"{tip}:notes.txt", cwd=bare) == "not committed"
        assert git("show", f"{tip}:data.txt", cwd=bare) == "changed"
        # the glue's DELETE, again: the same work (the autosave commit's date may differ by a
        # second, so its id may too; its tree and parent may not)
        status, body = await hub.answer("autosave")
        assert status == 200, body
        again = git("rev-parse", f"refs/heads/{branch}", cwd=bare)
        assert body["commit"] == again, body
        assert git("rev-parse", f"{again}^{{tree}}", f"{again}^", cwd=bare) == git(
            "rev-parse", f"{tip}^{{tree}}", f"{tip}^", cwd=bare
        )

        # GitLab refuses the push: the reason comes back, the server is kept
        (here.checkout / "more.txt").write_text("more\n")
        hook = bare / "hooks" / "pre-receive"
        hook.write_text("#!/bin/sh\necho 'refused by the stand-in' >&2\nexit 1\n")
        hook.chmod(0o755)
        with pytest.raises(AutosaveFailed, match=r"NOT saved: the push of .* refused or failed"):
            await spawner.autosave()
        assert "AUTOSAVE FAILED" in caplog.text
        status, body = await hub.answer("autosave")
        assert status == 409 and body["error"] == "autosave_failed", body
        assert "NOT saved" in body["message"]
        assert git("rev-parse", f"refs/heads/{branch}", cwd=bare) == again  # unchanged
        assert (here.checkout / "more.txt").exists()

    # the sidecar is gone (or its pod unreachable): fail closed
    with pytest.raises(AutosaveFailed, match=r"could not ask the pod .*'s sidecar"):
        await spawner.autosave()
    with pytest.raises(AutosaveFailed, match="could not ask"):
        await spawner.autosave_status()
    status, body = await hub.answer("autosave")
    assert status == 409 and body["error"] == "autosave_failed", body

    # a pod the hub started before it had control secrets: refused too, with the way out
    spawner.control_secret = None
    with pytest.raises(AutosaveFailed, match="only its own preStop"):
        await spawner.autosave()
    # a pod on IPv6: the kubelet's `$(POD_IP):PORT` is read as host and port, the hub's URL
    assert gitproxy.listen_address(f"fd00::7:{control_port}") == ("fd00::7", control_port)
    spawner.orm_spawner.server = pod_server("fd00::7")
    assert spawner.control_url() == f"http://[fd00::7]:{control_port}/autosave"
    # no server: nothing runs, nothing to save
    spawner.orm_spawner.server = None
    assert await spawner.autosave() == {} and await spawner.autosave_status() == {}


async def test_a_pause_autosaves_through_the_sidecar_for_the_paused_servers_removal(
    repos: SimpleNamespace,
    tmp_path: Path,
    token_provider: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No pod mounts a paused server's claim, so its removal cannot save it then: the pause's
    stop asks the sidecar what the workspace holds and to autosave before the pod goes, and
    the state keeps the answer (a hub restart too) for the removal's `autosave_paused`. A
    pause whose save failed still ends the pod and keeps the claim; its removal is refused
    with the reason. A resume forgets the record."""
    mine = own_repos(repos, tmp_path)
    bare = mine.root / "group" / "project.git"
    branch = f"notebooks/autosave/alice/{repos.old}"
    port, control_port = free_port(), free_port()
    monkeypatch.setattr(podspec, "CONTROL_PORT", control_port)
    spawner = make_spawner(mine, options(mine), blocker=False)
    assert spawner.can_pause
    pod, here = await launched_pod(spawner, tmp_path / "pod", port)
    spawner.orm_spawner.server = pod_server()
    spawner.record(disk={"limit": "10G", "near_limit": False})  # what start() records
    deleted: list[str] = []

    async def pod_deleted(self: KubeSpawner, now: bool = False) -> None:
        deleted.append(self.pod_name)

    monkeypatch.setattr(KubeSpawner, "stop", pod_deleted)
    proxy = pod["spec"]["containers"][1]

    with here.sidecar(proxy, port, control_port):
        (here.checkout / "untracked.txt").write_text("not committed\n")
        spawner.pausing = True  # glue.hub.pauseapi's
        await spawner.stop()
        spawner.pausing = False
    assert deleted == [spawner.pod_name]
    tip = git("rev-parse", f"refs/heads/{branch}", cwd=bare)
    assert git("show", f"{tip}:untracked.txt", cwd=bare) == "not committed"
    # the mixin's record of the pause: its time and the disk the workspace holds
    assert spawner.hibernated and (spawner.hibernated_disk or 0) > 0
    # the hub stores the state after the stop; a restarted hub removes the server
    spawner.clear_state()
    reloaded = make_spawner(mine, options(mine), blocker=False)
    reloaded.load_state(json.loads(json.dumps(spawner.get_state())))
    saved = await reloaded.autosave_paused()
    assert saved["pushed"] is True and saved["commit"] == tip and saved["branch"] == branch

    # a later pause (the restarted hub's spawner, with the control secret from the state)
    # whose sidecar does not answer: the pause goes on, the removal is refused with the reason
    spawner = reloaded
    spawner.api = FakeCoreApi()
    spawner.orm_spawner.server = pod_server()
    spawner.control_secret = "the-control-secret-a-resumed-pods-start-made"
    spawner.pausing = True
    await spawner.stop()
    assert deleted == [spawner.pod_name] * 2
    assert spawner.hibernated and spawner.hibernated_disk is None
    assert "AUTOSAVE FAILED" in caplog.text and "at its pause" in caplog.text
    with pytest.raises(AutosaveFailed, match=r"not autosaved \(The autosave could not ask"):
        await spawner.autosave_paused()
    # a server that was never paused here has no save to show
    with pytest.raises(AutosaveFailed, match="no autosave was made when it was paused"):
        await make_spawner(mine, options(mine), blocker=False).autosave_paused()

    # a resume that fails before its server runs leaves the workspace as the pause saved it
    async def refused(self: KubeSpawner) -> str:
        raise TimeoutError("the pod did not start")

    monkeypatch.setattr(KubeSpawner, "start", refused)
    with pytest.raises(TimeoutError):
        await spawner.start()
    assert kube.PAUSE_SAVE_STATE in spawner.get_state()

    # a resume forgets it: the workspace changes again
    async def started(self: KubeSpawner) -> str:
        return "http://127.0.0.1:8888"

    monkeypatch.setattr(KubeSpawner, "start", started)
    await spawner.start()
    assert kube.PAUSE_SAVE_STATE not in spawner.get_state()
    assert not spawner.hibernated and HIBERNATED_AT not in spawner.get_state()


def test_commits_carry_the_gitlab_name_and_email() -> None:
    """oauthenticator keeps GitLab's /user answer under `gitlab_user`."""
    record = {"id": 5, "name": "Alice  Example", "email": "a@example.org", "commit_email": ""}
    caller = Caller.from_auth_state("alice", {"access_token": TOKEN, "gitlab_user": record})
    assert caller.identity() == ("Alice Example", "a@example.org")
    record["commit_email"] = "alice@users.noreply.gitlab.example"
    caller = Caller.from_auth_state("alice", {"access_token": TOKEN, "gitlab_user": record})
    assert caller.identity() == ("Alice Example", "alice@users.noreply.gitlab.example")


# a private CA's certificate (made with openssl) as an operator pastes it: provider.caBundle
PRIVATE_CA = (Path(__file__).parent / "private-ca.crt").read_text()


@pytest.mark.parametrize("token", [TOKEN, None])
async def test_a_private_ca_reaches_the_git_steps_only(
    repos: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, token: str | None
) -> None:
    """provider.caBundle: the system store plus the CA in the pod's Secret, mounted read-only and
    named by GIT_SSL_CAINFO and SSL_CERT_FILE in the clone, session and git-proxy containers
    (also for a public project, whose clone needs no token); never in the notebook."""
    monkeypatch.setattr(glue.providers.local.LocalProvider, "needs_token", token is not None)
    spawner = make_spawner(repos, options(repos), token=token, blocker=False)
    config = spawner.notebooks_config
    provider = {**config["provider"], "caBundle": PRIVATE_CA}
    spawner.notebooks_config = {**config, "provider": provider}
    spawner.api = api = FakeCoreApi()
    pod = valid(await shaped_pod(spawner))
    spec = pod["spec"]
    ca_file = f"{podspec.TOKEN_DIR}/ca.crt"
    trusting = {}
    for container in [*spec["initContainers"], *spec["containers"]]:
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        if "GIT_SSL_CAINFO" in env:
            assert env["GIT_SSL_CAINFO"] == env["SSL_CERT_FILE"] == ca_file
            mount = by_name(container["volumeMounts"])["notebooks-git-token"]
            assert mount["readOnly"] is True and mount["mountPath"] == podspec.TOKEN_DIR
            trusting[container["name"]] = env
        else:
            assert "SSL_CERT_FILE" not in env, container["name"]
    assert set(trusting) == {"git-clone", "git-session", "git-proxy"}
    assert "BEGIN CERTIFICATE" not in json.dumps(pod)  # in the Secret only

    await spawner.after_pod_created_hook(spawner, {"metadata": {"uid": "pod-uid-ca"}})
    data = valid(await serialize(api.secrets[spawner.token_secret_name]))["stringData"]
    assert data["ca.crt"].rstrip().endswith(PRIVATE_CA.strip())
    assert data["ca.crt"].count("BEGIN CERTIFICATE") > 1  # the system store too
    assert ("token" in data) is (token is not None)

    plain = make_spawner(repos, options(repos), token=token, blocker=False)
    assert "GIT_SSL_CAINFO" not in json.dumps(valid(await shaped_pod(plain)))


class Database:
    """The hub's session, as far as a spawner saving its state uses it."""

    commits = 0

    def commit(self) -> None:
        self.commits += 1


async def test_a_pod_that_cannot_be_deleted_keeps_its_server(
    repos: SimpleNamespace, token_provider: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start failed and its cleanup (stop) could not delete the pod: the spawner stays
    `active` (neither ready nor pending), so JupyterHub's own removal refuses to forget the
    server (its DELETE then fails) and the state says so across a hub restart; the spawner
    retries the deletion and, once Kubernetes answers 404, the server may go."""
    monkeypatch.setattr(kube, "LEFT_BEHIND_RETRY_SECONDS", 0.01)
    spawner = make_spawner(repos, options(repos))
    spawner.api = api = FakeCoreApi()
    spawner.db = db = Database()
    await shaped_pod(spawner)
    await spawner.after_pod_created_hook(spawner, {"metadata": {"uid": "pod-uid-4"}})
    api.pods[spawner.pod_name] = "undeletable"
    monkeypatch.setattr(spawner, "_start_watching_pods", lambda **kwargs: asyncio.sleep(0))

    with pytest.raises(ApiException):
        await spawner.stop()
    spawner.clear_state()  # what User.stop does after a failed stop
    assert spawner.pending is None and not spawner.ready
    assert spawner.active
    state = spawner.get_state()
    assert state["pod_left_behind"] is True

    # JupyterHub's own removal (DELETE {"remove": true} -> User._delete_spawner) refuses
    hub_user = SimpleNamespace(log=spawner.log)
    with pytest.raises(RuntimeError, match="is active and cannot be deleted"):
        await JupyterHubUser._delete_spawner(hub_user, spawner)

    # a restarted hub loads the state and retries too
    reloaded = make_spawner(repos, options(repos))
    reloaded.api, reloaded.db = api, db
    reloaded.load_state(state)
    assert reloaded.active

    api.pods[spawner.pod_name] = "running"  # Kubernetes takes deletions again
    for _ in range(200):
        if not (spawner.active or reloaded.active):
            break
        await asyncio.sleep(0.01)
    assert not spawner.active and not reloaded.active
    assert spawner.pod_name not in api.pods and api.secrets == {}
    assert "pod_left_behind" not in spawner.orm_spawner.state and db.commits >= 1
    await JupyterHubUser._delete_spawner(hub_user, spawner)


async def test_a_new_start_ends_the_retries(
    repos: SimpleNamespace, token_provider: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry must never delete the next pod of the same name: a start cancels them (KubeSpawner
    deletes a pod left behind itself, through stop(), when its creation meets it)."""
    spawner = make_spawner(repos, options(repos))
    spawner.api = FakeCoreApi()
    spawner.db = Database()
    spawner.leave_behind("Kubernetes: 500 Internal Server Error")
    retrying = spawner._retrying
    assert retrying is not None and spawner.active
    assert "could not be deleted" in spawner.user_options["stop_failed"]

    async def started(self: KubeSpawner) -> str:
        return "http://10.0.0.7:8888"

    monkeypatch.setattr(KubeSpawner, "start", started)
    spawner.user_options = options(repos)  # the hub sets the new launch's options
    assert await spawner.start() == "http://10.0.0.7:8888"
    await asyncio.sleep(0)
    assert retrying.cancelled() and not spawner.active


async def test_the_hub_watches_a_pods_disk_through_its_sidecar(
    repos: SimpleNamespace, tmp_path: Path, token_provider: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past 90% of the profile's disk (the size of the workspace's claim), the hub's poll
    autosaves the pod once through its sidecar and marks the server's `disk`, which the list
    and the launch page warn of. Only the hub may read the usage."""
    mine = own_repos(repos, tmp_path)
    bare = mine.root / "group" / "project.git"
    port, control_port = free_port(), free_port()
    monkeypatch.setattr(podspec, "CONTROL_PORT", control_port)
    spawner = make_spawner(mine, options(mine), blocker=False)
    spawner.db = SimpleNamespace(commit=lambda: None)
    pod, here = await launched_pod(spawner, tmp_path / "pod", port)
    spawner.orm_spawner.server = pod_server()
    # what start() records once the pod runs (a small disk, so that a few MB are near it)
    spawner.record(disk={"limit": "4M", "near_limit": False})
    proxy = pod["spec"]["containers"][1]
    with here.sidecar(proxy, port, control_port):
        usage = f"http://127.0.0.1:{control_port}/usage"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(usage, timeout=30)
        assert refused.value.code == 401
        (here.checkout / "notes.txt").write_text("written before the warning\n")
        (here.checkout / "filler.bin").write_bytes(bytes(4 * 10**6))
        async def running(self: Any) -> None:  # KubeSpawner's poll reads its pod reflector
            return None

        monkeypatch.setattr(kube.KubeSpawner, "poll", running)
        assert await spawner.poll() is None  # the hub's poll: the pod runs, then the disk watch
        measured = await spawner.disk_usage()
        assert measured is not None and measured.size == 4 * 10**6
        assert measured.used >= 4 * 10**6
        disk = spawner.user_options["disk"]
        assert disk["near_limit"] is True and disk["used_percent"] == 100, disk
        await spawner._disk_save  # the one autosave, in the background of the poll
        assert spawner.user_options["disk"]["autosave"] == "saved"
        branch = f"notebooks/autosave/alice/{repos.old}"
        assert git("show", f"{branch}:notes.txt", cwd=bare) == "written before the warning"
        saved = spawner._disk_save
        await spawner.watch_disk()  # still full: no second autosave
        assert spawner._disk_save is saved and spawner.user_options["disk"]["autosave"] == "saved"


def running_pod(spawner: kube.CommitKubeSpawner, session_message: str | None) -> dict[str, Any]:
    """The spawner's pod as the Kubernetes API returns it once it runs: camelCase, each init
    container terminated, the kubelet's copy of its termination message (the file at
    `terminationMessagePath`) in `state.terminated.message`."""

    def terminated(name: str, message: str | None, began: int, ended: int) -> dict[str, Any]:
        state: dict[str, Any] = {
            "exitCode": 0,
            "reason": "Completed",
            "startedAt": f"2026-12-06T06:00:{began:02}Z",
            "finishedAt": f"2026-12-06T06:00:{ended:02}Z",
            "containerID": f"containerd://{name}",
        }
        if message is not None:
            state["message"] = message
        return {
            "name": name,
            "image": CLONE_IMAGE,
            "imageID": "",
            "ready": True,
            "restartCount": 0,
            "started": False,
            "lastState": {},
            "state": {"terminated": state},
        }

    def condition(kind: str, second: int) -> dict[str, Any]:
        when = f"2026-12-06T06:00:0{second}Z"
        return {"type": kind, "status": "True", "lastTransitionTime": when}

    def running(name: str, image: str) -> dict[str, Any]:
        return {
            "name": name,
            "image": image,
            "imageID": "",
            "ready": True,
            "restartCount": 0,
            "started": True,
            "lastState": {},
            "state": {"running": {"startedAt": "2026-12-06T06:00:04Z"}},
        }

    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": spawner.pod_name,
            "namespace": spawner.namespace,
            "uid": "pod-uid",
            "creationTimestamp": "2026-12-06T05:59:59Z",
        },
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.7",
            "conditions": [
                condition("PodScheduled", 0),
                condition("Initialized", 4),
                condition("ContainersReady", 5),
                condition("Ready", 5),
            ],
            "initContainerStatuses": [
                terminated(CLONE_CONTAINER, None, 1, 3),
                terminated(SESSION_CONTAINER, session_message, 3, 4),
            ],
            "containerStatuses": [
                running(NOTEBOOK_CONTAINER, DEFAULT_IMAGE),
                running(PROXY_CONTAINER, CLONE_IMAGE),
            ],
        },
    }


def test_a_pods_launch_phases_come_from_its_record() -> None:
    """The pod's phases are read from what the API recorded as they happened (creation,
    conditions, container states, the kubelet's pull events), never estimated: a phase the
    record does not bound is left out."""

    def at(second: float) -> str:
        return f"2026-12-06T06:00:{second:09.6f}Z"

    pod = {
        "metadata": {"creationTimestamp": "2026-12-06T06:00:00Z"},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": at(1)},
                {"type": "Initialized", "status": "True", "lastTransitionTime": at(9)},
                {"type": "Ready", "status": "False", "lastTransitionTime": at(9)},
            ],
            "initContainerStatuses": [
                {"name": CLONE_CONTAINER,
                 "state": {"terminated": {"startedAt": at(5), "finishedAt": at(7)}}},
                {"name": SESSION_CONTAINER,
                 "state": {"terminated": {"startedAt": at(7), "finishedAt": at(8)}}},
            ],
            "containerStatuses": [
                {"name": NOTEBOOK_CONTAINER, "state": {"running": {"startedAt": at(11)}}},
            ],
        },
    }
    events = [
        {"reason": "Scheduled", "eventTime": at(1.1)},
        {"reason": "Pulling", "eventTime": at(1.5)},
        {"reason": "Pulled", "eventTime": at(3.25)},
        {"reason": "Pulling", "eventTime": at(8.5)},
        {"reason": "Pulled", "lastTimestamp": at(10)},  # an older event: no eventTime
        {"reason": "Started", "eventTime": at(11)},
    ]
    assert kube.pod_phases(pod, events) == {
        "pod_scheduled": 1.0,
        "pod_pulled": 8.5,
        "pod_init": 8.0,
        "clone": 2.0,
        "session": 1.0,
        "pod_started": 2.0,
        # not Ready yet: no pod_ready
    }
    # every image present (the pre-puller's work): no pulls to time; nothing recorded: nothing
    present = [{"reason": "Pulled", "eventTime": at(2)}]
    assert "pod_pulled" not in kube.pod_phases(pod, present)
    assert kube.pod_phases({}, []) == {}


async def start_pod(
    spawner: kube.CommitKubeSpawner,
    monkeypatch: pytest.MonkeyPatch,
    session_message: str | None,
) -> list[str]:
    """The hub's spawn of the spawner, KubeSpawner's part standing in for a cluster: its start
    returns once its pod reflector (a real one, not started: no API here) holds the running
    pod, and its progress (the pod's events) ends then. The launch's progress messages as the
    hub relays them (`iterate_until` the spawn is done), read while the spawn runs."""
    pod_running = asyncio.Event()

    async def pod_started(self: KubeSpawner) -> str:
        await asyncio.sleep(0.5)  # the pod is created, scheduled, its init containers run
        reflector = PodReflector(parent=self, namespace=self.namespace)
        key = f"{self.namespace}/{self.pod_name}"
        reflector.resources[key] = running_pod(self, session_message)
        monkeypatch.setitem(KubeSpawner.reflectors, ("pods", self.namespace), reflector)
        pod_running.set()
        return "http://10.0.0.7:8888"

    async def pod_events(self: KubeSpawner) -> AsyncIterator[dict[str, Any]]:
        await pod_running.wait()
        for event in ():
            yield event

    async def spawn() -> str:
        url = await spawner.start()
        await asyncio.sleep(0.1)  # the hub then waits for the server to answer (HTTP)
        return url

    monkeypatch.setattr(KubeSpawner, "start", pod_started)
    monkeypatch.setattr(KubeSpawner, "progress", pod_events)
    spawner.clear_state()  # as the hub does before each spawn
    spawning = asyncio.ensure_future(spawn())
    messages = [event["message"] async for event in iterate_until(spawning, spawner.progress())]
    assert await spawning == "http://10.0.0.7:8888"
    return messages


async def test_the_start_records_what_the_pods_session_step_restored_or_refused(
    repos: SimpleNamespace,
    tmp_path: Path,
    token_provider: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The `git-session` init container's report (its termination message) reaches the
    server's user_options, hence the glue's server model and status page, as the local
    spawner's session answer does: where unsaved work was restored from, or why an autosave
    was not restored. A missing or garbled report records nothing and fails no start."""
    mine = own_repos(repos, tmp_path)
    bare = mine.root / "group" / "project.git"
    branch = f"notebooks/autosave/alice/{repos.old}"
    # an autosave branch this service did not sign: the pod's session step refuses it
    planted = git("commit-tree", f"{repos.old}^{{tree}}", "-p", repos.old, "-m", "x", cwd=bare)
    git("update-ref", f"refs/heads/{branch}", planted, cwd=bare)
    spawner = make_spawner(mine, options(mine), blocker=False)
    spawner.db = SimpleNamespace(commit=lambda: None)
    await launched_pod(spawner, tmp_path / "pod", free_port())  # its steps, run here
    report = (tmp_path / "pod" / "report").read_text()
    refused = json.loads(report)["restore_refused"]
    assert "carries no signature" in refused, report

    messages = await start_pod(spawner, monkeypatch, report)
    # where the launch's time went: the spawner's own phase, then the pod's from its record
    phases = spawner.user_options["phases"]
    assert phases.pop("hub_checks") > 0
    assert phases == {"pod_scheduled": 1.0, "pod_init": 4.0, "clone": 2.0, "session": 1.0,
                      "pod_started": 0.0, "pod_ready": 1.0}, phases
    assert spawner.user_options[RESTORE_REFUSED] == refused
    assert RESTORED_FROM not in spawner.user_options
    assert spawner.orm_spawner.user_options == spawner.user_options  # what the hub stores
    assert messages[-1] == refused  # the launch's progress says it, after the pod's events
    model = server_model({"name": spawner.name, "user_options": spawner.user_options})
    assert model is not None and model["restore_refused"] == refused
    assert model["restored_from"] is None

    # a later start whose step restored the autosave (the step's answer, as it writes it)
    restored = {**json.loads(report), "restored_from": branch, "commit": planted}
    restored["restore_refused"] = None
    messages = await start_pod(spawner, monkeypatch, json.dumps(restored))
    assert spawner.user_options[RESTORED_FROM] == branch
    assert RESTORE_REFUSED not in spawner.user_options  # the last start's refusal is gone
    assert refused not in messages

    # no report, a garbled one, one that is no object: nothing recorded, the start goes on
    for garbled in (None, "", '{"restored_from": "notebooks/autosave', '["a", "list"]'):
        caplog.clear()
        await start_pod(spawner, monkeypatch, garbled)
        assert RESTORED_FROM not in spawner.user_options, garbled
        assert RESTORE_REFUSED not in spawner.user_options, garbled
        assert spawner.user_options[POD_NAME] == spawner.pod_name
        said = [r.getMessage() for r in caplog.records if "session report" in r.getMessage()]
        assert len(said) == 1, (garbled, said)
        assert spawner.pod_name in said[0]
