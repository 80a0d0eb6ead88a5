"""Pure builders of a commit launch's pod, as KubeSpawner's `objects.py` builds its own.

Every function here takes plain inputs (a launch, names, values of the notebooks config;
`PodInputs` gathers the many that the containers share) and returns Kubernetes client
objects or their parts: no spawner, no state, no I/O, no API call. CommitKubeSpawner
(glue.hub.kubespawner) keeps the lifecycle (start, stop, poll, the Secrets it creates and
deletes, the autosave control calls), gathers the inputs from its state and config and calls
these; tests build pods with them directly, without a spawner (tests/test_podspec.py).

What they add to KubeSpawner's pod (never replacing what the Helm chart or an operator
configured: z2jh's own init containers, volumes, labels stay):

- the workspace: a PersistentVolumeClaim of the server's own (`workspace_claim`: the
  profile's disk, `spawner.storageClass`), which the spawner creates at the server's first
  start and keeps while the server is paused, so a resumed pod finds the whole workspace
  (ignored files, installed packages) where its last pod left it. The `git-clone` init
  container runs the same clone step as the local spawner (the command line of
  `clone.step`) into it, which leaves a workspace that already holds its session as it is,
  and the notebook container mounts the checkout at `spawner.workDir`.
- a second init container, `git-session` (`glue.session.gitsession`), that restores the
  user's autosave of this commit (or deletes it when the launch says `"autosave":
  "discard"`), points the checkout's `origin` at the session's git token component and
  writes the user's name and email into it. Its answer (the autosave branch restored, or
  why one was not) is its termination message (REPORT_PATH), which the spawner's start
  reads from the running pod.
- the `git-proxy` sidecar, that component (glue/session/gitproxy.py): it listens on
  127.0.0.1 in the pod's network namespace, so only this pod's containers reach it, and it
  adds the user's GitLab token to git requests for this one project. Its `preStop` hook
  pushes the workspace's unsaved work to the autosave branch (`glue.session.autosave save`)
  whatever deletes the pod (the hub's stop, the culler, an eviction), within
  `terminationGracePeriodSeconds` = `autosave.timeoutSeconds` plus a margin. Its control
  listener (glue/session/autosavecontrol.py) on the pod's IP, port CONTROL_PORT, is what the
  hub asks to autosave before a stop, with the control secret of the pod's Secret.

The user's GitLab token reaches the clone steps and the sidecar only as a file from a
Kubernetes Secret made for this one pod (`token_secret_data`), never the notebook
container: it appears in no pod spec, no environment and no file the notebook can read,
and the pod's API listing (which the original renku-notebooks leaked) shows none. The same
Secret holds the component's per-server secret (the notebook's git presents it; the
notebook may know it), the component key for the glue's `-/git-token`, the server's hub
token, with which the sidecar asks the glue for a fresh GitLab token when GitLab refuses
the old one, and the control secret (for the sidecar; the notebook's git secret does not
open the control port). The notebook mounts only one key of it, the kernel spec. The
signing key of the server's autosave branch (glue/session/autosave.py: the component signs
autosaves with it, the restore checks them) is in a Secret of its own,
`<pod>-autosave-key`, mounted only into the sidecar and the `git-session` init container
that restores (before the sidecar runs), never into the notebook or the clone step.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import ipaddress
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes_asyncio.client import (
    V1Capabilities,
    V1Container,
    V1ContainerPort,
    V1EnvVar,
    V1EnvVarSource,
    V1ExecAction,
    V1KeyToPath,
    V1Lifecycle,
    V1LifecycleHandler,
    V1LocalObjectReference,
    V1ObjectFieldSelector,
    V1ObjectMeta,
    V1OwnerReference,
    V1PersistentVolumeClaim,
    V1PersistentVolumeClaimVolumeSource,
    V1Pod,
    V1ResourceRequirements,
    V1SeccompProfile,
    V1Secret,
    V1SecretVolumeSource,
    V1SecurityContext,
    V1Volume,
    V1VolumeMount,
)
from kubespawner.objects import make_pvc
from kubespawner.slugs import is_valid_label, safe_slug

from glue.core.contracts import (
    AUTOSAVE_KEY,
    CA_KEY,
    CLONE_CONTAINER,
    COMPONENT_KEY,
    CONTROL_KEY,
    CONTROL_PORT,
    CONTROL_PORT_NAME,
    HUB_TOKEN_KEY,
    PROXY_CONTAINER,
    PROXY_PORT,
    SECRET_KEY,
    SESSION_CONTAINER,
    TOKEN_KEY,
)
from glue.core.launch import Launch
from glue.core.target import Target
from glue.session import autosave, autosavecontrol, clone, gitproxy
from glue.session import gitsession as session
from glue.session.clone import TOKEN_FILE_ENV

LABEL_PREFIX = "renku.io/"
EPHEMERAL_STORAGE = "ephemeral-storage"
GPU_RESOURCE = "nvidia.com/gpu"
WORKSPACE_VOLUME = "notebooks-workspace"
# the workspace claim: one pod at a time mounts it, read-write
WORKSPACE_ACCESS_MODES = ["ReadWriteOnce"]
# the kubelet changes a volume's files to the pod's fsGroup only when its top directory does
# not match already: by default (`Always`) it would walk a resumed workspace on every mount
FS_GROUP_CHANGE_POLICY = "OnRootMismatch"
TOKEN_VOLUME = "notebooks-git-token"
# the python3 kernel spec (glue.session.kernel): one key of the pod's Secret, the only one the
# notebook container mounts, named first in its JUPYTER_PATH
KERNEL_VOLUME = "notebooks-kernel-spec"
KERNEL_KEY = "kernel.json"
KERNEL_DIR = "/opt/renku-notebooks/jupyter"
TOKEN_DIR = "/var/run/secrets/renku-notebooks"
# the pod's Secret keys (glue.core.contracts) are files in TOKEN_DIR of the containers that mount it
# the autosave branch's signing key: a Secret and a volume of its own, for the sidecar and the
# restore only (the other Secret is mounted into the clone step too)
AUTOSAVE_KEY_VOLUME = "notebooks-autosave-key"
AUTOSAVE_KEY_DIR = "/var/run/secrets/renku-autosave"
POD_IP_ENV = "POD_IP"
PROXY_RESOURCES = V1ResourceRequirements(
    requests={"cpu": "10m", "memory": "64Mi"}, limits={"memory": "512Mi"}
)
# time a pod deletion leaves beyond the autosave itself (git start-up, the kubelet)
GRACE_MARGIN_SECONDS = 30
# where the kubelet reads a container's termination message from: the session step's answer
REPORT_PATH = "/dev/termination-log"
# the init container sees the whole volume here and clones into its CHECKOUT
# subdirectory, which the notebook container mounts (subPath) at workDir: the
# checkout's top directory is then owned by the cloning (= notebook) user, not
# by root as a volume's mount point is, so git's safe.directory check passes
CLONE_ROOT = "/workspace"
CHECKOUT = "repo"
CLONE_UID = 1000  # the glue image's user, for the clone step of a notebook that runs as root
# the notebook container by default: what the `restricted` Pod Security level asks
RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# the Secrets of a launch: the pod's own (token, component secrets, kernel spec), the autosave
# key's, and the image pull secret whose one key is a dockerconfigjson
OPAQUE = "Opaque"
DOCKER_CONFIG = "kubernetes.io/dockerconfigjson"
DOCKER_CONFIG_KEY = ".dockerconfigjson"


@dataclasses.dataclass(frozen=True)
class PodInputs:
    """What the containers of one launch's pod are built from, gathered once from the
    spawner's state and config (CommitKubeSpawner.pod_inputs), so no builder needs a spawner."""

    launch: Launch
    #: the provider's clone URL (`file://` the local provider's bare repository)
    source: str
    #: KubeSpawner's pod name: the launch's Secrets are named after it
    pod_name: str
    #: the hub's user and server name, which the component serves
    user: str
    server: str
    #: spawner.workDir: where the notebook sees the checkout
    work_dir: str
    #: the server's workspace PersistentVolumeClaim (KubeSpawner's `pvc_name`)
    claim: str
    #: spawner.cloneImage and images.pullPolicy: the image of the git steps and the sidecar
    clone_image: str
    pull_policy: str
    #: the user's git token is in the pod's Secret (a provider that needs one)
    with_token: bool
    #: the operator gave a private CA (provider.caBundle): the Secret holds it combined
    ca_bundle: bool
    #: the user's name and email, for the checkout's git config
    identity: tuple[str, str]
    #: autosave.branchPrefix, this server's autosave branch, autosave.maxFileBytes and
    #: autosave.timeoutSeconds
    autosave_prefix: str
    autosave_branch: str
    autosave_max_file_bytes: int
    autosave_timeout: float
    #: the glue's `-/git-token`, when the component may refresh the token through it (the
    #: hub has the service's token); None: it may not
    token_endpoint: str | None = None


