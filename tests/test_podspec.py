"""The pod builders of glue.hub.podspec, called directly: no spawner, no hub, no cluster.

tests/test_kube_manifest.py checks the pods CommitKubeSpawner makes end to end; these
check the builders' own promises from their plain inputs: where the user's token and the
pod's other secrets may (and may not) go, what the notebook sees, and the helpers that the
spawner's lifecycle relies on.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_asyncio.client import (
    ApiClient,
    V1Container,
    V1EnvVar,
    V1ObjectMeta,
    V1Pod,
    V1PodSecurityContext,
    V1PodSpec,
    V1ResourceRequirements,
    V1SecurityContext,
    V1Volume,
    V1VolumeMount,
)

from glue.core.contracts import (
    AUTOSAVE_KEY,
    CLONE_CONTAINER,
    COMPONENT_KEY,
    CONTROL_PORT,
    HUB_TOKEN_KEY,
    PROXY_CONTAINER,
    SECRET_KEY,
    SESSION_CONTAINER,
    TOKEN_KEY,
)
from glue.core.launch import Launch
from glue.core.target import Target
from glue.hub import podspec

SHA = "0123456789abcdef0123456789abcdef01234567"
POD = "jupyter-alice--project"
WORK_DIR = "/home/jovyan/work"
# what the pod's Secret holds: none of these may appear in a container of the pod
SECRET_VALUES = {
    "git_token": "glpat-SECRET-git-token",
    "session_secret": "SECRET-session",
    "hub_token": "SECRET-hub-token",
    "control_secret": "SECRET-control",
    "component_key": "SECRET-component-key",
}


def make_inputs(**changes: Any) -> podspec.PodInputs:
    target = Target(namespace="group", project="project", commit_sha=SHA)
    launch = Launch(
        target=target,
        profile="small",
        image="registry.example.com/group/project:0123456",
        image_fallback=False,
        lfs=False,
    )
    inputs = podspec.PodInputs(
        launch=launch,
        source="https://gitlab.example.org/group/project.git",
        pod_name=POD,
        user="alice",
        server="project",
        work_dir=WORK_DIR,
        claim=f"{POD}-workspace",
        clone_image="quay.io/renku/renku-notebooks-glue:0.1.0",
        pull_policy="IfNotPresent",
        with_token=True,
        ca_bundle=False,
        identity=("Alice Example", "alice@example.org"),
        autosave_prefix="notebooks/autosave",
        autosave_branch=f"notebooks/autosave/alice/{SHA}",
        autosave_max_file_bytes=10_000_000,
        autosave_timeout=60,
        token_endpoint="http://glue.example/notebooks/-/git-token",
    )
    return dataclasses.replace(inputs, **changes)


def notebook(uid: int | None = 1000) -> V1Container:
    return V1Container(
        name="notebook",
        image="quay.io/jupyter/base-notebook",
        env=[V1EnvVar(name="JUPYTER_PATH", value="/operator/jupyter")],
        resources=V1ResourceRequirements(
            requests={"cpu": "500m", "memory": "1G"},
            limits={"cpu": "1", "memory": "1G", "nvidia.com/gpu": "1"},
        ),
        security_context=V1SecurityContext(run_as_user=uid, run_as_group=100),
    )


def base_pod(fs_group: int | None = 100) -> V1Pod:
    """KubeSpawner's pod as an operator configured it: one init container, one volume."""
    operator_init = V1Container(name="operator-init", image="busybox")
    return V1Pod(
        metadata=V1ObjectMeta(name=POD),
        spec=V1PodSpec(
            containers=[notebook()],
            init_containers=[operator_init],
            volumes=[V1Volume(name="operator-volume")],
            security_context=V1PodSecurityContext(fs_group=fs_group),
        ),
    )


def mounts(container: V1Container) -> dict[str, V1VolumeMount]:
    return {mount.name: mount for mount in container.volume_mounts or []}


