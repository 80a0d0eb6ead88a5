"""CommitKubeSpawner's pods built offline, through the same steps start() takes.

No cluster: KubeSpawner builds pod manifests without one (`_mock=True`, its kube config
loader patched out by `offline`), and launches are checked against real local bare
repositories (`kube_repos`). The manifest, kube-kernel and chart tests all build and judge
pods this way (`restricted_violations`: the `restricted` Pod Security Standard).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_asyncio.client import ApiClient, V1Capabilities, V1Container, V1SecurityContext
from kubernetes_asyncio.client.rest import ApiException
from traitlets.config import Config

from glue.core.config import validate
from glue.core.configtypes import Config as NotebooksConfig
from glue.hub import kubespawner as kube
from glue.hub import setup as hubconfig

TOKEN = "glpat-SECRET-token-0123456789abcdef"


# what z2jh generates for hub.services.notebooks.apiToken, and the server's own hub token
SERVICE_TOKEN = "service-SECRET-token-for-notebooks"


HUB_TOKEN = "hub-SECRET-token-of-the-server"


KUBE_VERSION = "1.28"


DEFAULT_IMAGE = "quay.io/jupyter/base-notebook:2025-01-06"


PROJECT_IMAGE = "registry.example.com/group/project:abc1234"


CLONE_IMAGE = "quay.io/renku/renku-notebooks-glue:0.1.0"


WORK_DIR = "/home/jovyan/work"


# what z2jh 4.4.0's jupyterhub_config.py puts on every user pod
Z2JH_BLOCKER = V1Container(
    name="block-cloud-metadata",
    image="quay.io/jupyterhub/k8s-network-tools:4.4.0",
    command=[
        "iptables",
        "--append",
        "OUTPUT",
        "--protocol",
        "tcp",
        "--destination",
        "169.254.169.254",
        "--destination-port",
        "80",
        "--jump",
        "DROP",
    ],
    security_context=V1SecurityContext(
        privileged=True, run_as_user=0, capabilities=V1Capabilities(add=["NET_ADMIN"])
    ),
)


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def notebooks_config(root: Path, **spawner: Any) -> NotebooksConfig:
    return validate(
        {
            "images": {
                "default": DEFAULT_IMAGE,
                "allowedRegistries": ["registry.example.com"],
                "pullPolicy": "Always",
            },
            "profiles": [
                {"name": "small", "cpu": 0.5, "memory": "1G", "default": True},
                {"name": "gpu", "cpu": 2, "memory": "8Gi", "gpu": 1, "disk": "20Gi"},
            ],
            "provider": {"kind": "local", "root": str(root)},
            "spawner": {
                "kind": "kubernetes",
                "workDir": WORK_DIR,
                "cloneImage": CLONE_IMAGE,
                **spawner,
            },
        }
    )


def hub_config(root: Path, *, blocker: bool = True, uid: int = 1000, **spawner: Any) -> Config:
    """Roughly what z2jh's jupyterhub_config.py sets, then our hubconfig.configure().

    `blocker`: z2jh's block-cloud-metadata init container (its default; the chart turns it off).
    """
    c = Config()
    c.KubeSpawner.namespace = "renku"
    c.KubeSpawner.uid = uid
    c.KubeSpawner.fs_gid = 100
    c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
    c.KubeSpawner.extra_labels = {"hub.jupyter.org/network-access-hub": "true"}
    c.KubeSpawner.common_labels = {"app.kubernetes.io/managed-by": "kubespawner"}
    c.KubeSpawner.allow_privilege_escalation = False
    c.KubeSpawner.init_containers = [Z2JH_BLOCKER] if blocker else []
    c.JupyterHub.services = [{"name": "notebooks", "api_token": SERVICE_TOKEN}]
    hubconfig.configure(c, notebooks_config(root, **spawner))
    return c


COOKIE_SECRET = b"the hub's cookie secret"


class User:
    """The bits of a hub User that the spawner touches."""

    def __init__(self, name: str, token: str | None):
        self.name, self.id, self.url = name, 7, f"/user/{name}/"
        self._token = token
        self.settings = {"cookie_secret": COOKIE_SECRET}  # the hub's tornado settings

    async def get_auth_state(self) -> dict[str, str] | None:
        return {"access_token": self._token} if self._token else None


def make_spawner(
    repos: SimpleNamespace,
    options: dict[str, Any],
    *,
    user: str = "alice",
    server: str = "project-0123456789ab",
    token: str | None = TOKEN,
    **hub: Any,
) -> kube.CommitKubeSpawner:
    c = hub_config(repos.root, **hub)
    assert c.JupyterHub.spawner_class == "glue.hub.kubespawner.CommitKubeSpawner"
    spawner = kube.CommitKubeSpawner(
        config=c,
        _mock=True,
        user=User(user, token),
        orm_spawner=SimpleNamespace(name=server, server=None),
    )
    spawner.user_options = options
    spawner.api_token = HUB_TOKEN  # the hub sets it before start()
    return spawner


def options(repos: SimpleNamespace, **extra: Any) -> dict[str, Any]:
    return {
        "namespace": "group",
        "project": "project",
        "commit_sha": repos.old,
        "notebook": "notebooks/analysis.ipynb",
        **extra,
    }


async def shaped_pod(spawner: kube.CommitKubeSpawner) -> dict[str, Any]:
    """What start() does before handing over to KubeSpawner, then the manifest it would create."""
    spawner.shape_pod(await spawner.prepare_launch())
    return await serialize(await spawner.get_pod_manifest())


async def serialize(model: Any) -> dict[str, Any]:
    async with ApiClient() as api:
        return api.sanitize_for_serialization(model)


def valid(manifest: dict[str, Any]) -> dict[str, Any]:
    kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
    return manifest


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


class FakeCoreApi:
    """Records Secret, pod and PersistentVolumeClaim calls, like the parts of CoreV1Api the
    spawner uses (each call as (verb, name); a claim's verbs are RBAC's: get, create, delete)."""

    def __init__(self) -> None:
        self.secrets: dict[str, Any] = {}
        self.pods: dict[str, str] = {}
        self.claims: dict[str, Any] = {}
        self.calls: list[tuple[str, str]] = []
        self.claim_calls: list[tuple[str, str]] = []
        # what the next claim creation answers instead (a quota: 403)
        self.claim_refusal: int | None = None

    async def create_namespaced_persistent_volume_claim(self, namespace: str, body: Any) -> Any:
        self.claim_calls.append(("create", body.metadata.name))
        if self.claim_refusal:
            raise ApiException(status=self.claim_refusal, reason="Forbidden")
        if body.metadata.name in self.claims:
            raise ApiException(status=409, reason="AlreadyExists")
        self.claims[body.metadata.name] = body
        return body

    async def read_namespaced_persistent_volume_claim(self, name: str, namespace: str) -> Any:
        self.claim_calls.append(("get", name))
        if name not in self.claims:
            raise ApiException(status=404, reason="Not Found")
        return self.claims[name]

    async def delete_namespaced_persistent_volume_claim(self, name: str, namespace: str) -> None:
        self.claim_calls.append(("delete", name))
        if self.claims.get(name, "") == "undeletable":
            raise ApiException(status=500, reason="Internal Server Error")
        if self.claims.pop(name, None) is None:
            raise ApiException(status=404, reason="Not Found")

    async def create_namespaced_secret(self, namespace: str, body: Any) -> Any:
        self.calls.append(("create", body.metadata.name))
        if body.metadata.name in self.secrets:
            raise ApiException(status=409, reason="Conflict")
        self.secrets[body.metadata.name] = body
        return body

    async def delete_namespaced_secret(self, name: str, namespace: str) -> None:
        self.calls.append(("delete", name))
        if self.secrets.pop(name, None) is None:
            raise ApiException(status=404, reason="Not Found")

    async def delete_namespaced_pod(self, name: str, namespace: str, **options: Any) -> None:
        self.calls.append(("delete pod", name))
        if name not in self.pods:
            raise ApiException(status=404, reason="Not Found")
        if self.pods[name] == "undeletable":
            raise ApiException(status=500, reason="Internal Server Error")
        del self.pods[name]


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the `restricted` Pod Security Standard (Kubernetes docs, v1.28) refuses in a pod."""
    spec = pod["spec"]
    pod_context = spec.get("securityContext") or {}
    found = []
    for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
        name, context = container["name"], container.get("securityContext") or {}
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot is not true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get(
            "type"
        )
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: no seccomp profile")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities not dropped")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            found.append(f"volume {volume['name']}: hostPath")
    return found