# ---- labels, annotations -------------------------------------------------------------------


def label_value(value: str) -> str:
    """A valid label value (<= 63 safe characters), hashed when changed so values stay distinct."""
    return safe_slug(value, is_valid=is_valid_label, max_length=63)


def target_labels(target: Target) -> dict[str, str]:
    """Labels for selecting pods by namespace, project and commit (`kubectl get pods -l ...`)."""
    return {
        f"{LABEL_PREFIX}namespace": label_value(target.namespace),
        f"{LABEL_PREFIX}project": label_value(target.project),
        f"{LABEL_PREFIX}commit-sha": target.commit_sha,
    }


def target_annotations(launch: Launch) -> dict[str, str]:
    """The full values, which labels may have had to shorten or hash."""
    target = launch.target
    return {
        f"{LABEL_PREFIX}namespace": target.namespace,
        f"{LABEL_PREFIX}project": target.project,
        f"{LABEL_PREFIX}commit-sha": target.commit_sha,
        f"{LABEL_PREFIX}image-fallback": str(launch.image_fallback).lower(),
    }


# ---- security, resources, grace ------------------------------------------------------------


def notebook_security_context(uid: int | None) -> dict[str, Any]:
    """The notebook passes `restricted` unless the operator runs it as root (uid 0)."""
    return {} if uid == 0 else dict(RESTRICTED_CONTAINER)