def text(model: Any) -> str:
    return json.dumps(model.to_dict(), default=str)


def test_the_clone_container_carries_no_secret_and_mounts_the_token_read_only() -> None:
    clone = podspec.clone_container(make_inputs(), notebook())
    assert clone.name == CLONE_CONTAINER
    # the token is a file of the Secret's read-only mount, named in the step's environment
    token = mounts(clone)[podspec.TOKEN_VOLUME]
    assert token.mount_path == podspec.TOKEN_DIR and token.read_only is True
    token_file = f"{podspec.TOKEN_DIR}/{TOKEN_KEY}"
    assert token_file in [var.value for var in clone.env]
    # no secret in its command line or environment, no autosave key, no CA without one
    words = [*clone.command, *(f"{var.name}={var.value}" for var in clone.env)]
    for value in SECRET_VALUES.values():
        assert not any(value in word for word in words)
    assert not any("oauth2:" in word or "@gitlab" in word for word in words), words
    assert podspec.AUTOSAVE_KEY_VOLUME not in mounts(clone)
    assert "GIT_SSL_CAINFO" not in {var.name for var in clone.env}
    # the workspace is its own to write; it runs unprivileged, with no GPU
    assert mounts(clone)[podspec.WORKSPACE_VOLUME].read_only is None
    context = clone.security_context
    assert context.run_as_non_root is True and context.allow_privilege_escalation is False
    assert context.capabilities.drop == ["ALL"]
    assert clone.resources.limits == {"cpu": "1", "memory": "1G"}


def test_a_clone_without_token_or_ca_mounts_no_secret() -> None:
    clone = podspec.clone_container(make_inputs(with_token=False), notebook())
    assert set(mounts(clone)) == {podspec.WORKSPACE_VOLUME}
    assert f"{podspec.TOKEN_DIR}/{TOKEN_KEY}" not in text(clone)
    # a private CA alone brings the Secret back, read-only, for its bundle
    with_ca = podspec.clone_container(make_inputs(with_token=False, ca_bundle=True), notebook())
    assert mounts(with_ca)[podspec.TOKEN_VOLUME].read_only is True
    env = {var.name: var.value for var in with_ca.env}
    assert env["GIT_SSL_CAINFO"] == env["SSL_CERT_FILE"] == f"{podspec.TOKEN_DIR}/ca.crt"


def test_a_root_notebook_gets_a_non_root_clone_step() -> None:
    clone = podspec.clone_container(make_inputs(), notebook(uid=0))
    assert clone.security_context.run_as_user == podspec.CLONE_UID
    assert clone.security_context.run_as_group == 100
    assert podspec.notebook_security_context(0) == {}
    assert podspec.notebook_security_context(1000) == podspec.RESTRICTED_CONTAINER


def test_the_workspace_is_added_to_the_operators_pod_and_the_notebook_sees_no_secret() -> None:
    pod = base_pod()
    podspec.add_workspace(pod, make_inputs())
    spec = pod.spec
    assert [c.name for c in spec.init_containers] == [
        "operator-init",
        CLONE_CONTAINER,
        SESSION_CONTAINER,
    ]
    assert [c.name for c in spec.containers] == ["notebook", PROXY_CONTAINER]
    volumes = {volume.name: volume for volume in spec.volumes}
    assert "operator-volume" in volumes
    # the server's own claim, which outlives the pod (a pause), never a pod's emptyDir
    workspace = volumes[podspec.WORKSPACE_VOLUME]
    assert workspace.empty_dir is None
    assert workspace.persistent_volume_claim.claim_name == f"{POD}-workspace"
    assert not workspace.persistent_volume_claim.read_only
    # group-readable through the pod's fsGroup
    assert volumes[podspec.TOKEN_VOLUME].secret.default_mode == 0o440
    # the notebook: the checkout at workDir, and of the Secret only the kernel spec
    nb = spec.containers[0]
    assert set(mounts(nb)) == {podspec.WORKSPACE_VOLUME, podspec.KERNEL_VOLUME}
    assert mounts(nb)[podspec.WORKSPACE_VOLUME].mount_path == WORK_DIR
    assert mounts(nb)[podspec.WORKSPACE_VOLUME].sub_path == podspec.CHECKOUT
    kernel = volumes[podspec.KERNEL_VOLUME].secret
    assert kernel.secret_name == podspec.token_secret_name(POD)
    assert [item.key for item in kernel.items] == [podspec.KERNEL_KEY]
    assert podspec.TOKEN_DIR not in text(nb) and podspec.AUTOSAVE_KEY_DIR not in text(nb)
    env = {var.name: var.value for var in nb.env}
    assert env["JUPYTER_PATH"] == f"{podspec.KERNEL_DIR}:/operator/jupyter"


