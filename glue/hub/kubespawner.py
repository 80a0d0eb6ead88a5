"""CommitKubeSpawner: the lifecycle of a commit launch's pod on Kubernetes.

One pod per server, built by glue.hub.podspec (pure functions, as KubeSpawner's
`objects.py`: the workspace, the `git-clone` and `git-session` init containers, the
`git-proxy` sidecar, the Secrets' contents; its docstring says what the pod holds and why
the user's token reaches no notebook). This module keeps what talks to the hub and to
Kubernetes: start, stop, poll, the spawner's state, the launch's progress, the Secrets'
creation and deletion, and the autosave control calls.

`start()` reads the `git-session` init container's answer (the autosave branch restored,
or why one was not), its termination message, from the running pod into the server's
user_options, as the local spawner records its own session step's answer.

A stop through the glue or the culler autosaves before it deletes the pod, and is refused
when that fails: `autosave()` asks the sidecar's control listener
(glue/session/autosavecontrol.py) on the pod's IP, port CONTROL_PORT, with a control secret
that this spawner makes for each pod and keeps in its state (the hub's database), so it also
works after a hub restart. Whatever else deletes the pod (the culler, an eviction) runs the
sidecar's preStop autosave within the pod's grace period (`delete_grace_period`).

The server's workspace is a PersistentVolumeClaim of its own (podspec.workspace_claim,
`<pod>-workspace`: the profile's disk, `spawner.storageClass`), created by KubeSpawner's own
`storage_pvc_ensure` machinery at each start (one that exists, a paused server's, is kept as
it is: 409 is fine), kept by `stop()` (a pause keeps the whole workspace for the next start)
and deleted with the server (`delete_forever`). The hub's z2jh Role allows it (get, create,
delete on persistentvolumeclaims; KubeSpawner reads a claim only when a quota refuses its
creation). So this spawner `can_pause`: a pause (the hub's stop that keeps the server,
glue.hub.pauseapi, which sets `pausing`) first asks the sidecar what the workspace holds and
to autosave, and keeps that save's answer in the spawner's state: no pod mounts a paused
server's claim, so nothing could save it at its removal, and nothing changes it meanwhile;
the removal's `autosave_paused` answers with it, or refuses when it failed.

The pod's Secrets (the user's GitLab token and the component's secrets; the autosave
branch's signing key; a per-commit image's pull secret) are created once the pod exists,
owned by the pod, so Kubernetes deletes them with the pod whatever stops it (hub, culler,
`kubectl`, node loss); `stop()` and `delete_forever()` also delete them at once. The
spawner keeps the token and the keys only until their Secret holds them. The hub's z2jh role
allows exactly this: create and delete on Secrets, no patch.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from typing import Any

import aiohttp
from jupyterhub.utils import exponential_backoff, maybe_future
from kubernetes_asyncio.client import V1DeleteOptions, V1PersistentVolumeClaim, V1Pod, V1Secret
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from traitlets import Bool, Integer, Unicode, default

from glue.core import contracts, trust
from glue.core.config import Profile
from glue.core.contracts import (
    AUTOSAVE_KEY,
    CLONE_CONTAINER,
    DISK,
    NOTEBOOK_CONTAINER,
    POD_NAME,
    SESSION_CONTAINER,
    STOP_FAILED,
    component_key,
)
from glue.core.errors import AutosaveFailed
from glue.core.launch import Launch
from glue.hub import internals, podspec
from glue.hub.commitspawner import Checked, CommitSpawnerMixin, memory_bytes
from glue.hub.disk import Usage
from glue.session import autosavecontrol, kernel

# the spawner's state key of the control secret; the hub waits this much beyond the step's time
CONTROL_STATE = "autosave_control_secret"
CONTROL_MARGIN_SECONDS = 5
# how long the disk watch waits for the sidecar's usage (each poll asks again)
USAGE_SECONDS = 10
# its refusal to restore, once the pod runs: after KubeSpawner's pod events (which approach 90)
SESSION_REPORT_PROGRESS = 90
PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")

# a pod that a stop could not delete: first retry after this, doubling up to the maximum
LEFT_BEHIND_RETRY_SECONDS = 5.0
LEFT_BEHIND_RETRY_MAX_SECONDS = 300.0
LEFT_BEHIND_STATE = "pod_left_behind"
# the spawner's state key of the autosave a pause made: {"saved": its answer} or {"failed": why}
PAUSE_SAVE_STATE = "pause_autosave"
# KubeSpawner's `component` label of a user's storage (its get_pvc_manifest)
STORAGE_COMPONENT = "singleuser-storage"


def _when(stamp: Any) -> float | None:
    """Epoch seconds of a Kubernetes timestamp (RFC 3339: whole seconds for conditions and
    container states, microseconds for an event's `eventTime`), None if there is none."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def pod_phases(pod: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, float]:
    """A running pod's launch phases (contracts.LAUNCH_PHASES), from what the API recorded as
    they happened: its creation and conditions, its containers' states, and its events (image
    pulls). Each phase the pod's record bounds, in seconds; one it does not is left out.

    - `pod_scheduled`: created until the PodScheduled condition;
    - `pod_pulled`: the kubelet's first `Pulling` event until its last `Pulled` (absent when
      every image was present: the pre-puller's work);
    - `pod_init`: scheduled until Initialized (both init containers, their pulls included);
    - `clone`, `session`: the `git-clone` and `git-session` init containers, each from its
      start to its end: the clone image's interpreter start is on every launch's path;
    - `pod_started`: Initialized until the notebook container runs;
    - `pod_ready`: the notebook container running until the pod is Ready.

    Conditions and container states carry whole seconds: these phases are as fine as that."""
    status = pod.get("status") or {}
    conditions = {
        c.get("type"): _when(c.get("lastTransitionTime"))
        for c in status.get("conditions") or []
        if c.get("status") == "True"
    }
    created = _when((pod.get("metadata") or {}).get("creationTimestamp"))
    scheduled, initialized = conditions.get("PodScheduled"), conditions.get("Initialized")
    ready = conditions.get("Ready")
    states = {
        c.get("name"): c.get("state") or {}
        for c in [*(status.get("initContainerStatuses") or []),
                  *(status.get("containerStatuses") or [])]
    }

    def ran(name: str) -> tuple[float | None, float | None]:
        done = states.get(name, {}).get("terminated") or {}
        return _when(done.get("startedAt")), _when(done.get("finishedAt"))

    notebook = _when((states.get(NOTEBOOK_CONTAINER, {}).get("running") or {}).get("startedAt"))
    pulls: dict[str, list[float]] = {"Pulling": [], "Pulled": []}
    for event in events:
        when = _when(event.get("eventTime")) or _when(event.get("lastTimestamp"))
        if event.get("reason") in pulls and when is not None:
            pulls[event["reason"]].append(when)
    spans = {
        contracts.PHASE_POD_SCHEDULED: (created, scheduled),
        contracts.PHASE_POD_PULLED: (
            min(pulls["Pulling"], default=None),
            max(pulls["Pulled"], default=None),
        ),
        contracts.PHASE_POD_INIT: (scheduled, initialized),
        contracts.PHASE_CLONE: ran(CLONE_CONTAINER),
        contracts.PHASE_SESSION: ran(SESSION_CONTAINER),
        contracts.PHASE_POD_STARTED: (initialized, notebook),
        contracts.PHASE_POD_READY: (notebook, ready),
    }
    return {
        phase: end - begin
        for phase, (begin, end) in spans.items()
        if begin is not None and end is not None and end >= begin
    }


async def _after_pod_created(spawner: CommitKubeSpawner, pod: dict[str, Any]) -> None:
    """KubeSpawner's after_pod_created_hook: the pod has a uid now, so it can own its Secret."""
    await spawner.create_token_secret(pod["metadata"]["uid"])
    await spawner.create_registry_secret(pod["metadata"]["uid"])
    if spawner.operator_after_pod_created_hook:
        await maybe_future(spawner.operator_after_pod_created_hook(spawner, pod))


class CommitKubeSpawner(CommitSpawnerMixin, KubeSpawner):
    """KubeSpawner that launches one checked-out commit, after the same checks as the glue."""

    # the workspace claim is ours, whatever z2jh's `singleuser.storage` says (not config: the
    # chart keeps z2jh's storage `none`, and no operator value may rename or skip the claim
    # that a paused server's work is in)
    storage_pvc_ensure = Bool(True)
    pvc_name_template = Unicode("{pod_name}-workspace")
    # a stopped server's claim keeps its whole workspace: the hub may pause it (pauseapi)
    can_pause = True
    # what the last pause's autosave did, kept (state) while the server is paused
    _pause_save: dict[str, Any] | None = None

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
        with self.phase(contracts.PHASE_HUB_CHECKS):
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
        # resumed: the session changes the workspace again (a resume that failed before its
        # server ran left it as its pause saved it, so the record stays for its removal)
        self._pause_save = None
        if self.hibernated:
            self.resumed()
        # the pod runs: its session step's answer says where the workspace's unsaved work came
        # from; the disk watch (poll) reads the sidecar's usage against the disk. Committed
        # with the start
        session = self.session_outcome(self.session_report(), SESSION_REPORT_PROGRESS)
        disk = self.profile_named(launch.profile)["disk"]
        self.record(**session, **{DISK: {"limit": disk, "near_limit": False}})
        for phase, seconds in pod_phases(self.running_pod(), self.events).items():
            self.record_phase(phase, seconds)
        return url

    def running_pod(self) -> dict[str, Any]:
        """This server's pod as KubeSpawner's reflector holds it, `{}` when it does not."""
        reflector = self.pod_reflector
        pod = reflector.pods.get(f"{self.namespace}/{self.pod_name}") if reflector else None
        return pod if isinstance(pod, dict) else {}

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
        return podspec.termination_grace_seconds(self.notebooks["autosave"]["timeoutSeconds"])

    @default("container_security_context")
    def _restricted_notebook(self) -> Any:
        """The notebook passes `restricted` unless the operator runs it as root (uid 0)."""
        return lambda spawner: podspec.notebook_security_context(spawner.uid)

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
        disk as the notebook's `ephemeral-storage` request and limit
        (podspec.profile_resources)."""
        profile = super().apply_profile(name)
        self.extra_resource_limits, self.extra_resource_guarantees = podspec.profile_resources(
            self.extra_resource_limits,
            self.extra_resource_guarantees,
            gpu=profile["gpu"],
            disk=profile["disk"],
        )
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
        self.extra_labels = {**self.extra_labels, **podspec.target_labels(launch.target)}
        self.extra_annotations = {**self.extra_annotations, **podspec.target_annotations(launch)}
        self._pull_registry = podspec.pull_registry(
            launch.image,
            default_image=config["images"]["default"],
            registry_secret=config["spawner"]["registrySecret"],
        )

    def pod_inputs(self, launch: Launch) -> podspec.PodInputs:
        """What podspec builds this launch's containers from: the state shape_pod() set and
        the config, gathered here once."""
        assert self._source is not None, "shape_pod() sets the clone source before the pod"
        config = self.notebooks
        refresh = bool(self.service_api_token and self.git_token_endpoint)
        return podspec.PodInputs(
            launch=launch,
            source=self._source,
            pod_name=self.pod_name,
            user=self.user.name,
            server=self.name,
            work_dir=config["spawner"]["workDir"],
            claim=self.pvc_name,
            clone_image=config["spawner"]["cloneImage"],
            pull_policy=config["images"]["pullPolicy"],
            with_token=bool(self._git_token),
            ca_bundle=bool(self.ca_bundle),
            identity=self._identity,
            autosave_prefix=config["autosave"]["branchPrefix"],
            autosave_branch=self.autosave_branch(launch),
            autosave_max_file_bytes=config["autosave"]["maxFileBytes"],
            autosave_timeout=config["autosave"]["timeoutSeconds"],
            token_endpoint=self.git_token_endpoint if refresh else None,
        )

    def get_pvc_manifest(self) -> V1PersistentVolumeClaim:
        """The server's workspace claim (podspec.workspace_claim): the launch's profile's disk,
        labelled and annotated as the pod (its launch's labels too), with KubeSpawner's labels
        of a user's storage."""
        assert self._launch is not None, "shape_pod() sets the launch before the claim"
        labels = self._build_common_labels(self._expand_all(self.extra_labels))
        labels.update(
            {"app.kubernetes.io/component": self.component_label, "component": STORAGE_COMPONENT}
        )
        return podspec.workspace_claim(
            self.pvc_name,
            size=self.profile_named(self._launch.profile)["disk"],
            storage_class=self.notebooks["spawner"]["storageClass"],
            labels=labels,
            annotations=self._build_common_annotations(self._expand_all(self.extra_annotations)),
        )

    async def get_pod_manifest(self) -> V1Pod:
        """KubeSpawner's pod, plus the workspace volume, our init containers and the sidecar
        (podspec.add_workspace), and the image pull secret of a per-commit image."""
        pod = await super().get_pod_manifest()
        if self._launch is not None:
            podspec.add_workspace(pod, self.pod_inputs(self._launch))
            pod.spec.termination_grace_period_seconds = self.delete_grace_period
        if self._pull_registry:
            podspec.add_pull_secret(pod, self.registry_secret_name)
        return pod

    def control_url(self, path: str = autosavecontrol.PATH) -> str | None:
        """The sidecar's control listener, at the address the hub reaches the server by (the
        pod's IP, which KubeSpawner returned from start()); None while no server runs."""
        server = self.server
        if server is None or not server.ip:
            return None
        return podspec.control_url(server.ip, path)

    async def poll(self) -> int | None:
        status: int | None = await super().poll()
        if status is None:
            await self.watch_disk()
        return status

    async def disk_usage(self) -> Usage | None:
        """What the pod's workspace volume holds, from its sidecar (`GET /usage`), against the
        profile's disk (the claim's size); None when the sidecar does not say (an
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

    @property
    def ca_bundle(self) -> str:
        """The operator's private CA (provider.caBundle), "" for none."""
        return self.notebooks["provider"]["caBundle"]

    @property
    def token_secret_name(self) -> str:
        return podspec.token_secret_name(self.pod_name)

    @property
    def autosave_key_secret_name(self) -> str:
        return podspec.autosave_key_secret_name(self.pod_name)

    @property
    def registry_secret_name(self) -> str:
        return podspec.registry_secret_name(self.pod_name)

    def owned_secret(self, name: str, pod_uid: str, kind: str, data: dict[str, str]) -> V1Secret:
        """A Secret of this launch (podspec.owned_secret), labelled and annotated as
        KubeSpawner labels the pod, owned by the pod."""
        return podspec.owned_secret(
            name,
            pod_name=self.pod_name,
            pod_uid=pod_uid,
            kind=kind,
            data=data,
            labels=self._build_common_labels(self._expand_all(self.extra_labels)),
            annotations=self._build_common_annotations(self._expand_all(self.extra_annotations)),
        )

    async def create_token_secret(self, pod_uid: str) -> None:
        """Store this launch's token and the component's secrets; the spawner keeps none."""
        token, self._git_token = self._git_token, None
        session_secret, self._session_secret = self._session_secret, None
        if session_secret is None:
            return  # no launch shaped this pod
        data = podspec.token_secret_data(
            session_secret=session_secret,
            hub_token=self.api_token or "",
            kernel_spec=kernel.image_kernel_spec(),
            control_secret=self.control_secret,
            git_token=token,
            ca_file=trust.combined(self.ca_bundle) if self.ca_bundle else None,
            component_key=(
                component_key(self.service_api_token, self.user.name, self.name)
                if self.service_api_token
                else None
            ),
        )
        manifest = self.owned_secret(self.token_secret_name, pod_uid, podspec.OPAQUE, data)
        await self.create_secret(manifest, "the git token")
        key, self._autosave_key = self._autosave_key, None
        if key:
            manifest = self.owned_secret(
                self.autosave_key_secret_name, pod_uid, podspec.OPAQUE, {AUTOSAVE_KEY: key}
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
        docker_config = podspec.registry_entry(secret.data or {}, registry)
        if docker_config is None:
            raise RuntimeError(f"The registry credentials {source} have no entry for {registry}.")
        manifest = self.owned_secret(
            self.registry_secret_name,
            pod_uid,
            podspec.DOCKER_CONFIG,
            {podspec.DOCKER_CONFIG_KEY: docker_config},
        )
        await self.create_secret(manifest, "the image pull secret")

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
        # set by the hub's pause (glue.hub.pauseapi) for this stop, which keeps the claim
        pausing = self.pausing
        held = await self.save_for_pause() if pausing else None
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
        if pausing:  # the mixin's record of the pause (its time, the disk it holds)
            self.paused(held)

    async def save_for_pause(self) -> int | None:
        """Before a pause deletes the pod: the bytes its workspace holds (the sidecar's usage)
        and an autosave through the sidecar, whose answer (or failure) the state keeps for the
        paused server's removal (autosave_paused). A failed save does not refuse the pause:
        the claim keeps everything; it refuses the removal."""
        usage = await self.disk_usage()
        try:
            self._pause_save = {"saved": await self.session_autosave(save=True)}
        except AutosaveFailed as e:
            self._pause_save = {"failed": e.message}
            self.log.error(
                "AUTOSAVE FAILED for %s at its pause: %s. Its workspace is kept on its claim; "
                "its removal is refused until it is resumed.",
                self.log_label,
                e.message,
            )
        return usage.used if usage is not None else None

    async def autosave_paused(self) -> dict[str, Any]:
        """A paused server's removal asks for its autosave first: the one its pause made (no
        pod has mounted the claim since, so a save now would push the same); AutosaveFailed,
        which refuses the removal, when that save failed or no pause made one."""
        record = self._pause_save or {}
        saved = record.get("saved")
        if isinstance(saved, dict):
            return saved
        why = str(record.get("failed") or "no autosave was made when it was paused")
        raise AutosaveFailed(
            f"The paused server's workspace is not autosaved ({why.rstrip('.')}). Resume it to "
            "save its work, or delete it with force=true, which loses what no autosave holds."
        )

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
        if self._pause_save is not None:
            state[PAUSE_SAVE_STATE] = self._pause_save
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """A hub restarted while a pod was left behind retries its deletion."""
        super().load_state(state)
        self.control_secret = state.get(CONTROL_STATE) or self.control_secret
        pause_save = state.get(PAUSE_SAVE_STATE)
        self._pause_save = pause_save if isinstance(pause_save, dict) else self._pause_save
        if state.get(LEFT_BEHIND_STATE) and not self._pod_left_behind:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                self._pod_left_behind = True  # no loop to retry in (a test, a script)
            else:
                self.leave_behind("left behind before the hub restarted")

    async def delete_forever(self) -> None:
        """Removing a server also removes a pod that is still there, then its workspace claim.

        A pod that a stop could not delete keeps the server (`active`) until
        `_retry_deletion` removed it, so this normally finds none; it still covers a pod
        the spawner does not know of (its state lost with the hub's database). A pod or a
        claim that cannot be deleted now is an error, which the hub only logs ("Error
        cleaning up persistent resources").
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
        await self.delete_workspace_claim()

    async def delete_workspace_claim(self) -> None:
        """Delete the server's claim with KubeSpawner's request (a 404 is fine). Not through
        KubeSpawner.delete_forever: it keeps a named server's claim whose name template lacks
        `{servername}` (ours is `{pod_name}-workspace`) as one shared with the default server."""
        ref = f"{self.namespace}/{self.pvc_name}"
        try:
            await exponential_backoff(
                partial(self._make_delete_pvc_request, self.pvc_name, self.k8s_api_request_timeout),
                f"Could not delete the workspace claim {ref}",
                timeout=self.k8s_api_request_retry_timeout,
            )
        except ApiException as e:
            raise RuntimeError(
                f"The workspace claim {ref} of a removed server is left behind "
                f"(Kubernetes: {e.status} {e.reason})."
            ) from None
        except TimeoutError:
            raise RuntimeError(
                f"The workspace claim {ref} of a removed server is left behind."
            ) from None

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