def restricted_security_context(
    run_as_user: int | None, run_as_group: int | None
) -> V1SecurityContext:
    """The clone step needs no privilege at all: non-root, no escalation, no capabilities."""
    return V1SecurityContext(
        run_as_user=run_as_user,
        run_as_group=run_as_group,
        run_as_non_root=True,
        allow_privilege_escalation=False,
        capabilities=V1Capabilities(drop=["ALL"]),
        seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
    )


def profile_resources(
    limits: dict[str, str], guarantees: dict[str, str], *, gpu: int, disk: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The notebook's extra resource limits and guarantees for a profile: its GPUs as a limit,
    its disk as the `ephemeral-storage` request and limit (the pod is scheduled where that
    much is free, and evicted past it: its writable layer and its logs count; the workspace
    is its claim, of the same disk). An operator's own GPU and ephemeral-storage values give
    way; their other resources are kept."""
    own = (GPU_RESOURCE, EPHEMERAL_STORAGE)
    limits = {k: v for k, v in limits.items() if k not in own}
    guarantees = {k: v for k, v in guarantees.items() if k not in own}
    if gpu:
        limits[GPU_RESOURCE] = str(gpu)
    limits[EPHEMERAL_STORAGE] = guarantees[EPHEMERAL_STORAGE] = disk
    return limits, guarantees


def step_resources(notebook: V1Container) -> V1ResourceRequirements:
    """An init step runs with the notebook's cpu and memory (a big clone or restore needs
    them, and the pod is sized for them anyway); no GPU."""
    resources = notebook.resources or V1ResourceRequirements()
    keep = ("cpu", "memory")
    return V1ResourceRequirements(
        requests={k: v for k, v in (resources.requests or {}).items() if k in keep},
        limits={k: v for k, v in (resources.limits or {}).items() if k in keep},
    )


def termination_grace_seconds(autosave_timeout: int) -> int:
    """The pod's terminationGracePeriodSeconds: time for its preStop autosave, plus a margin."""
    return int(autosave_timeout) + GRACE_MARGIN_SECONDS