def test_without_an_fs_group_the_secret_is_readable_by_the_containers_that_mount_it() -> None:
    pod = base_pod(fs_group=None)
    podspec.add_workspace(pod, make_inputs())
    volumes = {volume.name: volume for volume in pod.spec.volumes}
    assert volumes[podspec.TOKEN_VOLUME].secret.default_mode == 0o444
    assert pod.spec.security_context.fs_group_change_policy is None


def test_a_resumed_workspace_is_not_walked_for_the_fs_group_at_every_mount() -> None:
    """The kubelet's default changes every file of a volume to the pod's fsGroup at each mount:
    a kept workspace gets `OnRootMismatch`; an operator's own policy stays, in the dict form
    KubeSpawner builds the pod's security context in too."""
    pod = base_pod()
    podspec.add_workspace(pod, make_inputs())
    assert pod.spec.security_context.fs_group == 100
    assert pod.spec.security_context.fs_group_change_policy == "OnRootMismatch"
    pod = base_pod()
    pod.spec.security_context = {"fsGroup": 100, "fsGroupChangePolicy": "Always"}
    podspec.add_workspace(pod, make_inputs())
    assert pod.spec.security_context == {"fsGroup": 100, "fsGroupChangePolicy": "Always"}
    pod.spec.security_context = {"fsGroup": 100}
    pod.spec.volumes = []
    podspec.add_workspace(pod, make_inputs())
    assert pod.spec.security_context["fsGroupChangePolicy"] == "OnRootMismatch"


async def test_the_workspace_claim_has_the_profiles_disk_and_the_storage_class() -> None:
    """KubeSpawner's claim shape: one read-write mount at a time, the profile's disk; a class
    when the config names one, none (the cluster's default) for "", valid for Kubernetes."""
    labels = {"hub.jupyter.org/username": "alice", "renku.io/commit-sha": SHA}
    annotations = {"renku.io/project": "project"}
    claim = podspec.workspace_claim(
        f"{POD}-workspace",
        size="20Gi",
        storage_class="fast-ssd",
        labels=labels,
        annotations=annotations,
    )
    async with ApiClient() as api:
        manifest = api.sanitize_for_serialization(claim)
    kubernetes_validate.validate(manifest, "1.28", strict=True)
    assert manifest["kind"] == "PersistentVolumeClaim"
    assert manifest["metadata"]["name"] == f"{POD}-workspace"
    assert manifest["metadata"]["labels"] == labels
    assert manifest["metadata"]["annotations"]["renku.io/project"] == "project"
    assert manifest["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "20Gi"}},
        "storageClassName": "fast-ssd",
    }
    default = podspec.workspace_claim(
        "w", size="10G", storage_class="", labels={}, annotations={}
    )
    async with ApiClient() as api:
        manifest = api.sanitize_for_serialization(default)
    kubernetes_validate.validate(manifest, "1.28", strict=True)
    # no storageClassName at all: "" would ask for no class (a pre-made volume only)
    assert "storageClassName" not in manifest["spec"]
    assert "volume.beta.kubernetes.io/storage-class" not in manifest["metadata"]["annotations"]