def kube_repos(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Bare repositories `group/project.git` (two commits) and a long-named one, for the local
    provider: `root`, the shas `old` and `new`, and the long names."""
    root = tmp_path_factory.mktemp("repos")
    work = tmp_path_factory.mktemp("work")
    shas = []
    for content in ("first\n", "second\n"):
        (work / "data.txt").write_text(content)
        (work / "notebooks").mkdir(exist_ok=True)
        (work / "notebooks" / "analysis.ipynb").write_text("{}")
        if not (work / ".git").exists():
            git("init", "-q", "-b", "main", cwd=work)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", content.strip(), cwd=work)
        shas.append(git("rev-parse", "HEAD", cwd=work))
    long_namespace = "a-very-long-group-name-for-testing/with-a-subgroup-that-is-long-as-well"
    long_project = "an-extremely-long-project-name-that-goes-on-and-on-and-on-forever-x"
    for namespace, project in (("group", "project"), (long_namespace, long_project)):
        bare = root / namespace / f"{project}.git"
        bare.parent.mkdir(parents=True, exist_ok=True)
        git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    return SimpleNamespace(
        root=root,
        old=shas[0],
        new=shas[1],
        long_namespace=long_namespace,
        long_project=long_project,
    )


def no_kube_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """No kube config here; KubeSpawner only needs it for API calls, which these tests fake."""
    monkeypatch.setattr("kubespawner.spawner.load_config", lambda **kwargs: None)