# ---- the kernel spec ------------------------------------------------------------------------


def kernel_path_first(env: list[Any]) -> list[Any]:
    """The notebook's environment with the kernel spec's directory first in JUPYTER_PATH
    (before an operator's own JUPYTER_PATH, kept behind it)."""
    kept, theirs = [], ""
    for var in env:
        name = var.get("name") if isinstance(var, dict) else var.name
        if name != "JUPYTER_PATH":
            kept.append(var)
        else:
            theirs = (var.get("value") if isinstance(var, dict) else var.value) or ""
    value = f"{KERNEL_DIR}:{theirs}" if theirs else KERNEL_DIR
    return [*kept, V1EnvVar(name="JUPYTER_PATH", value=value)]


def kernel_volume(pod_name: str) -> V1Volume:
    """The kernel spec (glue.session.kernel) from the pod's Secret: only that key, readable
    by all (the notebook's user); the Secret's other keys never reach the notebook."""
    path = "kernels/python3/kernel.json"
    return V1Volume(
        name=KERNEL_VOLUME,
        secret=V1SecretVolumeSource(
            secret_name=token_secret_name(pod_name),
            items=[V1KeyToPath(key=KERNEL_KEY, path=path, mode=0o444)],
        ),
    )


# ---- registries -----------------------------------------------------------------------------


def registry_host(image: str) -> str:
    """The registry of an image reference (Docker's rule: a first part with `.` or `:`)."""
    first, _, rest = image.partition("/")
    return first if rest and ("." in first or ":" in first or first == "localhost") else "docker.io"


def pull_registry(image: str, *, default_image: str, registry_secret: str) -> str | None:
    """The registry whose credentials this launch's pod needs: a per-commit image's (not the
    default image's), when the operator gave registry credentials (spawner.registrySecret)."""
    return registry_host(image) if image != default_image and registry_secret else None


def registry_entry(data: dict[str, str], registry: str) -> str | None:
    """A dockerconfigjson with only `registry`'s entry, from a Secret's base64 `data`."""
    raw = data.get(DOCKER_CONFIG_KEY)
    if not raw:
        return None
    auths = json.loads(base64.b64decode(raw)).get("auths") or {}
    entry = auths.get(registry) or auths.get(f"https://{registry}")
    return json.dumps({"auths": {registry: entry}}) if entry else None


def add_pull_secret(pod: V1Pod, secret_name: str) -> None:
    """Append (never replace) the launch's image pull secret to the pod's, in place."""
    pod.spec.image_pull_secrets = [
        *(pod.spec.image_pull_secrets or []),
        V1LocalObjectReference(name=secret_name),
    ]


# ---- the launch's Secrets -------------------------------------------------------------------


def token_secret_name(pod_name: str) -> str:
    return f"{pod_name}-git-token"


def autosave_key_secret_name(pod_name: str) -> str:
    return f"{pod_name}-autosave-key"


def registry_secret_name(pod_name: str) -> str:
    return f"{pod_name}-registry"


def token_secret_data(
    *,
    session_secret: str,
    hub_token: str,
    kernel_spec: str,
    control_secret: str | None,
    git_token: str | None,
    ca_file: str | None,
    component_key: str | None,
) -> dict[str, str]:
    """The pod's Secret: the component's secret, the server's hub token and the kernel spec
    always; the control secret, the user's git token, the combined CA bundle
    (`trust.combined`) and the component key when there are. Each key is a file in TOKEN_DIR
    of the containers that mount the Secret, the notebook only KERNEL_KEY."""
    data = {SECRET_KEY: session_secret, HUB_TOKEN_KEY: hub_token}
    data[KERNEL_KEY] = kernel_spec
    if control_secret:
        data[CONTROL_KEY] = control_secret
    if git_token:
        data[TOKEN_KEY] = git_token
    if ca_file:
        data[CA_KEY] = ca_file
    if component_key:
        data[COMPONENT_KEY] = component_key
    return data