def test_the_secrets_values_reach_only_the_secret() -> None:
    pod = base_pod()
    podspec.add_workspace(pod, make_inputs())
    values = SECRET_VALUES
    data = podspec.token_secret_data(
        session_secret=values["session_secret"],
        hub_token=values["hub_token"],
        kernel_spec="{}",
        control_secret=values["control_secret"],
        git_token=values["git_token"],
        ca_file=None,
        component_key=values["component_key"],
    )
    assert data[TOKEN_KEY] == values["git_token"]
    assert data[SECRET_KEY] == values["session_secret"]
    assert data[HUB_TOKEN_KEY] == values["hub_token"]
    assert data[COMPONENT_KEY] == values["component_key"]
    assert "ca.crt" not in data
    manifest = text(pod)
    for value in values.values():
        assert value not in manifest
    # a launch without a token or service token stores neither key
    bare = podspec.token_secret_data(
        session_secret="s",
        hub_token="",
        kernel_spec="{}",
        control_secret=None,
        git_token=None,
        ca_file=None,
        component_key=None,
    )
    assert set(bare) == {SECRET_KEY, HUB_TOKEN_KEY, podspec.KERNEL_KEY}


def test_the_autosave_key_is_mounted_only_into_the_restore_and_the_sidecar() -> None:
    pod = base_pod()
    podspec.add_workspace(pod, make_inputs())
    containers = [*pod.spec.init_containers, *pod.spec.containers]
    having = {c.name for c in containers if podspec.AUTOSAVE_KEY_VOLUME in mounts(c)}
    assert having == {SESSION_CONTAINER, PROXY_CONTAINER}
    for container in containers:
        if container.name in having:
            key = mounts(container)[podspec.AUTOSAVE_KEY_VOLUME]
            assert key.read_only is True and key.mount_path == podspec.AUTOSAVE_KEY_DIR
    session = next(c for c in containers if c.name == SESSION_CONTAINER)
    assert f"{podspec.AUTOSAVE_KEY_DIR}/{AUTOSAVE_KEY}" in session.command


def test_the_sidecar_listens_for_control_on_the_pod_ip_and_autosaves_on_deletion() -> None:
    proxy = podspec.proxy_container(make_inputs(), notebook())
    assert proxy.ports[0].container_port == CONTROL_PORT
    assert f"$({podspec.POD_IP_ENV}):{CONTROL_PORT}" in proxy.command
    assert proxy.env[0].name == podspec.POD_IP_ENV
    assert proxy.env[0].value_from.field_ref.field_path == "status.podIP"
    save = proxy.lifecycle.pre_stop._exec.command
    assert "save" in save and podspec.proxy_url("group/project") in save
    assert proxy.resources is podspec.PROXY_RESOURCES


def test_the_component_serves_the_upstream_or_the_local_repository() -> None:
    settings = podspec.proxy_settings(make_inputs())
    assert settings.upstream == "https://gitlab.example.org" and settings.repo is None
    assert settings.token_file == Path(podspec.TOKEN_DIR, TOKEN_KEY)
    assert settings.key_file == Path(podspec.TOKEN_DIR, COMPONENT_KEY)
    local = podspec.proxy_settings(
        make_inputs(source="file:///srv/repos/group/project.git", token_endpoint=None)
    )
    assert local.repo == Path("/srv/repos/group/project.git") and local.upstream is None
    assert local.token_file is None
    # no service token: no refresh through the glue, so no key or hub token file either
    assert local.token_endpoint is local.key_file is local.hub_token_file is None


def test_profile_resources_replace_only_the_operators_gpu_and_disk() -> None:
    limits, guarantees = podspec.profile_resources(
        {"nvidia.com/gpu": "4", "ephemeral-storage": "1G", "example.com/fpga": "1"},
        {"ephemeral-storage": "1G", "example.com/fpga": "1"},
        gpu=0,
        disk="20Gi",
    )
    assert limits == {"example.com/fpga": "1", "ephemeral-storage": "20Gi"}
    assert guarantees == {"example.com/fpga": "1", "ephemeral-storage": "20Gi"}
    limits, _ = podspec.profile_resources({}, {}, gpu=2, disk="5G")
    assert limits == {"nvidia.com/gpu": "2", "ephemeral-storage": "5G"}


