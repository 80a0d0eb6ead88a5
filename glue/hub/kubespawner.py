"""KubeSpawner for commit launches: one pod per server, its commit cloned by an init container.

The pod gets an emptyDir workspace. Our init container runs the same clone
step as the local spawner (the command line of `clone.step`) into it, and the
notebook container mounts the checkout at `spawner.workDir`. Everything the
Helm chart or an operator configured on KubeSpawner (z2jh's own init
containers, volumes, labels) is kept: we only add to the pod.

A second init container (`git-session`, `glue.session.gitsession`) restores the
user's autosave of this commit (or deletes it when the launch says
`"autosave": "discard"`), points the checkout's `origin` at the session's git
token component and writes the user's name and email into it. Its answer (the
autosave branch restored, or why one was not) is its termination message, which
`start()` reads from the running pod into the server's user_options, as the
local spawner records its own session step's answer.

That component (glue/session/gitproxy.py) is the `git-proxy` sidecar: it listens on
127.0.0.1 in the pod's network namespace, so only this pod's containers reach
it, and it adds the user's GitLab token to git requests for this one project.
Its `preStop` hook pushes the workspace's unsaved work to the autosave branch
(`glue.session.autosave save`) whatever deletes the pod (the hub's stop, the culler,
an eviction), within `terminationGracePeriodSeconds` = `autosave.timeoutSeconds`
plus a margin. A stop through the glue or the culler autosaves before it
deletes the pod, and is refused when that fails: `autosave()` asks the
sidecar's control listener (glue/session/autosavecontrol.py) on the pod's IP, port
CONTROL_PORT, with a control secret that this spawner makes for each pod and
keeps in its state (the hub's database), so it also works after a hub restart.

The user's GitLab token reaches the clone steps and the sidecar only as a
file from a Kubernetes Secret made for this one pod, never the notebook
container: it appears in no pod spec, no environment and no file the notebook
can read, and the pod's API listing (which the original renku-notebooks
leaked) shows none. The same Secret holds the component's per-server secret
(the notebook's git presents it; the notebook may know it), the component key
for the glue's `-/git-token` and the server's hub token, with which the
sidecar asks the glue for a fresh GitLab token when GitLab refuses the old one.
The Secret also holds the control secret (for the sidecar; the notebook's git
secret does not open the control port). The signing key of the server's
autosave branch (glue/session/autosave.py: the component signs autosaves with it, the
restore checks them) is in a Secret of its own, `<pod>-autosave-key`, mounted
only into the sidecar and the `git-session` init container that restores
(before the sidecar runs), never into the notebook or the clone step.
The Secret is created once the pod exists, owned by the pod, so Kubernetes
deletes it with the pod whatever stops it (hub, culler, `kubectl`, node
loss); `stop()` and `delete_forever()` also delete it at once. The hub's
z2jh role allows exactly this: create and delete on Secrets, no patch.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import secrets
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from jupyterhub.utils import exponential_backoff, maybe_future
from kubernetes_asyncio.client import (
    V1Capabilities,
    V1Container,
    V1ContainerPort,
    V1DeleteOptions,
    V1EmptyDirVolumeSource,
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
    V1Pod,
    V1ResourceRequirements,
    V1SeccompProfile,
    V1Secret,
    V1SecretVolumeSource,
    V1SecurityContext,
    V1Volume,
    V1VolumeMount,
)
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from kubespawner.slugs import is_valid_label, safe_slug
from traitlets import Integer, default

from glue.core import trust
from glue.core.config import Profile
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
    component_key,
)
from glue.core.errors import AutosaveFailed
from glue.core.launch import DISK, POD_NAME, STOP_FAILED, Launch
from glue.core.target import Target
from glue.hub import internals
from glue.hub.commitspawner import Checked, CommitSpawnerMixin, memory_bytes
from glue.hub.disk import Usage
from glue.session import autosave, autosavecontrol, clone, gitproxy, kernel
from glue.session import gitsession as session
from glue.session.clone import TOKEN_FILE_ENV

LABEL_PREFIX = "renku.io/"
EPHEMERAL_STORAGE = "ephemeral-storage"
WORKSPACE_VOLUME = "notebooks-workspace"
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
# the spawner's state key of the control secret; the hub waits this much beyond the step's time
CONTROL_STATE = "autosave_control_secret"
CONTROL_MARGIN_SECONDS = 5
# how long the disk watch waits for the sidecar's usage (each poll asks again)
USAGE_SECONDS = 10
PROXY_RESOURCES = V1ResourceRequirements(
    requests={"cpu": "10m", "memory": "64Mi"}, limits={"memory": "512Mi"}
)
# time a pod deletion leaves beyond the autosave itself (git start-up, the kubelet)
GRACE_MARGIN_SECONDS = 30
# where the kubelet reads a container's termination message from: the session step's answer
REPORT_PATH = "/dev/termination-log"
# its refusal to restore, once the pod runs: after KubeSpawner's pod events (which approach 90)
SESSION_REPORT_PROGRESS = 90
# the init container sees the whole volume here and clones into its CHECKOUT
# subdirectory, which the notebook container mounts (subPath) at workDir: the
# checkout's top directory is then owned by the cloning (= notebook) user, not
# by root as a volume's mount point is, so git's safe.directory check passes
CLONE_ROOT = "/workspace"
CHECKOUT = "repo"
GPU_RESOURCE = "nvidia.com/gpu"


CLONE_UID = 1000  # the glue image's user, for the clone step of a notebook that runs as root
PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
# the notebook container by default: what the `restricted` Pod Security level asks
RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# a pod that a stop could not delete: first retry after this, doubling up to the maximum
LEFT_BEHIND_RETRY_SECONDS = 5.0
LEFT_BEHIND_RETRY_MAX_SECONDS = 300.0
LEFT_BEHIND_STATE = "pod_left_behind"


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


def registry_host(image: str) -> str:
    """The registry of an image reference (Docker's rule: a first part with `.` or `:`)."""
    first, _, rest = image.partition("/")
    return first if rest and ("." in first or ":" in first or first == "localhost") else "docker.io"


def registry_entry(data: dict[str, str], registry: str) -> str | None:
    """A dockerconfigjson with only `registry`'s entry, from a Secret's base64 `data`."""
    raw = data.get(".dockerconfigjson")
    if not raw:
        return None
    auths = json.loads(base64.b64decode(raw)).get("auths") or {}
    entry = auths.get(registry) or auths.get(f"https://{registry}")
    return json.dumps({"auths": {registry: entry}}) if entry else None


def step_resources(notebook: V1Container) -> V1ResourceRequirements:
    """An init step runs with the notebook's cpu and memory (a big clone or restore needs
    them, and the pod is sized for them anyway); no GPU."""
    resources = notebook.resources or V1ResourceRequirements()
    keep = ("cpu", "memory")
    return V1ResourceRequirements(
        requests={k: v for k, v in (resources.requests or {}).items() if k in keep},
        limits={k: v for k, v in (resources.limits or {}).items() if k in keep},
    )


def _field(obj: Any, camel: str, snake: str) -> Any:
    """A field of a security context, which KubeSpawner builds as a camelCase dict, or a model."""
    if isinstance(obj, dict):
        return obj.get(camel)
    return getattr(obj, snake, None)


async def _after_pod_created(spawner: CommitKubeSpawner, pod: dict[str, Any]) -> None:
    """KubeSpawner's after_pod_created_hook: the pod has a uid now, so it can own its Secret."""
    await spawner.create_token_secret(pod["metadata"]["uid"])
    await spawner.create_registry_secret(pod["metadata"]["uid"])
    if spawner.operator_after_pod_created_hook:
        await maybe_future(spawner.operator_after_pod_created_hook(spawner, pod))


class CommitKubeSpawner(CommitSpawnerMixin, KubeSpawner):
    """KubeSpawner that launches one checked-out commit, after the same checks as the glue."""

    delete_grace_period = Integer(
        help="Seconds a deleted pod has for its preStop autosave (autosave.timeoutSeconds + "
        "a margin); also the pod's terminationGracePeriodSeconds."
    ).tag(config=True)

    _launch: Launch | None = None
    _source: str | None = None
    _git_token: str | None = None
    # the component's secret for this server's git: kept only until the pod's Secret holds it
    _session_secret: str | None = None
    # what the hub presents to this pod's sidecar to autosave: kept (state) while it runs
    control_secret: str | None = None
    # the autosave branch's signing key: kept only until its Secret holds it
    _autosave_key: str | None = None
    _identity: tuple[str, str] = ("", "")
    # the registry host of a per-commit image, when the operator gave registry credentials
    _pull_registry: str | None = None
    # set while KubeSpawner waits for the pod: a failed image pull then ends the launch
    _waiting_for_pod = False
    # set when a stop could not delete the pod: it may still run, so the hub keeps the server
    # (`active`) while `_retry_deletion` deletes it; kept in the spawner's state
    _pod_left_behind = False
    _retrying: asyncio.Task[None] | None = None
    # KubeSpawner traits read here before this class sets them (kubespawner ships no types)
    after_pod_created_hook: Any
    extra_resource_limits: dict[str, str]
    extra_resource_guarantees: dict[str, str]
    extra_labels: dict[str, str]
    extra_annotations: dict[str, str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # keep an operator's hook (z2jh `hub.config`) and run it after ours
        self.operator_after_pod_created_hook = self.after_pod_created_hook
        self.after_pod_created_hook = _after_pod_created

    async def start(self) -> str:
        # no more retries: they would delete this start's pod, which has the same name; a pod
        # left behind meets KubeSpawner's creation (409), which deletes it through stop()
        if self._retrying is not None:
            self._retrying.cancel()
        self._pod_left_behind = False
        # before anything is awaited: the hub's 202 already shows which pod to read logs of
        self.record(**{POD_NAME: self.pod_name})
        checked = await self.prepare_launch()
        self.shape_pod(checked)
        launch, target = checked.launch, checked.launch.target
        image = f"{launch.image} (default image)" if launch.image_fallback else launch.image
        self.emit(
            20, f"Starting a server for {target.full_path} at {target.commit_sha[:7]} with {image}"
        )
        self.hand_over()
        self._waiting_for_pod = True
        try:
            url: str = await super().start()
        finally:
            self._waiting_for_pod = False
        # the pod runs: its session step's answer says where the workspace's unsaved work came
        # from; the disk watch (poll) reads the sidecar's usage against the disk. Committed
        # with the start
        session = self.session_outcome(self.session_report(), SESSION_REPORT_PROGRESS)
        disk = self.profile_named(launch.profile)["disk"]
        self.record(**session, **{DISK: {"limit": disk, "near_limit": False}})
        return url

    def session_report(self) -> dict[str, Any]:
        """The `git-session` init container's answer (glue.session.gitsession), which the kubelet
        put into its termination message: read from the pod as KubeSpawner's reflector holds it
        once the pod runs. A missing or garbled report is `{}` and one line in the hub's log: the
        start goes on, it only cannot say where the workspace came from."""
        ref_key = f"{self.namespace}/{self.pod_name}"  # KubeSpawner's key of its pod
        why = "no such pod"
        try:
            reflector = self.pod_reflector
            pod = reflector.pods.get(ref_key) if reflector is not None else None
            if pod is not None:
                why = f"no {SESSION_CONTAINER} init container status"
                for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
                    if status.get("name") != SESSION_CONTAINER:
                        continue
                    terminated = (status.get("state") or {}).get("terminated") or {}
                    why = "no termination message"
                    message = terminated.get("message")
                    if message:
                        why = "not a JSON object"
                        answer = json.loads(message)
                        if isinstance(answer, dict):
                            return answer
                    break
        except (AttributeError, TypeError, ValueError):
            why = "not readable"
        self.log.warning(
            "%s: the pod %s has no usable session report (%s); where its workspace came from "
            "is not recorded",
            self.log_label,
            ref_key,
            why,
        )
        return {}

    @default("delete_grace_period")
    def _autosave_grace(self) -> int:
        return int(self.notebooks["autosave"]["timeoutSeconds"]) + GRACE_MARGIN_SECONDS

    @default("container_security_context")
    def _restricted_notebook(self) -> Any:
        """The notebook passes `restricted` unless the operator runs it as root (uid 0)."""
        return lambda spawner: {} if spawner.uid == 0 else dict(RESTRICTED_CONTAINER)

    def is_pod_running(self, pod: dict[str, Any] | None) -> bool:
        """KubeSpawner's check, but an image that cannot be pulled fails the start now, with the
        kubelet's reason, instead of after the start timeout."""
        if self._waiting_for_pod and pod is not None:
            status = pod.get("status") or {}
            for container in [
                *(status.get("initContainerStatuses") or []),
                *(status.get("containerStatuses") or []),
            ]:
                waiting = (container.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in PULL_FAILURES:
                    raise RuntimeError(
                        f"The image {container.get('image')} cannot be pulled "
                        f"({waiting['reason']}): {waiting.get('message') or 'no detail'}"
                    )
        return super().is_pod_running(pod)

    async def load_user_options(self) -> None:
        """Profiles come from the notebooks config (applied by prepare_launch), not KubeSpawner's
        profile_list, whose overrides would run after ours and undo them."""

    def apply_profile(self, name: str) -> Profile:
        """The profile's cpu, memory (Kubernetes units) and GPUs, as requests and limits; its
        disk as the notebook's `ephemeral-storage` request and limit (the pod is scheduled
        where that much is free, and evicted past it: its writable layer, its logs and the
        workspace's emptyDir, whose `sizeLimit` add_workspace sets, all count)."""
        profile = super().apply_profile(name)
        own = (GPU_RESOURCE, EPHEMERAL_STORAGE)
        limits = {k: v for k, v in self.extra_resource_limits.items() if k not in own}
        guarantees = {k: v for k, v in self.extra_resource_guarantees.items() if k not in own}
        if profile["gpu"]:
            limits[GPU_RESOURCE] = str(profile["gpu"])
        limits[EPHEMERAL_STORAGE] = guarantees[EPHEMERAL_STORAGE] = profile["disk"]
        self.extra_resource_limits = limits
        self.extra_resource_guarantees = guarantees
        return profile

    def shape_pod(self, checked: Checked) -> None:
        """Set what the pod runs from a checked launch; get_pod_manifest() adds the workspace."""
        config = self.notebooks
        work_dir = config["spawner"]["workDir"]
        launch = checked.launch
        self._launch, self._source = launch, checked.source
        self._git_token = checked.caller.git_token
        self._session_secret = secrets.token_urlsafe(32)
        self.control_secret = secrets.token_urlsafe(32)
        self._autosave_key = self.autosave_key(launch)
        self._identity = checked.caller.identity()
        self.image = launch.image
        self.image_pull_policy = config["images"]["pullPolicy"]
        self.working_dir = self.notebook_dir = work_dir
        self.default_url = self.lab_url(launch)
        self.extra_labels = {**self.extra_labels, **target_labels(launch.target)}
        self.extra_annotations = {**self.extra_annotations, **target_annotations(launch)}
        own_image = launch.image != config["images"]["default"]
        self._pull_registry = (
            registry_host(launch.image)
            if own_image and config["spawner"]["registrySecret"]
            else None
        )

    async def get_pod_manifest(self) -> V1Pod:
        """KubeSpawner's pod, plus the workspace volume and our clone init container."""
        pod = await super().get_pod_manifest()
        if self._launch is not None:
            self.add_workspace(pod, self._launch, with_token=bool(self._git_token))
            pod.spec.termination_grace_period_seconds = self.delete_grace_period
        if self._pull_registry:
            pod.spec.image_pull_secrets = [
                *(pod.spec.image_pull_secrets or []),
                V1LocalObjectReference(name=self.registry_secret_name),
            ]
        return pod

    def add_workspace(self, pod: V1Pod, launch: Launch, *, with_token: bool) -> None:
        """Append (never replace) our volumes, mount and init container to the pod."""
        spec = pod.spec
        notebook = spec.containers[0]
        # group-readable via fsGroup when the pod has one, else readable in the containers that
        # mount it (the clone steps and the sidecar; never the notebook)
        mode = 0o440 if _field(spec.security_context, "fsGroup", "fs_group") else 0o444
        disk = self.profile_named(launch.profile)["disk"]
        volumes = [
            V1Volume(name=WORKSPACE_VOLUME, empty_dir=V1EmptyDirVolumeSource(size_limit=disk)),
            V1Volume(
                name=TOKEN_VOLUME,
                secret=V1SecretVolumeSource(secret_name=self.token_secret_name, default_mode=mode),
            ),
            V1Volume(
                name=AUTOSAVE_KEY_VOLUME,
                secret=V1SecretVolumeSource(
                    secret_name=self.autosave_key_secret_name, default_mode=mode
                ),
            ),
        ]
        spec.volumes = [*(spec.volumes or []), *volumes, self.kernel_volume()]
        notebook.volume_mounts = [
            *(notebook.volume_mounts or []),
            V1VolumeMount(
                name=WORKSPACE_VOLUME,
                mount_path=self.notebooks["spawner"]["workDir"],
                sub_path=CHECKOUT,
            ),
            V1VolumeMount(name=KERNEL_VOLUME, mount_path=KERNEL_DIR, read_only=True),
        ]
        notebook.env = kernel_path_first(notebook.env or [])
        spec.init_containers = [
            *(spec.init_containers or []),
            self.clone_container(launch, notebook, with_token=with_token),
            self.session_container(launch, notebook, with_token=with_token),
        ]
        spec.containers = [*spec.containers, self.proxy_container(launch, notebook)]

    def kernel_volume(self) -> V1Volume:
        """The kernel spec (glue.session.kernel) from the pod's Secret: only that key, readable
        by all         (the notebook's user); the Secret's other keys never reach the notebook."""
        path = "kernels/python3/kernel.json"
        return V1Volume(
            name=KERNEL_VOLUME,
            secret=V1SecretVolumeSource(
                secret_name=self.token_secret_name,
                items=[V1KeyToPath(key=KERNEL_KEY, path=path, mode=0o444)],
            ),
        )

    def clone_container(
        self, launch: Launch, notebook: V1Container, *, with_token: bool
    ) -> V1Container:
        """The init container running the clone step, as the notebook's user and size."""
        assert self._source is not None, "shape_pod() sets the clone source before the pod"
        command, step_env = clone.step(
            self._source,
            launch.target.commit_sha,
            f"{CLONE_ROOT}/{CHECKOUT}",
            lfs=launch.lfs,
            token_file=f"{TOKEN_DIR}/{TOKEN_KEY}" if with_token else None,
        )
        return self.glue_container(
            CLONE_CONTAINER,
            notebook,
            command,
            step_env,
            step_resources(notebook),
            # the token (or CA bundle) only when there is one; the session step and the
            # sidecar always need the Secret (the component's secret)
            secret=with_token or bool(self.ca_bundle),
        )

    def session_container(
        self, launch: Launch, notebook: V1Container, *, with_token: bool
    ) -> V1Container:
        """The init container after the clone: the autosave back (or deleted on `discard`),
        `origin` through the sidecar, the user's name and email (`glue.session.gitsession`)."""
        assert self._source is not None, "shape_pod() sets the clone source before the pod"
        target = launch.target
        name, email = self._identity
        command, step_env = session.step(
            f"{CLONE_ROOT}/{CHECKOUT}",
            origin=self.proxy_url(launch),
            secret_file=f"{TOKEN_DIR}/{SECRET_KEY}",
            name=name,
            email=email,
            seen_as=self.notebooks["spawner"]["workDir"],
            remote=self._source,
            branch=self.autosave_branch(launch),
            launched=target.commit_sha,
            discard=launch.autosave == "discard",
            report=REPORT_PATH,
            token_file=f"{TOKEN_DIR}/{TOKEN_KEY}" if with_token else None,
            key_file=f"{AUTOSAVE_KEY_DIR}/{AUTOSAVE_KEY}",
        )
        return self.glue_container(
            SESSION_CONTAINER,
            notebook,
            command,
            step_env,
            step_resources(notebook),
            secret=True,
            autosave_key=True,
        )

    def proxy_container(self, launch: Launch, notebook: V1Container) -> V1Container:
        """The sidecar: the session's git token component, the hub's autosave control, and
        the autosave on pod deletion.

        It mounts the whole workspace volume (the autosave reads the checkout) and the
        Secret; its preStop hook and its control listener (on the pod's IP, which the
        kubelet puts into its command line) push through the component itself, whose
        token refresh then also covers a stop hours after the launch.
        """
        config = self.notebooks["autosave"]
        control = autosavecontrol.Settings(
            secret_file=Path(TOKEN_DIR, CONTROL_KEY),
            workspace=f"{CLONE_ROOT}/{CHECKOUT}",
            launched=launch.target.commit_sha,
            remote=self.proxy_url(launch),
            branch=self.autosave_branch(launch),
            max_file_bytes=config["maxFileBytes"],
            timeout=config["timeoutSeconds"],
        )
        proxy = gitproxy.step(self.proxy_settings(launch), listen=f"127.0.0.1:{PROXY_PORT}")
        command, _ = autosavecontrol.step(control, f"$({POD_IP_ENV}):{CONTROL_PORT}", proxy)
        save, _ = autosave.step(
            "save",
            workspace=control.workspace,
            launched=control.launched,
            remote=control.remote,
            branch=control.branch,
            max_file_bytes=control.max_file_bytes,
        )
        container = self.glue_container(
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
        container.lifecycle = V1Lifecycle(
            pre_stop=V1LifecycleHandler(_exec=V1ExecAction(command=save))
        )
        return container

    def control_url(self, path: str = autosavecontrol.PATH) -> str | None:
        """The sidecar's control listener, at the address the hub reaches the server by (the
        pod's IP, which KubeSpawner returned from start()); None while no server runs."""
        server = self.server
        if server is None or not server.ip:
            return None
        host = server.ip
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        return f"http://{host}:{CONTROL_PORT}{path}"

    async def poll(self) -> int | None:
        status: int | None = await super().poll()
        if status is None:
            await self.watch_disk()
        return status

    async def disk_usage(self) -> Usage | None:
        """What the pod's workspace volume holds, from its sidecar (`GET /usage`), against the
        profile's disk (the emptyDir's sizeLimit); None when the sidecar does not say (an
        older pod, unreachable): the watch then waits for the next poll."""
        url = self.control_url(autosavecontrol.USAGE_PATH)
        disk = self.user_options.get(DISK)
        if url is None or not self.control_secret or not isinstance(disk, dict):
            return None
        headers = {"Authorization": f"Bearer {self.control_secret}"}
        try:
            async with (
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=USAGE_SECONDS)
                ) as client,
                client.get(url, headers=headers) as response,
            ):
                body = await response.json(content_type=None)
            used = body["used_bytes"] if response.status == 200 else None
            size = memory_bytes(disk["limit"])
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, KeyError):
            return None
        return Usage(used=used, size=size) if isinstance(used, int) else None

    async def session_autosave(self, *, save: bool) -> dict[str, Any]:
        """Ask the pod's sidecar to save (POST) or to say what a save would push (GET).

        Fails closed: an unreachable sidecar, a timeout or any answer but 200 is
        AutosaveFailed, so the stop that asked is refused and the pod keeps running.
        """
        url = self.control_url()
        if url is None:
            return {}
        if not self.control_secret:
            raise AutosaveFailed(
                f"The pod {self.pod_name} was started before the hub could ask its sidecar to "
                "autosave; only its own preStop can (a forced stop runs it)."
            )
        seconds = self.notebooks["autosave"]["timeoutSeconds"] + CONTROL_MARGIN_SECONDS
        headers = {"Authorization": f"Bearer {self.control_secret}"}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as client,
                client.request("POST" if save else "GET", url, headers=headers) as response,
            ):
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            why = "timed out" if isinstance(e, TimeoutError) else type(e).__name__
            raise AutosaveFailed(
                f"The autosave could not ask the pod {self.pod_name}'s sidecar ({why})."
            ) from None
        message = body.get("message") if isinstance(body, dict) else None
        if response.status == 409 and isinstance(message, str):
            raise AutosaveFailed(message)
        if response.status != 200 or not isinstance(body, dict):
            raise AutosaveFailed(
                f"The pod {self.pod_name}'s sidecar refused the autosave ({response.status})."
            )
        return body

    def glue_container(
        self,
        name: str,
        notebook: V1Container,
        command: list[str],
        env: dict[str, str],
        resources: V1ResourceRequirements,
        *,
        secret: bool,
        autosave_key: bool = False,
    ) -> V1Container:
        """A container of the glue image on the workspace volume, as the notebook's user."""
        mounts = [V1VolumeMount(name=WORKSPACE_VOLUME, mount_path=CLONE_ROOT)]
        if autosave_key:
            mounts.append(
                V1VolumeMount(name=AUTOSAVE_KEY_VOLUME, mount_path=AUTOSAVE_KEY_DIR, read_only=True)
            )
        if secret:
            mounts.append(V1VolumeMount(name=TOKEN_VOLUME, mount_path=TOKEN_DIR, read_only=True))
            if self.ca_bundle:  # git (GnuTLS or OpenSSL) and Python, at process start
                ca_file = f"{TOKEN_DIR}/{CA_KEY}"
                env = {**env, "GIT_SSL_CAINFO": ca_file, "SSL_CERT_FILE": ca_file}
        context = notebook.security_context
        uid = _field(context, "runAsUser", "run_as_user")
        return V1Container(
            name=name,
            image=self.notebooks["spawner"]["cloneImage"],
            image_pull_policy=self.notebooks["images"]["pullPolicy"],
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

    def proxy_url(self, launch: Launch) -> str:
        """The project's URL for the session's git: the sidecar's, on the pod's loopback."""
        return f"http://127.0.0.1:{PROXY_PORT}/{launch.target.full_path}.git"

    def proxy_settings(self, launch: Launch) -> gitproxy.Settings:
        """What the component serves: the provider's project, with refresh through the glue
        when the hub gave the service's token (z2jh's `hub.services.<name>.apiToken`)."""
        assert self._source is not None, "shape_pod() sets the clone source before the pod"
        full_path = launch.target.full_path
        upstream, repo = None, None
        if self._source.startswith("file://"):  # the local provider: its bare repository
            repo = Path(urlsplit(self._source).path)
        else:
            upstream = self._source.removesuffix(f"/{full_path}.git")
        refresh = bool(self.service_api_token and self.git_token_endpoint)
        return gitproxy.Settings(
            project=full_path,
            secret_file=Path(TOKEN_DIR, SECRET_KEY),
            upstream=upstream,
            token_file=Path(TOKEN_DIR, TOKEN_KEY) if upstream else None,
            repo=repo,
            token_endpoint=self.git_token_endpoint if refresh else None,
            key_file=Path(TOKEN_DIR, COMPONENT_KEY) if refresh else None,
            hub_token_file=Path(TOKEN_DIR, HUB_TOKEN_KEY) if refresh else None,
            user=self.user.name,
            server=self.name,
            autosave_prefix=self.notebooks["autosave"]["branchPrefix"],
            autosave_branch=self.autosave_branch(launch),
            signing_key_file=Path(AUTOSAVE_KEY_DIR, AUTOSAVE_KEY),
        )

    @property
    def ca_bundle(self) -> str:
        """The operator's private CA (provider.caBundle), "" for none."""
        return self.notebooks["provider"]["caBundle"]

    @property
    def token_secret_name(self) -> str:
        return f"{self.pod_name}-git-token"

    @property
    def autosave_key_secret_name(self) -> str:
        return f"{self.pod_name}-autosave-key"

    @property
    def registry_secret_name(self) -> str:
        return f"{self.pod_name}-registry"

    def token_secret_manifest(self, data: dict[str, str], pod_uid: str) -> V1Secret:
        """The Secret holding the token and the component's secrets; owned by the pod, so
        deleted with it."""
        return self.owned_secret(self.token_secret_name, pod_uid, "Opaque", data)

    def registry_secret_manifest(self, docker_config: str, pod_uid: str) -> V1Secret:
        """This launch's image pull secret: only its registry's entry, owned by the pod."""
        return self.owned_secret(
            self.registry_secret_name,
            pod_uid,
            "kubernetes.io/dockerconfigjson",
            {".dockerconfigjson": docker_config},
        )

    def owned_secret(self, name: str, pod_uid: str, kind: str, data: dict[str, str]) -> V1Secret:
        """A Secret of this launch, labelled like the pod and owned by it."""
        # blockOwnerDeletion would need rights on pods/finalizers, which z2jh's hub role lacks
        owner = V1OwnerReference(
            api_version="v1",
            kind="Pod",
            name=self.pod_name,
            uid=pod_uid,
            block_owner_deletion=False,
            controller=False,
        )
        return V1Secret(
            api_version="v1",
            kind="Secret",
            metadata=V1ObjectMeta(
                name=name,
                labels=self._build_common_labels(self._expand_all(self.extra_labels)),
                annotations=self._build_common_annotations(
                    self._expand_all(self.extra_annotations)
                ),
                owner_references=[owner],
            ),
            type=kind,
            string_data=data,
        )

    async def create_token_secret(self, pod_uid: str) -> None:
        """Store this launch's token and the component's secrets; the spawner keeps none."""
        token, self._git_token = self._git_token, None
        session_secret, self._session_secret = self._session_secret, None
        if session_secret is None:
            return  # no launch shaped this pod
        data = {SECRET_KEY: session_secret, HUB_TOKEN_KEY: self.api_token or ""}
        data[KERNEL_KEY] = kernel.image_kernel_spec()
        if self.control_secret:
            data[CONTROL_KEY] = self.control_secret
        if token:
            data[TOKEN_KEY] = token
        if self.ca_bundle:
            data[CA_KEY] = trust.combined(self.ca_bundle)
        if self.service_api_token:
            data[COMPONENT_KEY] = component_key(self.service_api_token, self.user.name, self.name)
        await self.create_secret(self.token_secret_manifest(data, pod_uid), "the git token")
        key, self._autosave_key = self._autosave_key, None
        if key:
            manifest = self.owned_secret(
                self.autosave_key_secret_name, pod_uid, "Opaque", {AUTOSAVE_KEY: key}
            )
            await self.create_secret(manifest, "the autosave key")

    async def create_registry_secret(self, pod_uid: str) -> None:
        """Copy the operator's credentials for this launch's registry into its pull secret."""
        registry, self._pull_registry = self._pull_registry, None
        if not registry:
            return
        source = self.notebooks["spawner"]["registrySecret"]
        try:
            secret = await asyncio.wait_for(
                self.api.read_namespaced_secret(source, self.namespace),
                self.k8s_api_request_timeout,
            )
        except ApiException as e:
            raise RuntimeError(
                f"Could not read the registry credentials {source} "
                f"(Kubernetes: {e.status} {e.reason})."
            ) from None
        docker_config = registry_entry(secret.data or {}, registry)
        if docker_config is None:
            raise RuntimeError(f"The registry credentials {source} have no entry for {registry}.")
        await self.create_secret(
            self.registry_secret_manifest(docker_config, pod_uid), "the image pull secret"
        )

    async def create_secret(self, manifest: V1Secret, what: str) -> None:
        """Create a Secret of this launch, replacing one left by an earlier pod of this name."""
        await self.delete_secret(manifest.metadata.name)
        try:
            await asyncio.wait_for(
                self.api.create_namespaced_secret(self.namespace, manifest),
                self.k8s_api_request_timeout,
            )
        except ApiException as e:
            # our own message: KubeSpawner's would print the manifest, secret included
            raise RuntimeError(
                f"Could not store {what} (Kubernetes: {e.status} {e.reason})."
            ) from None

    async def delete_token_secret(self) -> None:
        """Delete this launch's Secrets; failures only log: the owner reference cleans up too."""
        for name in (
            self.token_secret_name,
            self.autosave_key_secret_name,
            self.registry_secret_name,
        ):
            await self.delete_secret(name)

    async def delete_secret(self, name: str) -> None:
        try:
            await asyncio.wait_for(
                self.api.delete_namespaced_secret(name, self.namespace),
                self.k8s_api_request_timeout,
            )
        except ApiException as e:
            if e.status != 404:
                self.log.warning("Could not delete Secret %s: %s %s", name, e.status, e.reason)
        except TimeoutError:
            self.log.warning("Timed out deleting Secret %s", name)

    # JupyterHub's `active` is a property too; the mixin only types it as an attribute
    @property
    def active(self) -> bool:  # type: ignore[override]
        """JupyterHub's `active`, and also while a pod that a stop left behind may still run.

        The hub's stop machinery swallows a failed stop and then forgets the server
        (`DELETE ... {"remove": true}` answers 204); its removal refuses an active
        spawner, so the server stays, with `stopped: false` but neither ready nor pending,
        and the hub's DELETE fails (500) until `_retry_deletion` has removed the pod.
        """
        return bool(super().active or self._pod_left_behind)

    async def stop(self, now: bool = False) -> None:
        try:
            await super().stop(now)
        except ApiException as e:
            self.leave_behind(f"Kubernetes: {e.status} {e.reason}")
            raise
        except Exception as e:  # the deletion or the wait for the pod to go timed out
            self.leave_behind(str(e) or type(e).__name__)
            raise
        finally:
            await self.delete_token_secret()
        self._pod_left_behind = False

    def leave_behind(self, why: str) -> None:
        """A stop could not delete the pod: keep the server, say so in its user_options (the
        hub shows them, also once it has dropped this spawner object) and retry the deletion."""
        self._pod_left_behind = True
        self.record(**{STOP_FAILED: f"The pod {self.pod_name} could not be deleted ({why})."})
        self.log.error(
            "Could not delete pod %s/%s (%s): the server %s is kept and the deletion retried",
            self.namespace,
            self.pod_name,
            why,
            self.log_label,
        )
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.ensure_future(self._retry_deletion())

    async def _retry_deletion(self) -> None:
        """Delete the pod until Kubernetes says it is gone (404), with a growing pause; then
        the hub may forget the server."""
        delay = LEFT_BEHIND_RETRY_SECONDS
        ref = f"{self.namespace}/{self.pod_name}"
        while self._pod_left_behind:
            await asyncio.sleep(delay)
            delay = min(delay * 2, LEFT_BEHIND_RETRY_MAX_SECONDS)
            try:
                await asyncio.wait_for(
                    self.api.delete_namespaced_pod(
                        name=self.pod_name,
                        namespace=self.namespace,
                        body=V1DeleteOptions(grace_period_seconds=self.delete_grace_period),
                        grace_period_seconds=self.delete_grace_period,
                    ),
                    self.k8s_api_request_timeout,
                )
                self.log.info("Deleting pod %s again (it was left behind)", ref)
            except ApiException as e:
                if e.status == 404:
                    self.log.info("Pod %s is gone: %s may be removed", ref, self.log_label)
                    self._pod_left_behind = False
                    self.record(**{STOP_FAILED: None})
                    self.save_state()
                    await self.delete_token_secret()
                    return
                self.log.warning("Still cannot delete pod %s: %s %s", ref, e.status, e.reason)
            except TimeoutError:
                self.log.warning("Still cannot delete pod %s: timed out", ref)

    def save_state(self) -> None:
        """Store the state in the hub's database now, as the hub does after start and stop."""
        internals.save_state(self)

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self._pod_left_behind:
            state[LEFT_BEHIND_STATE] = True
        if self.control_secret:
            state[CONTROL_STATE] = self.control_secret
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """A hub restarted while a pod was left behind retries its deletion."""
        super().load_state(state)
        self.control_secret = state.get(CONTROL_STATE) or self.control_secret
        if state.get(LEFT_BEHIND_STATE) and not self._pod_left_behind:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                self._pod_left_behind = True  # no loop to retry in (a test, a script)
            else:
                self.leave_behind("left behind before the hub restarted")

    async def delete_forever(self) -> None:
        """Removing a server also removes a pod that is still there.

        A pod that a stop could not delete keeps the server (`active`) until
        `_retry_deletion` removed it, so this normally finds none; it still covers a pod
        the spawner does not know of (its state lost with the hub's database). A pod that
        cannot be deleted now is an error, which the hub only logs ("Error cleaning up
        persistent resources").
        """
        await self.delete_token_secret()
        ref = f"{self.namespace}/{self.pod_name}"
        try:
            await exponential_backoff(
                partial(
                    self._make_delete_pod_request,
                    self.pod_name,
                    V1DeleteOptions(grace_period_seconds=0),
                    0,
                    self.k8s_api_request_timeout,
                ),
                f"Could not delete pod {ref}",
                timeout=self.k8s_api_request_retry_timeout,
            )
        except ApiException as e:
            raise RuntimeError(
                f"The pod {ref} of a removed server is left behind "
                f"(Kubernetes: {e.status} {e.reason})."
            ) from None
        except TimeoutError:
            raise RuntimeError(f"The pod {ref} of a removed server is left behind.") from None
        await super().delete_forever()

    def clear_state(self) -> None:
        super().clear_state()
        self._launch, self._source, self._git_token = None, None, None
        self._pull_registry, self._session_secret = None, None
        self.control_secret, self._autosave_key = None, None

    async def later_progress(self) -> AsyncIterator[dict[str, Any]]:
        """After our launch steps, KubeSpawner's pod events (scheduling, image pulls, failures)."""
        async for event in KubeSpawner.progress(self):
            if not self._is_token_mount_wait(event):
                yield event

    def _is_token_mount_wait(self, event: dict[str, Any]) -> bool:
        """The kubelet may try to mount the Secrets just before they exist: not a warning."""
        raw = event.get("raw_event") or {}
        message = raw.get("message") or ""
        names = (self.token_secret_name, self.autosave_key_secret_name)
        return raw.get("reason") == "FailedMount" and any(name in message for name in names)