def owned_secret(
    name: str,
    *,
    pod_name: str,
    pod_uid: str,
    kind: str,
    data: dict[str, str],
    labels: dict[str, str],
    annotations: dict[str, str],
) -> V1Secret:
    """A Secret of a launch, labelled like its pod and owned by it, so Kubernetes deletes it
    with the pod whatever stops it (hub, culler, `kubectl`, node loss)."""
    # blockOwnerDeletion would need rights on pods/finalizers, which z2jh's hub role lacks
    owner = V1OwnerReference(
        api_version="v1",
        kind="Pod",
        name=pod_name,
        uid=pod_uid,
        block_owner_deletion=False,
        controller=False,
    )
    return V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=V1ObjectMeta(
            name=name, labels=labels, annotations=annotations, owner_references=[owner]
        ),
        type=kind,
        string_data=data,
    )


# ---- the workspace, the git steps and the sidecar -------------------------------------------


def workspace_claim(
    name: str,
    *,
    size: str,
    storage_class: str,
    labels: dict[str, str],
    annotations: dict[str, str],
) -> V1PersistentVolumeClaim:
    """A server's workspace claim, as KubeSpawner's `make_pvc` shapes a user's: `size` (the
    profile's disk), ReadWriteOnce, `storage_class` ("" names none: the cluster's default)."""
    return make_pvc(
        name=name,
        storage_class=storage_class or None,
        access_modes=list(WORKSPACE_ACCESS_MODES),
        selector=None,
        storage=size,
        labels=labels,
        annotations=annotations,
    )


def add_workspace(pod: V1Pod, inputs: PodInputs) -> None:
    """Append (never replace) our volumes, mounts, init containers and sidecar to KubeSpawner's
    pod, in place; its first container is the notebook."""
    spec = pod.spec
    notebook = spec.containers[0]
    # group-readable via fsGroup when the pod has one, else readable in the containers that
    # mount it (the clone steps and the sidecar; never the notebook)
    fs_group = _field(spec.security_context, "fsGroup", "fs_group")
    mode = 0o440 if fs_group else 0o444
    if fs_group:
        _set_default(
            spec.security_context,
            "fsGroupChangePolicy",
            "fs_group_change_policy",
            FS_GROUP_CHANGE_POLICY,
        )
    claim = V1PersistentVolumeClaimVolumeSource(claim_name=inputs.claim)
    volumes = [
        V1Volume(name=WORKSPACE_VOLUME, persistent_volume_claim=claim),
        V1Volume(
            name=TOKEN_VOLUME,
            secret=V1SecretVolumeSource(
                secret_name=token_secret_name(inputs.pod_name), default_mode=mode
            ),
        ),
        V1Volume(
            name=AUTOSAVE_KEY_VOLUME,
            secret=V1SecretVolumeSource(
                secret_name=autosave_key_secret_name(inputs.pod_name), default_mode=mode
            ),
        ),
    ]
    spec.volumes = [*(spec.volumes or []), *volumes, kernel_volume(inputs.pod_name)]
    notebook.volume_mounts = [
        *(notebook.volume_mounts or []),
        V1VolumeMount(name=WORKSPACE_VOLUME, mount_path=inputs.work_dir, sub_path=CHECKOUT),
        V1VolumeMount(name=KERNEL_VOLUME, mount_path=KERNEL_DIR, read_only=True),
    ]
    notebook.env = kernel_path_first(notebook.env or [])
    spec.init_containers = [
        *(spec.init_containers or []),
        clone_container(inputs, notebook),
        session_container(inputs, notebook),
    ]
    spec.containers = [*spec.containers, proxy_container(inputs, notebook)]