def test_the_pull_secret_holds_only_the_launchs_registry() -> None:
    auths = {
        "registry.example.com": {"auth": "dXNlcjpwYXNz"},
        "https://other.example.org": {"auth": "b3RoZXI6U0VDUkVU"},
    }
    raw = base64.b64encode(json.dumps({"auths": auths}).encode()).decode()
    data = {podspec.DOCKER_CONFIG_KEY: raw}
    entry = podspec.registry_entry(data, "registry.example.com")
    assert entry is not None and json.loads(entry) == {
        "auths": {"registry.example.com": auths["registry.example.com"]}
    }
    assert "b3RoZXI6U0VDUkVU" not in entry
    # an entry under its https:// name is found too; an unknown registry has none
    assert podspec.registry_entry(data, "other.example.org") is not None
    assert podspec.registry_entry(data, "nowhere.example.net") is None
    default = "quay.io/jupyter/base-notebook"
    assert podspec.pull_registry(
        "registry.example.com/g/p:abc", default_image=default, registry_secret="creds"
    ) == "registry.example.com"
    assert podspec.pull_registry(default, default_image=default, registry_secret="creds") is None
    assert podspec.pull_registry("g/p:abc", default_image=default, registry_secret="") is None


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("ubuntu", "docker.io"),
        ("jupyter/base-notebook:2025", "docker.io"),
        ("localhost/x", "localhost"),
        ("registry.example.com:5000/g/p:t", "registry.example.com:5000"),
    ],
)
def test_registry_host_follows_dockers_rule(image: str, registry: str) -> None:
    assert podspec.registry_host(image) == registry


def test_a_launchs_secret_is_owned_by_its_pod() -> None:
    secret = podspec.owned_secret(
        podspec.registry_secret_name(POD),
        pod_name=POD,
        pod_uid="uid-1",
        kind=podspec.DOCKER_CONFIG,
        data={podspec.DOCKER_CONFIG_KEY: "{}"},
        labels={"app": "jupyterhub"},
        annotations={},
    )
    (owner,) = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Pod", POD, "uid-1")
    # z2jh's hub role has no rights on pods/finalizers, which blockOwnerDeletion needs
    assert owner.block_owner_deletion is False
    assert secret.type == "kubernetes.io/dockerconfigjson"
    assert secret.metadata.name == f"{POD}-registry"


def test_labels_fit_and_annotations_keep_the_full_values() -> None:
    long = "a-very-long-group-name-for-testing/with-a-subgroup-that-is-long-as-well-and-more"
    target = Target(namespace=long, project="project", commit_sha=SHA)
    labels = podspec.target_labels(target)
    assert all(len(value) <= 63 for value in labels.values())
    assert labels[f"{podspec.LABEL_PREFIX}commit-sha"] == SHA
    launch = Launch(target=target, profile="small", image="x", image_fallback=True, lfs=False)
    annotations = podspec.target_annotations(launch)
    assert annotations[f"{podspec.LABEL_PREFIX}namespace"] == long
    assert annotations[f"{podspec.LABEL_PREFIX}image-fallback"] == "true"


def test_control_url_brackets_an_ipv6_pod_ip() -> None:
    assert podspec.control_url("10.0.0.7") == f"http://10.0.0.7:{CONTROL_PORT}/autosave"
    assert podspec.control_url("fd00::7", "/usage") == f"http://[fd00::7]:{CONTROL_PORT}/usage"


def test_the_grace_period_leaves_time_for_the_autosave() -> None:
    assert podspec.termination_grace_seconds(60) == 60 + podspec.GRACE_MARGIN_SECONDS