def clone_container(inputs: PodInputs, notebook: V1Container) -> V1Container:
    """The init container running the clone step, as the notebook's user and size."""
    launch = inputs.launch
    command, step_env = clone.step(
        inputs.source,
        launch.target.commit_sha,
        f"{CLONE_ROOT}/{CHECKOUT}",
        lfs=launch.lfs,
        token_file=f"{TOKEN_DIR}/{TOKEN_KEY}" if inputs.with_token else None,
    )
    return glue_container(
        inputs,
        CLONE_CONTAINER,
        notebook,
        command,
        step_env,
        step_resources(notebook),
        # the token (or CA bundle) only when there is one; the session step and the
        # sidecar always need the Secret (the component's secret)
        secret=inputs.with_token or inputs.ca_bundle,
    )


def session_container(inputs: PodInputs, notebook: V1Container) -> V1Container:
    """The init container after the clone: the autosave back (or deleted on `discard`),
    `origin` through the sidecar, the user's name and email (`glue.session.gitsession`)."""
    launch = inputs.launch
    name, email = inputs.identity
    command, step_env = session.step(
        f"{CLONE_ROOT}/{CHECKOUT}",
        origin=proxy_url(launch.target.full_path),
        secret_file=f"{TOKEN_DIR}/{SECRET_KEY}",
        name=name,
        email=email,
        seen_as=inputs.work_dir,
        remote=inputs.source,
        branch=inputs.autosave_branch,
        launched=launch.target.commit_sha,
        discard=launch.autosave == "discard",
        report=REPORT_PATH,
        token_file=f"{TOKEN_DIR}/{TOKEN_KEY}" if inputs.with_token else None,
        key_file=f"{AUTOSAVE_KEY_DIR}/{AUTOSAVE_KEY}",
    )
    return glue_container(
        inputs,
        SESSION_CONTAINER,
        notebook,
        command,
        step_env,
        step_resources(notebook),
        secret=True,
        autosave_key=True,
    )


def proxy_url(full_path: str) -> str:
    """The project's URL for the session's git: the sidecar's, on the pod's loopback."""
    return f"http://127.0.0.1:{PROXY_PORT}/{full_path}.git"


def proxy_settings(inputs: PodInputs) -> gitproxy.Settings:
    """What the component serves: the provider's project, with refresh through the glue
    when the hub gave the service's token (z2jh's `hub.services.<name>.apiToken`)."""
    full_path = inputs.launch.target.full_path
    upstream, repo = None, None
    if inputs.source.startswith("file://"):  # the local provider: its bare repository
        repo = Path(urlsplit(inputs.source).path)
    else:
        upstream = inputs.source.removesuffix(f"/{full_path}.git")
    refresh = bool(inputs.token_endpoint)
    return gitproxy.Settings(
        project=full_path,
        secret_file=Path(TOKEN_DIR, SECRET_KEY),
        upstream=upstream,
        token_file=Path(TOKEN_DIR, TOKEN_KEY) if upstream else None,
        repo=repo,
        token_endpoint=inputs.token_endpoint if refresh else None,
        key_file=Path(TOKEN_DIR, COMPONENT_KEY) if refresh else None,
        hub_token_file=Path(TOKEN_DIR, HUB_TOKEN_KEY) if refresh else None,
        user=inputs.user,
        server=inputs.server,
        autosave_prefix=inputs.autosave_prefix,
        autosave_branch=inputs.autosave_branch,
        signing_key_file=Path(AUTOSAVE_KEY_DIR, AUTOSAVE_KEY),
    )


def proxy_container(inputs: PodInputs, notebook: V1Container) -> V1Container:
    """The sidecar: the session's git token component, the hub's autosave control, and
    the autosave on pod deletion.

    It mounts the whole workspace volume (the autosave reads the checkout) and the
    Secret; its preStop hook and its control listener (on the pod's IP, which the
    kubelet puts into its command line) push through the component itself, whose
    token refresh then also covers a stop hours after the launch.
    """
    target = inputs.launch.target
    control = autosavecontrol.Settings(
        secret_file=Path(TOKEN_DIR, CONTROL_KEY),
        workspace=f"{CLONE_ROOT}/{CHECKOUT}",
        launched=target.commit_sha,
        remote=proxy_url(target.full_path),
        branch=inputs.autosave_branch,
        max_file_bytes=inputs.autosave_max_file_bytes,
        timeout=inputs.autosave_timeout,
        identity=inputs.identity,
    )
    proxy = gitproxy.step(proxy_settings(inputs), listen=f"127.0.0.1:{PROXY_PORT}")
    command, _ = autosavecontrol.step(control, f"$({POD_IP_ENV}):{CONTROL_PORT}", proxy)
    save, _ = autosave.step(
        "save",
        workspace=control.workspace,
        launched=control.launched,
        remote=control.remote,
        branch=control.branch,
        max_file_bytes=control.max_file_bytes,
        identity=control.identity,
    )
    container = glue_container(
        inputs,
        PROXY_CONTAINER,
        notebook,
        command,
        # the autosave's git presents the component's secret, as the notebook's git does
        {TOKEN_FILE_ENV: f"{TOKEN_DIR}/{SECRET_KEY}"},
        PROXY_RESOURCES,
        secret=True,
        autosave_key=True,
    )
    pod_ip = V1EnvVarSource(field_ref=V1ObjectFieldSelector(field_path="status.podIP"))
    container.env = [V1EnvVar(name=POD_IP_ENV, value_from=pod_ip), *container.env]
    container.ports = [
        V1ContainerPort(name=CONTROL_PORT_NAME, container_port=CONTROL_PORT, protocol="TCP")
    ]
    container.lifecycle = V1Lifecycle(pre_stop=V1LifecycleHandler(_exec=V1ExecAction(command=save)))
    return container


def control_url(host: str, path: str = autosavecontrol.PATH) -> str:
    """The sidecar's control listener at `host`, the pod's IP (bracketed when IPv6)."""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"http://{host}:{CONTROL_PORT}{path}"


def glue_container(
    inputs: PodInputs,
    name: str,
    notebook: V1Container,
    command: list[str],
    env: dict[str, str],
    resources: V1ResourceRequirements,
    *,
    secret: bool,
    autosave_key: bool = False,
) -> V1Container:
    """A container of the glue image on the workspace volume, as the notebook's user; the
    pod's Secret (`secret`) and the autosave key's (`autosave_key`) mounted read-only only
    when asked for."""
    mounts = [V1VolumeMount(name=WORKSPACE_VOLUME, mount_path=CLONE_ROOT)]
    if autosave_key:
        mounts.append(
            V1VolumeMount(name=AUTOSAVE_KEY_VOLUME, mount_path=AUTOSAVE_KEY_DIR, read_only=True)
        )
    if secret:
        mounts.append(V1VolumeMount(name=TOKEN_VOLUME, mount_path=TOKEN_DIR, read_only=True))
        if inputs.ca_bundle:  # git (GnuTLS or OpenSSL) and Python, at process start
            ca_file = f"{TOKEN_DIR}/{CA_KEY}"
            env = {**env, "GIT_SSL_CAINFO": ca_file, "SSL_CERT_FILE": ca_file}
    context = notebook.security_context
    uid = _field(context, "runAsUser", "run_as_user")
    return V1Container(
        name=name,
        image=inputs.clone_image,
        image_pull_policy=inputs.pull_policy,
        command=command,
        env=[
            V1EnvVar(name="HOME", value="/tmp"),
            *(V1EnvVar(name=k, value=v) for k, v in env.items()),
        ],
        volume_mounts=mounts,
        resources=resources,
        # a notebook run as root (docker-stacks images) still gets non-root git steps
        security_context=restricted_security_context(
            CLONE_UID if uid == 0 else uid,
            _field(context, "runAsGroup", "run_as_group"),
        ),
    )


def _field(obj: Any, camel: str, snake: str) -> Any:
    """A field of a security context, which KubeSpawner builds as a camelCase dict, or a model."""
    if isinstance(obj, dict):
        return obj.get(camel)
    return getattr(obj, snake, None)


def _set_default(obj: Any, camel: str, snake: str, value: Any) -> None:
    """Set a field of a security context (dict or model) unless the operator set it."""
    if isinstance(obj, dict):
        obj.setdefault(camel, value)
    elif getattr(obj, snake, None) is None:
        setattr(obj, snake, value)
