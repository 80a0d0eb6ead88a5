"""The Helm chart, rendered by a real helm and checked against the Kubernetes 1.28 schemas.

The Zero-to-JupyterHub dependency cannot be fetched here, so the chart is
rendered from a temporary copy without it (its `jupyterhub:` values then just
pass through). Set NOTEBOOKS_Z2JH_CHART to an unpacked or packaged z2jh 4.4.0
chart to also render the whole thing with it.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from glue.core.config import load
from glue.core.contracts import CONTROL_PORT, DRAIN_SUFFIX
from glue.hub.kubesetup import service_url
from glue.service.app import CHART_WARNINGS_ENV, log_chart_warnings
from glue.tools import chartschema
from testing.chart import (
    BUILT_TAG,
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    ROOT,
    StrictLoader,
    find_helm,
    run,
    template,
    values_file,
    without_dependency,
)

# a value for every option of ours (the `notebooks` config is the schema's business)
ALL_OPTIONS: dict[str, Any] = {
    "nameOverride": "nb",
    "fullnameOverride": "",
    "replicaCount": 2,
    "secrets": {"cookieSecret": "a-fixed-cookie-secret", "existingSecret": ""},
    "global": {"gitlab": {"url": "https://gitlab.renku.example"}},
    "priorityClassName": "notebooks-services",
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
        }
    ],
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example.org:3128"}],
    "extraVolumes": [{"name": "extra", "configMap": {"name": "extra-files"}}],
    "extraVolumeMounts": [{"name": "extra", "mountPath": "/etc/extra", "readOnly": True}],
    "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
    "metrics": {
        "scrapers": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        ],
        "podAnnotations": True,
        "serviceMonitor": {
            "enabled": True,
            "interval": "15s",
            "labels": {"release": "kube-prometheus-stack"},
            "authorization": {
                "type": "Bearer",
                "credentials": {"name": "metrics-token", "key": "token"},
            },
        },
    },
    "tests": {"image": "registry.example.org/curl:8"},
    "serviceAccount": {"create": True, "name": "glue-sa", "annotations": {"team": "notebooks"}},
    "service": {"type": "NodePort", "annotations": {"team": "notebooks"}},
    "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}, "limits": {"memory": "400Mi"}},
    "podAnnotations": {"example.org/scrape": "true"},
    "podLabels": {"team": "notebooks"},
    "podSecurityContext": {
        "runAsNonRoot": True,
        "runAsUser": 1234,
        "runAsGroup": 1234,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "containerSecurityContext": {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    },
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "notebooks", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 1,
                    "preference": {
                        "matchExpressions": [
                            {"key": "node-role", "operator": "In", "values": ["services"]}
                        ]
                    },
                }
            ]
        }
    },
    "networkPolicy": {
        "enabled": True,
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                        }
                    }
                ]
            }
        ],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"port": 443}]}],
        "egressAllowRules": {
            "nonPrivateIPs": False,
            "privateIPs": True,
            "dnsPortsCloudMetadataServer": False,
            "dnsPortsKubeSystemNamespace": True,
            "dnsPortsPrivateIPs": False,
        },
        "gitlab": [{"ipBlock": {"cidr": "10.20.0.15/32"}}],
        "kubernetesApi": [{"ipBlock": {"cidr": "172.18.0.2/32"}}],
    },
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"example.org/ingress": "yes"},
        "hosts": ["notebooks.example.org"],
        "tls": [{"hosts": ["notebooks.example.org"], "secretName": "notebooks-tls"}],
        "routeHub": True,
    },
    "httpRoute": {
        "enabled": True,
        "annotations": {"example.org/route": "yes"},
        "parentRefs": [{"name": "gateway", "namespace": "gateways"}],
        "hostnames": ["notebooks.example.org"],
        "routeHub": True,
    },
    "uninstallHook": {
        "enabled": True,
        "saveTimeoutSeconds": 60,
        "activeDeadlineSeconds": 400,
        "resources": {"requests": {"cpu": "20m", "memory": "80Mi"}, "limits": {"memory": "100Mi"}},
    },
    "clonePuller": {
        "enabled": True,
        "resources": {"requests": {"cpu": "2m", "memory": "9Mi"}, "limits": {"memory": "30Mi"}},
    },
    "jupyterhub": {
        "custom": {
            "notebooks": {
                "service": {"name": "nbs"},
                # the glue's image (one value) and its pull policy
                "spawner": {
                    "cloneImage": "registry.example.org/glue:1.2.3",
                    # the StorageClass of each server's workspace claim
                    "storageClass": "fast-ssd",
                },
                "images": {"pullPolicy": "Always"},
            }
        },
        "fullnameOverride": "jh",
        # z2jh's chart-wide pull secrets: the glue's too
        "imagePullSecrets": ["registry-credentials"],
        "hub": {
            "baseUrl": "/jhub/",
            "services": {"nbs": {"oauth_no_confirm": True}, "nbs-drain": {}},
        },
    },
}

# the cluster serves the Prometheus operator's CRD (the chart makes a ServiceMonitor only then)
WITH_SERVICE_MONITOR = ("--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")


def notebooks_values(notebooks: dict[str, Any], **other: Any) -> dict[str, Any]:
    """Chart values setting (part of) the notebooks config, where the chart reads it."""
    return {"jupyterhub": {"custom": {"notebooks": notebooks}}, **other}


SUBDOMAINS = "https://nb.example.org"
HOST_ROUTING = {"chp": {"extraCommandLineFlags": ["--host-routing"]}}
# each user's servers on <user>.nb.example.org: the hub's setting and the proxy's routing
USER_ORIGINS = {
    "jupyterhub": {
        "hub": {"config": {"JupyterHub": {"subdomain_host": SUBDOMAINS}}},
        "proxy": HOST_ROUTING,
    }
}






@pytest.fixture(scope="session")
def helm() -> str:
    return find_helm()




@pytest.fixture(scope="session")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return without_dependency(CHART, tmp_path_factory.mktemp("chart") / "renku-notebooks")






def validate_all(docs: list[dict[str, Any]]) -> None:
    """Every manifest against Kubernetes' schemas (a CRD's, the ServiceMonitor's or the
    Gateway API's HTTPRoute's, is not there)."""
    for doc in docs:
        if doc["apiVersion"].startswith(("monitoring.coreos.com/", "gateway.networking.k8s.io/")):
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {e}") from None


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def glue_policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The spec of the NetworkPolicy that isolates the glue's pods."""
    (labels,) = [
        d["spec"]["selector"]["matchLabels"]
        for d in docs
        if d["kind"] == "Deployment"
        and d["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") == "glue"
    ]
    (policy,) = [
        d["spec"]
        for d in docs
        if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"].get("matchLabels") == labels
    ]
    return policy


def names(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["kind"], d["metadata"]["name"]) for d in docs]


def test_values_schema_is_generated_from_the_config_schema() -> None:
    assert (CHART / "values.schema.json").read_text() == chartschema.render(), (
        "helm-chart/renku-notebooks/values.schema.json is stale: "
        "run `python -m glue.tools.chartschema`"
    )
    check = run(sys.executable, "-m", "glue.tools.chartschema", "--check", check=False)
    assert check.returncode == 0, check.stderr


def test_chart_depends_on_z2jh_without_alias() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["name"] == "renku-notebooks"
    assert meta["dependencies"] == [
        {
            "name": "jupyterhub",
            "version": "4.4.0",
            "repository": "https://hub.jupyter.org/helm-chart/",
        }
    ]


def test_lint(helm: str, chart: Path, tmp_path: Path) -> None:
    run(helm, "lint", "--strict", chart)
    run(helm, "lint", "--strict", chart, "-f", values_file(tmp_path, ALL_OPTIONS))


def test_default_render(helm: str, chart: Path, tmp_path: Path) -> None:
    docs = template(helm, chart)
    validate_all(docs)
    assert Counter(d["kind"] for d in docs) == Counter(
        ["Deployment", "Service", "ServiceAccount", "ConfigMap", "Secret"]
        # `helm test`: the glue's health, and no cloud metadata from a user pod
        + ["Pod"] * 2
        # the glue's pods/log reader (glue/service/podlogs.py)
        + ["Role", "RoleBinding"]
        # the glue's, egress to it for z2jh's hub, proxy and user pods (their git-proxy), and
        # ingress to the user pods' autosave control port from the hub
        + ["NetworkPolicy"] * 5
        # the pre-delete hook (a Job and its ServiceAccount), the glue image's pre-puller
        + ["Job", "ServiceAccount", "DaemonSet"]
    )
    assert all(d["metadata"]["annotations"]["helm.sh/hook"] == "test" for d in pods(docs).values())

    pod = one(docs, "Deployment")["spec"]["template"]
    spec, glue = pod["spec"], pod["spec"]["containers"][0]
    assert glue["command"] == [
        "python",
        "-m",
        "glue",
        "--config",
        "/etc/renku-notebooks/config.yaml",
        "--host",
        "0.0.0.0",
        "--host",
        "::",
        "--port",
        "8090",
    ]
    assert glue["ports"] == [{"name": "http", "containerPort": 8090, "protocol": "TCP"}]
    env = env_of(glue)
    assert env["JUPYTERHUB_API_URL"] == "http://hub:8081/hub/api"
    assert env["JUPYTERHUB_API_TOKEN"] == {
        "secretKeyRef": {"name": "hub", "key": "hub.services.notebooks.apiToken"}
    }
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/services/notebooks/"
    assert env["JUPYTERHUB_BASE_URL"] == "/"
    assert env["JUPYTERHUB_CLIENT_ID"] == "service-notebooks"
    assert env["JUPYTERHUB_OAUTH_CALLBACK_URL"] == "/services/notebooks/oauth_callback"
    assert env["NOTEBOOKS_COOKIE_SECRET"] == {
        "secretKeyRef": {"name": "rel-renku-notebooks", "key": "cookieSecret"}
    }
    assert glue["readinessProbe"]["httpGet"] == {
        "path": "/services/notebooks/health",
        "port": "http",
    }
    assert glue["securityContext"]["allowPrivilegeEscalation"] is False
    assert glue["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert glue["resources"]["requests"] and glue["resources"]["limits"]
    assert pod["metadata"]["labels"]["hub.jupyter.org/network-access-hub"] == "true"

    configmap = one(docs, "ConfigMap")
    assert configmap["metadata"]["name"] == "rel-renku-notebooks"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(configmap["data"]["config.yaml"])
    config = load(config_file)  # what the glue and the hub do at start-up
    assert config["spawner"]["kind"] == "kubernetes"
    assert config["service"]["url"] == "http://hub-notebooks" == service_url("hub", "notebooks")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "rel-renku-notebooks"

    service = one(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    secret = one(docs, "Secret")
    assert len(secret["data"]["cookieSecret"]) > 40
    policy = glue_policy(docs)
    sources = [peer["podSelector"]["matchLabels"] for peer in policy["ingress"][0]["from"]]
    assert {"app.kubernetes.io/instance": "rel", "app.kubernetes.io/component": "proxy"} in sources


def leaf_paths(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict) and node:
        return set().union(
            *(leaf_paths(v, f"{prefix}.{k}" if prefix else k) for k, v in node.items())
        )
    return {prefix}


def test_every_option_render(helm: str, chart: Path, tmp_path: Path) -> None:
    ours = {
        k: v
        for k, v in yaml.safe_load((CHART / "values.yaml").read_text()).items()
        if k != "jupyterhub"
    }
    missing = {
        p
        for p in leaf_paths(ours)
        if not any(q == p or q.startswith(p + ".") for q in leaf_paths(ALL_OPTIONS))
    }
    assert not missing, f"ALL_OPTIONS lacks {sorted(missing)}"

    docs = template(
        helm, chart, "rel", "-f", values_file(tmp_path, ALL_OPTIONS), *WITH_SERVICE_MONITOR
    )
    validate_all(docs)
    assert "ServiceMonitor" in {d["kind"] for d in docs}
    assert "ServiceAccount" in {d["kind"] for d in docs}
    deployment = one(docs, "Deployment")
    assert deployment["metadata"]["name"] == "rel-nb"
    assert deployment["spec"]["replicas"] == 2
    spec = deployment["spec"]["template"]["spec"]
    glue = spec["containers"][0]
    assert glue["image"] == "registry.example.org/glue:1.2.3"
    assert spec["serviceAccountName"] == "glue-sa"
    assert spec["securityContext"]["runAsUser"] == 1234
    assert spec["tolerations"][0]["value"] == "notebooks"
    env = env_of(glue)
    assert env["JUPYTERHUB_API_URL"] == "http://jh-hub:8081/jhub/hub/api"
    assert env["JUPYTERHUB_API_TOKEN"]["secretKeyRef"] == {
        "name": "jh-hub",
        "key": "hub.services.nbs.apiToken",
    }
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/jhub/services/nbs/"
    assert env["JUPYTERHUB_CLIENT_ID"] == "service-nbs"
    assert glue["readinessProbe"]["httpGet"]["path"] == "/jhub/services/nbs/health"

    ingress = one(docs, "Ingress")["spec"]
    assert ingress["ingressClassName"] == "nginx"
    rule = ingress["rules"][0]
    assert rule["host"] == "notebooks.example.org"
    assert rule["http"]["paths"][0]["path"] == "/jhub/services/nbs/"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": "jh-hub-nbs",
        "port": {"name": "http"},
    }
    secret = one(docs, "Secret")
    assert secret["data"]["cookieSecret"] == "YS1maXhlZC1jb29raWUtc2VjcmV0"  # base64 of the value
    policy = glue_policy(docs)
    assert {"ipBlock": {"cidr": "10.1.2.3/32"}} in policy["egress"][-1]["to"]
    assert not any(
        "except" in peer.get("ipBlock", {})
        for rule in policy["egress"]
        for peer in rule.get("to", [])
    )
    service = one(docs, "Service")["spec"]
    assert service["type"] == "NodePort" and service["ports"][0]["port"] == 80
    config_file = tmp_path / "config.yaml"
    config_file.write_text(one(docs, "ConfigMap")["data"]["config.yaml"])
    assert (
        load(config_file)["service"]["url"] == "http://jh-hub-nbs" == service_url("jh-hub", "nbs")
    )
    assert load(config_file)["spawner"]["storageClass"] == "fast-ssd"


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "jupyterhub.custom.notebooks.launch.serversPerUser=0",
            "Must be greater than or equal to 1",
        ),
        ("jupyterhub.custom.notebooks.launch.bogus=1", "Additional property bogus is not allowed"),
        (
            "jupyterhub.custom.notebooks.images.pullPolicy=Sometimes",
            "jupyterhub.custom.notebooks.images.pullPolicy must be one of",
        ),
        ("jupyterhub.custom.notebooks.profiles[0].memory=lots", "Does not match pattern"),
        # a StorageClass is a DNS subdomain name
        ("jupyterhub.custom.notebooks.spawner.storageClass=Fast_SSD", "Does not match pattern"),
    ],
)
def test_invalid_notebooks_config_is_refused(
    helm: str, chart: Path, override: str, message: str
) -> None:
    result = run(helm, "template", "rel", chart, "--set", override, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "values, message",
    [
        (
            notebooks_values({"spawner": {"kind": "local"}}),
            "notebooks.spawner.kind must be `kubernetes`",
        ),
        (
            notebooks_values(
                {
                    "profiles": [
                        {"name": "a", "cpu": 1, "memory": "1G"},
                        {"name": "a", "cpu": 2, "memory": "2G"},
                    ]
                }
            ),
            'duplicate profile name "a"',
        ),
        (
            notebooks_values({"service": {"name": "other"}}),
            'jupyterhub.hub.services needs the key "other"',
        ),
        (
            {"jupyterhub": {"hub": {"config": {"JupyterHub": {"subdomain_host": SUBDOMAINS}}}}},
            'add "--host-routing" to jupyterhub.proxy.chp.extraCommandLineFlags',
        ),
        (
            {"jupyterhub": {"proxy": HOST_ROUTING}},
            "JupyterHub.subdomain_host is not set: set both, or neither",
        ),
    ],
)
def test_inconsistent_values_are_refused(
    helm: str, chart: Path, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    result = run(helm, "template", "rel", chart, "-f", values_file(tmp_path, values), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_two_releases_do_not_collide(helm: str, chart: Path, tmp_path: Path) -> None:
    """Only z2jh's fullnameOverride must differ (z2jh's own names need it): nothing is literal."""
    first = names(template(helm, chart, "first"))
    second_values = values_file(tmp_path, {"jupyterhub": {"fullnameOverride": "second"}})
    second = names(template(helm, chart, "second", "-f", second_values))
    assert not set(first) & set(second)


def test_as_subchart_of_renku(helm: str, chart: Path, tmp_path: Path) -> None:
    parent = tmp_path / "renku"
    (parent / "templates").mkdir(parents=True)
    version = yaml.safe_load((chart / "Chart.yaml").read_text())["version"]
    (parent / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "renku",
                "version": "1.0.0",
                "dependencies": [
                    {"name": "renku-notebooks", "repository": f"file://{chart}", "version": version}
                ],
            }
        )
    )
    # resources a parent chart typically has, named the usual way
    (parent / "templates" / "gateway.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}-gateway\n"
        "spec:\n  ports: [{port: 80}]\n  selector: {app: gateway}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data: {a: b}\n"
    )
    (parent / "values.yaml").write_text(
        yaml.safe_dump(
            {
                "renku-notebooks": notebooks_values(
                    {"provider": {"url": "https://gitlab.renku.example"}}
                )
            }
        )
    )
    run(helm, "dependency", "build", parent)
    docs = template(helm, parent, "renku")
    validate_all(docs)
    rendered = names(docs)
    assert [n for n, count in Counter(rendered).items() if count > 1] == []
    assert ("Deployment", "renku-renku-notebooks") in rendered
    assert ("Service", "renku-gateway") in rendered
    configmap = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "renku-renku-notebooks"
    )
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    assert config["notebooks"]["provider"]["url"] == "https://gitlab.renku.example"
    # what a dependency of renku adds for its operator: the warnings in the glue's log (Helm
    # prints only renku's NOTES), the pre-delete hook, the clone pre-puller
    glue = glue_pod(docs)["spec"]["containers"][0]
    warnings = env_of(glue)[CHART_WARNINGS_ENV]
    assert "WARNING: every user's server shares the hub's origin" in warnings
    assert hook_job(docs)["metadata"]["name"] == "renku-renku-notebooks-save-servers"
    assert "DaemonSet" in {d["kind"] for d in docs}


@pytest.mark.parametrize("values", ["values/kind.yaml", "minikube_values.yaml"])
def test_deployment_values_render(helm: str, chart: Path, values: str) -> None:
    docs = template(helm, chart, "rel", "-f", ROOT / values)
    validate_all(docs)
    one(docs, "Deployment")


@pytest.fixture
def z2jh_chart(tmp_path: Path) -> Path:
    source = os.environ.get("NOTEBOOKS_Z2JH_CHART")
    if not source:
        pytest.skip(
            "set NOTEBOOKS_Z2JH_CHART to a z2jh 4.4.0 chart (directory or .tgz) to "
            "render with the real dependency; it cannot be downloaded here"
        )
    dest = without_dependency(CHART, tmp_path / "renku-notebooks")
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (dest / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    (dest / "charts").mkdir()
    path = Path(source)
    if path.is_dir():
        shutil.copytree(path, dest / "charts" / "jupyterhub")
    else:
        shutil.copy(path, dest / "charts")
    return dest


@pytest.mark.parametrize(
    "override",
    [
        [],
        ["--set", "jupyterhub.fullnameOverride=jh"],
        ["--set", "jupyterhub.fullnameOverride=null"],
    ],
)
def test_with_z2jh(helm: str, z2jh_chart: Path, override: list[str]) -> None:
    docs = template(helm, z2jh_chart, "rel", *override)
    validate_all(docs)
    hub_secret = next(
        d
        for d in docs
        if d["kind"] == "Secret" and "hub.services.notebooks.apiToken" in d.get("data", {})
    )
    glue = next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "rel-renku-notebooks"
    )
    ref = env_of(glue["spec"]["template"]["spec"]["containers"][0])["JUPYTERHUB_API_TOKEN"]
    assert ref["secretKeyRef"]["name"] == hub_secret["metadata"]["name"]
    hub = next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == hub_secret["metadata"]["name"]
    )
    glue_service = next(
        d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-notebooks")
    )
    assert glue_service["metadata"]["name"] == f"{hub['metadata']['name']}-notebooks"
    # z2jh's culler is off: the hub runs the one configured from `culling` (test_extraconfig)
    z2jh_values = yaml.safe_load(base64.b64decode(hub_secret["data"]["values.yaml"]))
    assert z2jh_values["cull"]["enabled"] is False
    assert [n for n, count in Counter(names(docs)).items() if count > 1] == []


def test_with_z2jh_the_hub_may_manage_workspace_claims_and_the_chart_adds_no_rule(
    helm: str, z2jh_chart: Path
) -> None:
    """Each server's workspace claim is made and deleted by the hub (glue/hub/kubespawner.py:
    get, create, delete on persistentvolumeclaims): z2jh's hub Role grants them, so no Role of
    ours names claims (z2jh's user-scheduler reads them for its own scheduling); z2jh's own
    per-user volume stays off. The claims' StorageClass reaches the hub in z2jh's Secret."""
    docs = template(
        helm, z2jh_chart, "rel", "--set", "jupyterhub.custom.notebooks.spawner.storageClass=fast"
    )
    validate_all(docs)
    roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
    claim_rules = {
        d["metadata"]["name"]: [r for r in d["rules"] if "persistentvolumeclaims" in r["resources"]]
        for d in roles
    }
    ours = [
        d["metadata"]["name"]
        for d in roles
        if d["metadata"]["labels"].get("app.kubernetes.io/part-of") == "renku-notebooks"
    ]
    assert ours and all(not claim_rules[name] for name in ours), claim_rules
    (rule,) = claim_rules["hub"]
    assert {"get", "create", "delete"} <= set(rule["verbs"])
    assert rule["apiGroups"] == [""]
    hub_secret = next(
        d
        for d in docs
        if d["kind"] == "Secret" and "hub.services.notebooks.apiToken" in d.get("data", {})
    )
    z2jh_values = yaml.safe_load(base64.b64decode(hub_secret["data"]["values.yaml"]))
    assert z2jh_values["singleuser"]["storage"]["type"] == "none"
    assert z2jh_values["custom"]["notebooks"]["spawner"]["storageClass"] == "fast"


def notes(helm: str, chart: Path, *args: str | Path) -> str:
    """The NOTES `helm install` prints, rendered as a template (install would need a cluster)."""
    templates = chart / "templates"
    text = (templates / "NOTES.txt").read_text()
    (templates / "_zz-notes.tpl").write_text(f'{{{{- define "zz.notes" }}}}{text}{{{{ end }}}}')
    (templates / "zz-notes.yaml").write_text('notes: {{ include "zz.notes" . | toJson }}\n')
    try:
        out = run(helm, "template", "rel", chart, "--show-only", "templates/zz-notes.yaml", *args)
        return yaml.safe_load(out.stdout)["notes"]
    finally:
        (templates / "_zz-notes.tpl").unlink()
        (templates / "zz-notes.yaml").unlink()


def test_notes_say_what_is_open(helm: str, chart: Path, tmp_path: Path) -> None:
    closed = notes(helm, chart)
    assert "nobody can log in yet" in closed
    assert f"Images: only quay.io/renku/renku-notebooks-singleuser:{BUILT_TAG}" in closed
    assert "WARNING: jupyterhub.hub.config.GitLabOAuthenticator.client_id is not set" in closed
    opened = notes(
        helm,
        chart,
        "-f",
        values_file(
            tmp_path,
            notebooks_values({"images": {"allowedRegistries": ["registry.gitlab.com"]}}),
        ),
        "--set",
        "jupyterhub.hub.config.Authenticator.allow_all=true",
        "--set",
        "jupyterhub.hub.config.GitLabOAuthenticator.client_id=app",
        "-f",
        values_file(tmp_path, USER_ORIGINS, "origins.yaml"),
    )
    assert "ANYONE with an account on https://gitlab.com can log in" in opened
    assert "per-commit images from registry.gitlab.com run in the cluster" in opened
    assert "Origins: each user's servers have an origin of their own, <user>.nb.example.org" in (
        opened
    )
    assert "WARNING" not in opened


def test_the_glue_learns_that_users_have_origins_of_their_own(
    helm: str, chart: Path, tmp_path: Path
) -> None:
    """From the one place the operator says it (z2jh's subdomain_host): its cookies are then
    `__Host-` ones (glue.core.config.host_cookies), as the hub's are."""
    docs = template(helm, chart, "rel", "-f", values_file(tmp_path, USER_ORIGINS))
    validate_all(docs)
    glue = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(glue)["NOTEBOOKS_SUBDOMAIN_HOST"] == SUBDOMAINS
    shared = one(template(helm, chart), "Deployment")["spec"]["template"]["spec"]
    assert "NOTEBOOKS_SUBDOMAIN_HOST" not in env_of(shared["containers"][0])


def test_notes_warn_while_users_share_the_hubs_origin(helm: str, chart: Path) -> None:
    """z2jh's default (no subdomain_host): every server on the hub's origin, said plainly."""
    shared = notes(helm, chart)
    assert "WARNING: every user's server shares the hub's origin" in shared
    assert "jupyterhub.hub.config.JupyterHub.subdomain_host" in shared
    assert "Origins:" not in shared


def test_defaults_are_safe(helm: str, chart: Path) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["jupyterhub"]
    assert values["custom"]["notebooks"]["images"]["allowedRegistries"] == []
    assert not (values["hub"].get("config") or {}).get("Authenticator", {}).get("allow_all")
    assert values["singleuser"]["cloudMetadata"]["blockWithIptables"] is False


def test_z2jh_hub_rolls_on_a_notebooks_change(helm: str, z2jh_chart: Path, tmp_path: Path) -> None:
    """z2jh's hub pod carries its Secret's checksum; the notebooks config is in that Secret."""

    def hub_checksum(*args: str) -> str:
        docs = template(helm, z2jh_chart, "rel", *args)
        hub = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "hub")
        return hub["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]

    bigger = {"name": "bigger", "cpu": 1, "memory": "2Gi", "default": True}
    values = values_file(tmp_path, notebooks_values({"profiles": [bigger]}))
    assert hub_checksum() != hub_checksum("-f", str(values))


def fixed_node_ports(values: dict[str, Any]) -> Any:
    return ((values.get("jupyterhub") or {}).get("proxy") or {}).get("service", {}).get("nodePorts")


def test_operator_values_fix_no_node_port() -> None:
    """A fixed NodePort is one per cluster: two releases installed from the same values would
    fight over it. The chart and minikube_values.yaml let Kubernetes pick a free one."""
    for path in (CHART / "values.yaml", ROOT / "minikube_values.yaml"):
        assert fixed_node_ports(yaml.safe_load(path.read_text())) is None, path


def test_two_releases_in_one_cluster_get_their_own_node_ports(
    helm: str, z2jh_chart: Path, tmp_path: Path
) -> None:
    ports = []
    for release in ("first", "second"):
        override = values_file(tmp_path, {"jupyterhub": {"fullnameOverride": release}}, release)
        docs = template(
            helm, z2jh_chart, release, "-f", ROOT / "minikube_values.yaml", "-f", override
        )
        proxy = next(
            d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("public")
        )
        assert proxy["spec"]["type"] == "NodePort"
        ports += [p.get("nodePort") for p in proxy["spec"]["ports"] if p.get("nodePort")]
    assert len(ports) == len(set(ports)), ports


@pytest.mark.parametrize(
    "override, message",
    [
        ("replicaCount=two", "replicaCount: Invalid type. Expected: integer, given: string"),
        ("replicaCont=2", "Additional property replicaCont is not allowed"),
        ("service.type=Public", "service.type must be one of"),
        ("metrics.serviceMonitor.interval=soon", "Does not match pattern"),
        ("networkPolicy.gitlab=10.0.0.1", "networkPolicy.gitlab: Invalid type"),
    ],
)
def test_invalid_chart_values_are_refused(
    helm: str, chart: Path, override: str, message: str
) -> None:
    for command in ("template", "lint"):
        args = [helm, command, *(["rel"] if command == "template" else []), chart]
        result = run(*args, "--set", override, check=False)
        assert result.returncode != 0, command
        assert message in result.stdout + result.stderr, result.stdout + result.stderr


def test_operator_options_reach_the_glue(helm: str, chart: Path, tmp_path: Path) -> None:
    docs = template(
        helm, chart, "rel", "-f", values_file(tmp_path, ALL_OPTIONS), *WITH_SERVICE_MONITOR
    )
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]
    spec, glue = pod["spec"], pod["spec"]["containers"][0]
    assert env_of(glue)["HTTPS_PROXY"] == "http://proxy.example.org:3128"
    assert {"name": "extra", "configMap": {"name": "extra-files"}} in spec["volumes"]
    assert {"name": "extra", "mountPath": "/etc/extra", "readOnly": True} in glue["volumeMounts"]
    assert spec["priorityClassName"] == "notebooks-services"
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    budget = one(docs, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"] == deployment["spec"]["selector"]

    # a parent chart's GitLab, where the notebooks config names none
    config_file = tmp_path / "config.yaml"
    config_file.write_text(one(docs, "ConfigMap")["data"]["config.yaml"])
    assert load(config_file)["provider"]["url"] == "https://gitlab.renku.example"

    # Prometheus: scrape annotations, a ServiceMonitor, a NetworkPolicy rule for its pods
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/jhub/services/nbs/metrics"
    assert annotations["prometheus.io/port"] == "8090"
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"] == one(docs, "Service")["spec"]["selector"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/jhub/services/nbs/metrics"
    assert endpoint["interval"] == "15s"
    assert endpoint["authorization"]["credentials"] == {"name": "metrics-token", "key": "token"}
    scrapers = [
        rule
        for rule in glue_policy(docs)["ingress"]
        if rule["from"] == ALL_OPTIONS["metrics"]["scrapers"]
    ]
    assert scrapers and scrapers[0]["ports"] == [{"port": "http"}]


def test_an_existing_cookie_secret(helm: str, chart: Path) -> None:
    docs = template(helm, chart, "rel", "--set", "secrets.existingSecret=my-glue-secret")
    assert "Secret" not in {d["kind"] for d in docs}
    glue = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(glue)["NOTEBOOKS_COOKIE_SECRET"] == {
        "secretKeyRef": {"name": "my-glue-secret", "key": "cookieSecret"}
    }


def test_renku_globals_are_defaults(helm: str, chart: Path, tmp_path: Path) -> None:
    renku = {
        "global": {
            "gitlab": {"url": "https://gitlab.renku.example"},
            "renku": {"domain": "renku.example"},
        }
    }
    docs = template(
        helm, chart, "rel", "-f", values_file(tmp_path, renku), "--set", "ingress.enabled=true"
    )
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])["notebooks"]
    assert config["provider"]["url"] == "https://gitlab.renku.example"
    assert one(docs, "Ingress")["spec"]["rules"][0]["host"] == "renku.example"
    # what the values say wins over the globals
    own = notebooks_values({"provider": {"kind": "gitlab", "url": "https://git.example.org"}})
    docs = template(
        helm,
        chart,
        "rel",
        "-f",
        values_file(tmp_path, renku),
        "-f",
        values_file(tmp_path, own, "own.yaml"),
    )
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])["notebooks"]
    assert config["provider"]["url"] == "https://git.example.org"


def test_helm_test_pod_checks_health_restricted(helm: str, chart: Path) -> None:
    from testing.kubepods import restricted_violations

    docs = template(helm, chart)
    validate_all(docs)
    pod = pods(docs)["rel-renku-notebooks-test-health"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert (
        pod["spec"]["containers"][0]["command"][-1]
        == "http://hub-notebooks/services/notebooks/health"
    )
    assert restricted_violations(pod) == []
    # the glue's NetworkPolicy lets it in
    peers = [peer["podSelector"]["matchLabels"] for peer in glue_policy(docs)["ingress"][0]["from"]]
    assert {k: pod["metadata"]["labels"][k] for k in peers[-1]} == peers[-1]


def pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The chart's Pods (its `helm test` ones) by name."""
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Pod"}


# what z2jh's hub and KubeSpawner put on every user pod of release `rel` (chart values
# unset; KubeSpawner's per-user labels aside): its common labels, singleuser.extraLabels'
# default, the component
USER_POD_LABELS = {
    "app": "jupyterhub",
    "heritage": "jupyterhub",
    "release": "rel",
    "component": "singleuser-server",
    "hub.jupyter.org/network-access-hub": "true",
}


@pytest.mark.parametrize(
    ("args", "labels"),
    [
        ([], USER_POD_LABELS),
        (
            [
                "--set",
                "jupyterhub.nameOverride=jh",
                "--set",
                "jupyterhub.singleuser.extraLabels.team=a",
            ],
            {**USER_POD_LABELS, "app": "jh", "team": "a"},
        ),
    ],
)
def test_helm_test_pod_finds_the_cloud_metadata_address_closed(
    helm: str, chart: Path, args: list[str], labels: dict[str, str]
) -> None:
    """The user pods have no iptables blocker (restricted), so NetworkPolicy alone keeps them
    from 169.254.169.254: a test pod labelled as a user pod, so the same policies apply to
    it, fails when that address accepts a connection (never sent from here: rendered only)."""
    from testing.kubepods import restricted_violations

    docs = template(helm, chart, "rel", *args)
    validate_all(docs)
    pod = pods(docs)["rel-renku-notebooks-test-cloud-metadata"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["labels"] == labels
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert restricted_violations(pod) == []
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    script = container["command"][-1]
    assert container["command"][:2] == ["sh", "-c"]
    assert "http://169.254.169.254/" in script and "--connect-timeout 3" in script
    assert "exit 1" in script  # a connection made fails the test
    # the policies on user pods are the ones on it: this chart's autosave ingress, say
    user_policies = [
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "NetworkPolicy" and selects(d["spec"]["podSelector"], USER_POD_LABELS)
    ]
    assert user_policies and all(
        selects(d["spec"]["podSelector"], pod["metadata"]["labels"])
        for d in docs
        if d["metadata"]["name"] in user_policies
    )


def test_notes_say_an_enforcing_cni_is_required(helm: str, chart: Path) -> None:
    text = " ".join(notes(helm, chart).split())
    assert (
        "only z2jh's singleuser NetworkPolicy keeps them from 169.254.169.254, so an enforcing "
        "CNI is required (a NetworkPolicy without an enforcing CNI blocks nothing)"
    ) in text
    assert "helm test rel --namespace" in text
    assert "WARNING: jupyterhub.singleuser.networkPolicy" not in text
    for off in (
        "jupyterhub.singleuser.networkPolicy.enabled=false",
        "jupyterhub.singleuser.networkPolicy.egressAllowRules.cloudMetadataServer=true",
    ):
        warned = " ".join(notes(helm, chart, "--set", off).split())
        assert "lets user pods reach the cloud metadata address 169.254.169.254" in warned
    # z2jh's (privileged) iptables blocker back on: NetworkPolicy is not the only block
    iptables = "jupyterhub.singleuser.cloudMetadata.blockWithIptables=true"
    blocked = notes(helm, chart, "--set", iptables, "--set", off)
    assert "enforcing CNI" not in blocked and "169.254.169.254" not in blocked


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and In/NotIn/Exists expressions) against a pod's labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values")
        if (op == "In" and labels.get(key) not in values) or (
            op == "NotIn" and labels.get(key) in values
        ):
            return False
        if (op == "Exists") != (key in labels) and op in ("Exists", "DoesNotExist"):
            return False
    return True


def allowed(
    docs: list[dict[str, Any]],
    direction: str,
    source: dict[str, str],
    dest: dict[str, str],
    port: int | str,
) -> bool:
    """Whether the NetworkPolicies of `direction` ("Egress": the source's, "Ingress": the
    destination's) let a pod (labels `source`) reach a pod of the same namespace (labels
    `dest`) on `port`, by pod selectors only: ipBlocks never count, because a pod's address
    matching privateIPs is the accident this is about. An ingress rule without peers admits
    everyone."""
    subject, other = (source, dest) if direction == "Egress" else (dest, source)
    peers_key = "to" if direction == "Egress" else "from"
    for policy in (d["spec"] for d in docs if d["kind"] == "NetworkPolicy"):
        if direction not in policy.get("policyTypes", []) or not selects(
            policy["podSelector"], subject
        ):
            continue
        for rule in policy.get(direction.lower()) or []:
            ports = [p.get("port") for p in rule.get("ports") or []]
            peers = rule.get(peers_key) or []
            if ports and port not in ports:
                continue
            if (direction == "Ingress" and not peers) or any(
                "podSelector" in peer
                and "namespaceSelector" not in peer
                and selects(peer["podSelector"], other)
                for peer in peers
            ):
                return True
    return False


def egress_allowed(
    docs: list[dict[str, Any]], source: dict[str, str], dest: dict[str, str], port: int
) -> bool:
    return allowed(docs, "Egress", source, dest, port)


def pod_labels(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, str]:
    doc = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    return doc["spec"]["template"]["metadata"]["labels"]


def test_hub_and_proxy_reach_the_glue_on_purpose(
    helm: str, z2jh_chart: Path, tmp_path: Path
) -> None:
    """With z2jh's policies, no private address open to anyone: hub and proxy still reach the
    glue, the hub and user pods reach a GitLab named in networkPolicy.gitlab."""
    closed = {"networkPolicy": {"egressAllowRules": {"privateIPs": False}}}
    gitlab_peer = {"podSelector": {"matchLabels": {"app": "gitlab"}}}
    values = {
        "networkPolicy": {"gitlab": [gitlab_peer]},
        "jupyterhub": {
            "hub": closed,
            "proxy": {"chp": closed},
            "singleuser": closed,
        },
    }
    docs = template(helm, z2jh_chart, "rel", "-f", values_file(tmp_path, values))
    validate_all(docs)
    glue = pod_labels(docs, "Deployment", "rel-renku-notebooks")
    hub = pod_labels(docs, "Deployment", "hub")
    proxy = pod_labels(docs, "Deployment", "proxy")
    # what KubeSpawner puts on a user pod under z2jh (its common labels, the component)
    user = {"component": "singleuser-server", "app": "jupyterhub", "release": "rel"}
    gitlab = {"app": "gitlab"}
    assert egress_allowed(docs, hub, glue, 8090)
    assert egress_allowed(docs, proxy, glue, 8090)
    assert egress_allowed(docs, hub, gitlab, 443)
    assert egress_allowed(docs, user, gitlab, 443)
    assert egress_allowed(docs, glue, gitlab, 443)
    # the user pods' git-proxy sidecar gets fresh GitLab tokens at the glue's -/git-token
    assert egress_allowed(docs, user, glue, 8090)
    # and the glue admits hub, proxy and user pods
    sources = [peer["podSelector"] for peer in glue_policy(docs)["ingress"][0]["from"]]
    for pod in (hub, proxy, user):
        assert any(selects(s, pod) for s in sources), pod


@pytest.mark.parametrize("release", ["rel", "other"])
def test_only_the_hub_reaches_the_autosave_control_port(
    helm: str, chart: Path, release: str
) -> None:
    """The hub asks a user pod's git-proxy sidecar to autosave before a stop (glue.hub.kubespawner):
    ingress to exactly that port, from this release's hub only, and the hub's egress to it."""
    docs = template(helm, chart, release)
    validate_all(docs)
    (policy,) = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and "Ingress" in d["spec"]["policyTypes"]
        and d["spec"]["podSelector"]["matchLabels"].get("component") == "singleuser-server"
    ]
    spec = policy["spec"]
    assert policy["metadata"]["name"] == f"{release}-renku-notebooks-singleuser-autosave"
    hub = {"component": "hub", "app": "jupyterhub", "release": release}
    user = {"component": "singleuser-server", "app": "jupyterhub", "release": release}
    users = {"component": "singleuser-server", "release": release}
    assert spec["podSelector"] == {"matchLabels": users}
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [
        {
            "from": [{"podSelector": {"matchLabels": {"component": "hub", "release": release}}}],
            "ports": [{"port": CONTROL_PORT, "protocol": "TCP"}],
        }
    ]
    assert allowed(docs, "Ingress", hub, user, CONTROL_PORT)
    assert egress_allowed(docs, hub, user, CONTROL_PORT)
    glue = pod_labels(docs, "Deployment", f"{release}-renku-notebooks")
    proxy = {"component": "proxy", "app": "jupyterhub", "release": release}
    other_hub = {**hub, "release": "someone-else"}
    for source in (user, proxy, glue, other_hub, {}):
        assert not allowed(docs, "Ingress", source, user, CONTROL_PORT), source
    assert not allowed(docs, "Ingress", hub, user, 8888)  # z2jh's business, not widened here
    assert not egress_allowed(docs, hub, user, 8888)
    assert not egress_allowed(docs, proxy, user, CONTROL_PORT)

    # where z2jh isolates no user pod, an ingress policy alone would cut them off
    off = ["--set", "jupyterhub.singleuser.networkPolicy.enabled=false"]
    off_docs = template(helm, chart, release, *off)
    assert not any(d["metadata"]["name"] == policy["metadata"]["name"] for d in off_docs)


def test_no_egress_policy_where_z2jh_isolates_nothing(helm: str, chart: Path) -> None:
    """Alone, an egress policy would cut a pod off from everything else it reaches."""
    off = ["--set", "jupyterhub.hub.networkPolicy.enabled=false"]
    off += ["--set", "jupyterhub.proxy.chp.networkPolicy.enabled=false"]
    docs = template(
        helm, chart, "rel", *off, "--set", "networkPolicy.gitlab[0].ipBlock.cidr=10.0.0.1/32"
    )
    selected = [
        d["spec"]["podSelector"].get("matchLabels", {}).get("component")
        for d in docs
        if d["kind"] == "NetworkPolicy"
    ]
    assert "hub" not in selected and "proxy" not in selected
    assert "singleuser-server" in selected


def test_the_glue_listens_on_both_ip_stacks(helm: str, chart: Path, tmp_path: Path) -> None:
    """The chart's command, on loopback: 0.0.0.0 -> 127.0.0.1 and :: -> ::1."""
    import socket

    import requests

    docs = template(helm, chart)
    glue = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(one(docs, "ConfigMap")["data"]["config.yaml"])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loopback = {"0.0.0.0": "127.0.0.1", "::": "::1", "8090": str(port)}
    command = [loopback.get(arg, arg) for arg in glue["command"]]
    command = [sys.executable if arg == "python" else arg for arg in command]
    command[command.index("--config") + 1] = str(config_file)
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "JUPYTERHUB_API_TOKEN": "a-token",
        "JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api",  # nobody: health says 503
    }
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for host in ("127.0.0.1", "[::1]"):
            url = f"http://{host}:{port}/services/notebooks/health"
            for _ in range(100):
                try:
                    response = requests.get(url, timeout=5)
                    break
                except requests.ConnectionError:
                    assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
                    import time

                    time.sleep(0.1)
            else:
                raise AssertionError(f"nothing answers at {url}")
            assert response.status_code == 503 and response.json()["error"]
    finally:
        process.terminate()
        process.wait(10)


DOCKERFILES = [
    ROOT / "glue" / "Dockerfile",
    ROOT / "helm-chart" / "images" / "hub" / "Dockerfile",
    ROOT / "helm-chart" / "images" / "singleuser" / "Dockerfile",
]
IMAGES = ROOT / "helm-chart" / "images"
EXACT_TAG = r"[\w.-]+(/[\w.-]+)*:v?\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?"


def dockerfile_lines(path: Path) -> list[str]:
    """Instructions, continuation lines joined."""
    return [line.strip() for line in path.read_text().replace("\\\n", " ").splitlines()]


def dockerfile_args(path: Path) -> dict[str, str]:
    """The build ARGs with defaults: the pinned bases."""
    import re

    found = (re.match(r"ARG (\w+)=(\S+)", line) for line in dockerfile_lines(path))
    return dict(match.groups() for match in found if match)  # type: ignore[misc]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_images_build_reproducibly(dockerfile: Path) -> None:
    import re

    lines = dockerfile_lines(dockerfile)
    assert not any(re.match(r"#\s*syntax\s*=", line, re.I) for line in lines), (
        "a `# syntax=` line pulls a BuildKit frontend from Docker Hub"
    )
    args = dockerfile_args(dockerfile)
    stages = set()
    for line in (line for line in lines if line.startswith("FROM ")):
        image, *rest = line.split()[1:]
        stages.update(rest[1:] if rest[:1] == ["AS"] else [])
        image = args.get(image.strip("${}"), image) if image.startswith("$") else image
        assert image in stages or re.fullmatch(EXACT_TAG, image), f"{image}: not pinned"
    # the Python base (Docker Hub's official image, whose tags are rebuilt) by digest too
    assert re.fullmatch(r"python:[\w.-]+@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"]), args
    # both images build on one Python base, so one wheel build serves them
    assert args["PYTHON_IMAGE"] == dockerfile_args(DOCKERFILES[0])["PYTHON_IMAGE"]
    installs = [line for line in lines if re.search(r"\bpip (install|wheel)\b", line)]
    assert installs
    for line in installs:
        if "pip wheel" in line:
            assert "--no-build-isolation" in line and "--no-deps" in line, line
        elif "--require-hashes" not in line:
            # the package from its wheel: with exact pins, or none at all (z2jh's)
            assert "/tmp/wheels/" in line, line
            assert "--constraint /tmp/requirements.txt" in line or "--no-deps" in line, line
    assert not any("hatchling" in line for line in installs)  # only from the hashed file


def test_image_requirements_are_exact() -> None:
    import re

    pins = [
        line
        for line in (IMAGES / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert pins and all(re.fullmatch(r"[a-z0-9._-]+==[\w.+!-]+", pin) for pin in pins), pins
    declared = yaml.safe_load((ROOT / "chartpress.yaml").read_text())
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    names = {pin.split("==")[0] for pin in pins}
    for requirement in map(Requirement, requires("renku-notebooks") or []):
        if requirement.marker is None:
            assert requirement.name.lower().replace("_", "-") in names, requirement
    build = (IMAGES / "build-requirements.txt").read_text()
    entries = re.findall(r"^([a-z0-9._-]+)==\S+ \\\n\s+--hash=sha256:[0-9a-f]{64}$", build, re.M)
    assert "hatchling" in entries
    images = declared["charts"][0]["images"]
    assert "helm-chart/images/requirements.txt" in images["glue"]["paths"]


def containers_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_one_value_is_the_glue_image_everywhere(helm: str, chart: Path, tmp_path: Path) -> None:
    """jupyterhub.custom.notebooks.spawner.cloneImage is the glue image: the glue, its
    pre-puller and the pre-delete hook run it, with z2jh's chart-wide pull secrets (which
    z2jh gives KubeSpawner for every user pod, whose clone step runs it too); chartpress
    writes that one value and the values name no other copy of it."""
    glue = yaml.safe_load((ROOT / "chartpress.yaml").read_text())["charts"][0]["images"]["glue"]
    assert glue["valuesPath"] == "jupyterhub.custom.notebooks.spawner.cloneImage"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert "image" not in values and "imagePullSecrets" not in values
    assert "extraImages" not in values["jupyterhub"].get("prePuller", {})
    assert (CHART / "values.yaml").read_text().count("renku-notebooks-glue") == 1

    image = "registry.example.org/me/renku-notebooks-glue:0.2.0"
    docs = template(
        helm,
        chart,
        "rel",
        "-f",
        values_file(
            tmp_path,
            {
                "jupyterhub": {
                    "custom": {"notebooks": {"spawner": {"cloneImage": image}}},
                    "imagePullSecrets": ["registry-a", {"name": "registry-b"}],
                    "imagePullSecret": {"create": True},
                }
            },
        ),
    )
    validate_all(docs)
    users = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet", "Job")]
    assert {d["kind"] for d in users} == {"Deployment", "DaemonSet", "Job"}
    for doc in users:
        assert {c["image"] for c in containers_of(doc)} == {image}, doc["metadata"]["name"]
        assert doc["spec"]["template"]["spec"]["imagePullSecrets"] == [
            {"name": "registry-a"},
            {"name": "registry-b"},
            {"name": "image-pull-secret"},  # z2jh's own, injected as z2jh injects it
        ], doc["metadata"]["name"]
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])
    assert config["notebooks"]["spawner"]["cloneImage"] == image  # the hub's, in z2jh's Secret


def test_the_clone_puller_runs_where_user_pods_run(helm: str, chart: Path, tmp_path: Path) -> None:
    """The glue image on every user node, before the first launch there: z2jh's user pod
    tolerations and node selector, restricted, no token, nothing to do but hold the image."""
    (puller,) = [d for d in template(helm, chart) if d["kind"] == "DaemonSet"]
    spec = puller["spec"]["template"]["spec"]
    assert {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user",
            "effect": "NoSchedule"} in spec["tolerations"]  # fmt: skip
    assert spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    assert container["command"] == ["sleep", "infinity"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    selected = values_file(
        tmp_path,
        {"jupyterhub": {"singleuser": {"nodeSelector": {"pool": "users"}}}, "clonePuller": {}},
    )
    docs = template(helm, chart, "rel", "-f", selected)
    (puller,) = [d for d in docs if d["kind"] == "DaemonSet"]
    assert puller["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "users"}
    off = template(helm, chart, "rel", "--set", "clonePuller.enabled=false")
    assert "DaemonSet" not in {d["kind"] for d in off}


def pod_log_access(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Role and the RoleBinding that let the glue read its servers' pod logs."""
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    return one(docs, "Role"), one(docs, "RoleBinding")


@pytest.mark.parametrize(
    "values, account, created",
    [
        ({}, "rel-renku-notebooks", True),
        ({"serviceAccount": {"create": True, "name": "glue-sa"}}, "glue-sa", True),
        ({"serviceAccount": {"create": False, "name": "theirs"}}, "theirs", False),
    ],
)
def test_the_glue_may_read_pod_logs_and_nothing_else(
    helm: str,
    chart: Path,
    tmp_path: Path,
    values: dict[str, Any],
    account: str,
    created: bool,
) -> None:
    """Least privilege: a Role in the release's namespace with `get` on `pods/log` only,
    bound to the glue's own service account, whose token only the glue's pod mounts."""
    docs = template(helm, chart, "rel", "-f", values_file(tmp_path, values))
    validate_all(docs)
    role, binding = pod_log_access(docs)
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == account
    assert spec["automountServiceAccountToken"] is True  # glue.service.podlogs reads it
    accounts = [
        d
        for d in docs
        if d["kind"] == "ServiceAccount"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "glue"
    ]
    if created:
        (made,) = accounts
        assert made["metadata"]["name"] == account
        assert made["automountServiceAccountToken"] is False  # nobody else gets its token
    else:
        assert not accounts
    # the glue reaches the API server, on its ports only
    api = [
        rule
        for rule in glue_policy(docs)["egress"]
        if {p.get("port") for p in rule.get("ports", [])} == {443, 6443}
    ]
    assert len(api) == 1 and api[0]["to"]


def test_pod_log_access_is_named_per_release(helm: str, chart: Path, tmp_path: Path) -> None:
    first = pod_log_access(template(helm, chart, "first"))
    second = pod_log_access(template(helm, chart, "second"))
    assert first[0]["metadata"]["name"] != second[0]["metadata"]["name"]
    docs = template(helm, chart, "rel", "-f", values_file(tmp_path, ALL_OPTIONS))
    role, binding = pod_log_access(docs)
    assert role["metadata"]["name"] == binding["roleRef"]["name"] == "rel-nb-pod-logs"
    assert binding["subjects"][0]["name"] == "glue-sa"
    api = glue_policy(docs)["egress"]
    assert {"ipBlock": {"cidr": "172.18.0.2/32"}} in [p for r in api for p in r.get("to", [])]
    closed = values_file(tmp_path, {"networkPolicy": {"kubernetesApi": []}}, "closed.yaml")
    ports = [
        {p.get("port") for p in r.get("ports", [])}
        for r in glue_policy(template(helm, chart, "rel", "-f", closed))["egress"]
    ]
    assert {443, 6443} not in ports


def test_a_private_ca_is_one_value(helm: str, chart: Path, tmp_path: Path) -> None:
    """provider.caBundle travels in the notebooks config (the glue's ConfigMap, z2jh's hub
    Secret): no container of the chart gets a CA volume or variable for it; a bundle that is no
    PEM is refused by the values schema."""
    pem = (ROOT / "tests" / "private-ca.crt").read_text()
    values = {"jupyterhub": {"custom": {"notebooks": {"provider": {"caBundle": pem}}}}}
    docs = template(helm, chart, "rel", "-f", values_file(tmp_path, values))
    validate_all(docs)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(one(docs, "ConfigMap")["data"]["config.yaml"])
    assert load(config_file)["provider"]["caBundle"] == pem
    for doc in docs:
        for container in (
            doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        ):
            names = {e["name"] for e in container.get("env") or []}
            assert not names & {"SSL_CERT_FILE", "GIT_SSL_CAINFO", "REQUESTS_CA_BUNDLE"}

    bad = {"jupyterhub": {"custom": {"notebooks": {"provider": {"caBundle": "my-ca"}}}}}
    refused = run(
        helm, "template", "rel", chart, "-f", values_file(tmp_path, bad, "bad.yaml"), check=False
    )
    assert refused.returncode != 0 and "caBundle" in refused.stderr


# --- publishing, GitOps, uninstall (issue 23) -----------------------------------------------


def test_placeholder_image_tags_are_refused_with_what_to_set(helm: str, tmp_path: Path) -> None:
    """The chart as committed (chartpress's placeholders) fails at once, saying which value
    and how to set it, instead of an install whose image-puller hook waits on an image that
    does not exist."""
    raw = without_dependency(CHART, tmp_path / "renku-notebooks", built=False)
    refused = run(helm, "template", "rel", raw, check=False)
    assert refused.returncode != 0
    assert "jupyterhub.custom.notebooks.spawner.cloneImage" in refused.stderr, refused.stderr
    assert "set-by-chartpress" in refused.stderr
    assert ".venv/bin/chartpress --force-build" in refused.stderr
    glue_set = (
        "--set",
        f"jupyterhub.custom.notebooks.spawner.cloneImage=r.example.org/g:{BUILT_TAG}",
    )
    refused = run(helm, "template", "rel", raw, *glue_set, check=False)
    assert refused.returncode != 0
    assert "jupyterhub.hub.image.tag" in refused.stderr, refused.stderr
    assert "the tag you pushed" in refused.stderr
    hub_set = (*glue_set, "--set", "jupyterhub.hub.image.tag=1.0.0")
    refused = run(helm, "template", "rel", raw, *hub_set, check=False)
    assert refused.returncode != 0
    assert "jupyterhub.custom.notebooks.images.default" in refused.stderr, refused.stderr
    user_set = (*hub_set, "--set", "jupyterhub.custom.notebooks.images.default=r.example.org/u:1")
    refused = run(helm, "template", "rel", raw, *user_set, check=False)
    assert refused.returncode != 0
    assert "jupyterhub.singleuser.image.tag" in refused.stderr, refused.stderr
    docs = template(helm, raw, "rel", *user_set, "--set", "jupyterhub.singleuser.image.tag=1")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"r.example.org/g:{BUILT_TAG}"
    )


def test_a_repeated_key_fails_the_strict_parse() -> None:
    """The tests parse every rendered document as kustomize does (testing.chart.template):
    a key written twice is an error, not the last value."""
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key"):
        yaml.load("metadata:\n  labels:\n    a: 1\n    a: 2\n", Loader=StrictLoader)


def test_every_rendered_document_parses_strictly(helm: str, chart: Path, tmp_path: Path) -> None:
    renders = [
        template(helm, chart),
        template(
            helm, chart, "rel", "-f", values_file(tmp_path, ALL_OPTIONS), *WITH_SERVICE_MONITOR
        ),
    ]
    for docs in renders:
        validate_all(docs)
        health = pods(docs)
        (test_pod,) = [p for name, p in health.items() if name.endswith("-test-health")]
        assert test_pod["metadata"]["labels"]["app.kubernetes.io/component"] == "test"


def glue_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(
        d["spec"]["template"]
        for d in docs
        if d["kind"] == "Deployment"
        and d["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") == "glue"
    )


def secrets_checksum(helm: str, chart: Path, *args: str | Path) -> str:
    return str(
        glue_pod(template(helm, chart, "rel", *args))["metadata"]["annotations"]["checksum/secrets"]
    )


def test_the_glue_rolls_when_a_secret_it_reads_changes_and_only_then(
    helm: str, chart: Path
) -> None:
    """checksum/secrets follows the inputs of the glue's secrets (its cookie key, the hub
    service token z2jh keeps): a change restarts the glue; a mere re-render (helm template,
    Argo CD, Flux), which regenerates unpinned random values, does not."""
    base = secrets_checksum(helm, chart)
    assert secrets_checksum(helm, chart) == base  # deterministic
    changed = [
        secrets_checksum(helm, chart, "--set", "secrets.cookieSecret=one"),
        secrets_checksum(helm, chart, "--set", "secrets.cookieSecret=two"),
        secrets_checksum(helm, chart, "--set", "secrets.existingSecret=theirs"),
        secrets_checksum(helm, chart, "--set", "jupyterhub.hub.services.notebooks.apiToken=t1"),
        secrets_checksum(helm, chart, "--set", "jupyterhub.hub.services.notebooks.apiToken=t2"),
    ]
    assert len({base, *changed}) == 6
    # the ConfigMap's checksum is there as before
    assert "checksum/config" in glue_pod(template(helm, chart))["metadata"]["annotations"]


def test_an_existing_secret_is_honoured_and_pinned_values_render_the_same_twice(
    helm: str, chart: Path, tmp_path: Path
) -> None:
    """existingSecret: the chart makes no Secret and reads the operator's; with every random
    value pinned, two renders are the same bytes (what GitOps needs)."""
    docs = template(helm, chart, "rel", "--set", "secrets.existingSecret=my-glue-secret")
    assert "Secret" not in {d["kind"] for d in docs}
    glue = glue_pod(docs)["spec"]["containers"][0]
    assert env_of(glue)["NOTEBOOKS_COOKIE_SECRET"] == {
        "secretKeyRef": {"name": "my-glue-secret", "key": "cookieSecret"}
    }
    pinned = values_file(tmp_path, {"secrets": {"cookieSecret": "c" * 64}})
    first = run(helm, "template", "rel", chart, "-f", pinned).stdout
    assert first == run(helm, "template", "rel", chart, "-f", pinned).stdout
    unpinned = run(helm, "template", "rel", chart).stdout
    assert unpinned != run(helm, "template", "rel", chart).stdout  # randAlphaNum: pin it


# z2jh's random values too (its hub Secret), as docs/kubernetes.rst lists them
PINNED_Z2JH = {
    "secrets": {"cookieSecret": "c" * 64},
    "jupyterhub": {
        "hub": {
            "config": {
                "JupyterHub": {"cookie_secret": "a" * 64},
                "CryptKeeper": {"keys": ["b" * 64]},
                "ConfigurableHTTPProxy": {"auth_token": "d" * 64},
            },
            "services": {
                "notebooks": {"apiToken": "e" * 64},
                "notebooks-drain": {"apiToken": "f" * 64},
            },
        }
    },
}


def test_with_z2jh_every_random_value_can_be_pinned(
    helm: str, z2jh_chart: Path, tmp_path: Path
) -> None:
    pinned = values_file(tmp_path, PINNED_Z2JH)
    first = run(helm, "template", "rel", z2jh_chart, "-f", pinned).stdout
    assert first == run(helm, "template", "rel", z2jh_chart, "-f", pinned).stdout
    docs = load_docs(first)
    hub_secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "hub")
    assert (
        base64.b64decode(hub_secret["data"]["hub.services.notebooks-drain.apiToken"]) == b"f" * 64
    )


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=StrictLoader) if d]


def hook_job(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (job,) = [
        d
        for d in docs
        if d["kind"] == "Job"
        and d["metadata"]["labels"].get("app.kubernetes.io/component") == "save-servers"
    ]
    return job


def test_the_pre_delete_hook_saves_every_server_with_least_privilege(
    helm: str, chart: Path, tmp_path: Path
) -> None:
    docs = template(helm, chart)
    validate_all(docs)
    job = hook_job(docs)
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    assert "hook-succeeded" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 900
    pod = job["spec"]["template"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["command"][:3] == ["python", "-m", "glue.service.drain"]
    assert container["command"][3:] == ["--save-seconds", "300", "--deadline-seconds", "880"]
    assert container["image"] == glue_pod(docs)["spec"]["containers"][0]["image"]
    env = env_of(container)
    assert env["JUPYTERHUB_API_URL"] == "http://hub:8081/hub/api"
    assert env["JUPYTERHUB_API_TOKEN"] == {
        "secretKeyRef": {"name": "hub", "key": f"hub.services.notebooks{DRAIN_SUFFIX}.apiToken"}
    }
    # the token is the hub's, never in the manifest; the hub admits the pod to its API
    assert pod["metadata"]["labels"]["hub.jupyter.org/network-access-hub"] == "true"
    assert spec["restartPolicy"] == "Never"
    # its own ServiceAccount, bound to nothing, no Kubernetes token mounted
    account = spec["serviceAccountName"]
    assert spec["automountServiceAccountToken"] is False
    (made,) = [
        d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account
    ]
    assert made["automountServiceAccountToken"] is False
    assert "helm.sh/hook" not in made["metadata"].get("annotations", {})  # exists at pre-delete
    bound = [s["name"] for d in docs if d["kind"] == "RoleBinding" for s in d["subjects"]]
    assert account not in bound
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # the hub gives the drain service its role (glue.hub.kubesetup) only where it is listed
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"notebooks{DRAIN_SUFFIX}" in values["jupyterhub"]["hub"]["services"]
    without = {"jupyterhub": {"hub": {"services": {"notebooks-drain": None}}}}
    refused = run(helm, "template", "rel", chart, "-f", values_file(tmp_path, without), check=False)
    assert refused.returncode != 0
    assert 'jupyterhub.hub.services needs the key "notebooks-drain"' in refused.stderr
    # named after the service and the release: a second release has its own
    second = template(helm, chart, "two", "--set", "jupyterhub.fullnameOverride=two",
                      "--set", "jupyterhub.custom.notebooks.service.name=nbs",
                      "--set", "jupyterhub.hub.services.nbs.oauth_no_confirm=true",
                      "--set", "jupyterhub.hub.services.nbs-drain.x=1")  # fmt: skip
    job2 = hook_job(second)
    assert job2["metadata"]["name"] != job["metadata"]["name"]
    assert env_of(job2["spec"]["template"]["spec"]["containers"][0])["JUPYTERHUB_API_TOKEN"] == {
        "secretKeyRef": {"name": "two-hub", "key": "hub.services.nbs-drain.apiToken"}
    }
    off = template(helm, chart, "rel", "--set", "uninstallHook.enabled=false",
                   "--set", "jupyterhub.hub.services.notebooks-drain=null")  # fmt: skip
    assert "Job" not in {d["kind"] for d in off}


def egress_to(policy: dict[str, Any], port: int) -> list[dict[str, Any]]:
    return [
        peer
        for rule in policy["egress"]
        if port in {p.get("port") for p in rule.get("ports", [])}
        for peer in rule.get("to", [{"everywhere": True}])
    ]


def test_the_glues_egress_to_the_api_server_and_dns_is_narrow(
    helm: str, chart: Path, tmp_path: Path
) -> None:
    policy = glue_policy(template(helm, chart))
    private = [{"ipBlock": {"cidr": c}} for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
    assert egress_to(policy, 443) == egress_to(policy, 6443) == private  # not 0.0.0.0/0
    dns = egress_to(policy, 53)
    assert {"ipBlock": {"cidr": "169.254.169.254/32"}} in dns
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    } in dns
    assert all(peer in dns for peer in private)
    assert not any(p.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for p in dns)
    assert {"everywhere": True} not in dns
    narrowed = values_file(
        tmp_path,
        {
            "networkPolicy": {
                "kubernetesApi": [{"ipBlock": {"cidr": "172.18.0.2/32"}}],
                "egressAllowRules": {
                    "dnsPortsCloudMetadataServer": False,
                    "dnsPortsPrivateIPs": False,
                    "dnsPortsKubeSystemNamespace": True,
                },
            }
        },
    )
    policy = glue_policy(template(helm, chart, "rel", "-f", narrowed))
    assert egress_to(policy, 443) == [{"ipBlock": {"cidr": "172.18.0.2/32"}}]
    assert egress_to(policy, 53) == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
    ]
    no_dns = values_file(
        tmp_path,
        {
            "networkPolicy": {
                "egressAllowRules": {
                    "dnsPortsCloudMetadataServer": False,
                    "dnsPortsPrivateIPs": False,
                    "dnsPortsKubeSystemNamespace": False,
                }
            }
        },
        "no-dns.yaml",
    )
    assert egress_to(glue_policy(template(helm, chart, "rel", "-f", no_dns)), 53) == []


@pytest.mark.parametrize(
    "replicas, min_available, made",
    [(1, 1, False), (2, 1, True), (2, 2, False), (3, "100%", False), (2, "50%", True)],
)
def test_the_disruption_budget_never_blocks_a_drain(
    helm: str, chart: Path, tmp_path: Path, replicas: int, min_available: Any, made: bool
) -> None:
    values = {
        "replicaCount": replicas,
        "podDisruptionBudget": {"enabled": True, "minAvailable": min_available},
    }
    docs = template(helm, chart, "rel", "-f", values_file(tmp_path, values))
    assert ("PodDisruptionBudget" in {d["kind"] for d in docs}) is made


def test_a_service_monitor_only_where_its_crd_is_served(helm: str, chart: Path) -> None:
    on = ("--set", "metrics.serviceMonitor.enabled=true")
    assert "ServiceMonitor" not in {d["kind"] for d in template(helm, chart, "rel", *on)}
    docs = template(helm, chart, "rel", *on, *WITH_SERVICE_MONITOR)
    assert "ServiceMonitor" in {d["kind"] for d in docs}


def test_the_ingress_and_the_http_route_route_the_hub_too(
    helm: str, chart: Path, tmp_path: Path
) -> None:
    """Login needs the hub on the same host: the glue's prefix goes to the glue, the rest of
    the hub's base URL to z2jh's proxy-public."""
    docs = template(helm, chart, "rel", "-f", values_file(tmp_path, ALL_OPTIONS))
    (rule,) = one(docs, "Ingress")["spec"]["rules"]
    routes = {p["path"]: p["backend"]["service"] for p in rule["http"]["paths"]}
    assert routes == {
        "/jhub/services/nbs/": {"name": "jh-hub-nbs", "port": {"name": "http"}},
        "/jhub/": {"name": "jh-proxy-public", "port": {"name": "http"}},
    }
    route = one(docs, "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "gateway", "namespace": "gateways"}]
    assert route["spec"]["hostnames"] == ["notebooks.example.org"]
    assert [
        (r["matches"][0]["path"]["value"], r["backendRefs"][0]["name"], r["backendRefs"][0]["port"])
        for r in route["spec"]["rules"]
    ] == [("/jhub/services/nbs/", "jh-hub-nbs", 80), ("/jhub/", "jh-proxy-public", 80)]
    glue_only = values_file(
        tmp_path,
        {
            "ingress": {"enabled": True, "routeHub": False},
            "httpRoute": {"enabled": True, "routeHub": False},
            "global": {"renku": {"domain": "renku.example.org"}},
        },
        "glue-only.yaml",
    )
    docs = template(helm, chart, "rel", "-f", glue_only)
    (rule,) = one(docs, "Ingress")["spec"]["rules"]
    assert [p["path"] for p in rule["http"]["paths"]] == ["/services/notebooks/"]
    route = one(docs, "HTTPRoute")["spec"]
    assert route["hostnames"] == ["renku.example.org"] and len(route["rules"]) == 1
    assert "HTTPRoute" not in {d["kind"] for d in template(helm, chart)}


def test_the_hub_and_the_proxy_get_resources_by_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["jupyterhub"]
    for resources in (values["hub"]["resources"], values["proxy"]["chp"]["resources"]):
        assert resources["requests"]["cpu"] and resources["requests"]["memory"]
        assert resources["limits"]["memory"]


def test_with_z2jh_the_hub_and_proxy_have_resources_and_the_drain_token(
    helm: str, z2jh_chart: Path
) -> None:
    docs = template(helm, z2jh_chart)
    validate_all(docs)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for name in ("hub", "proxy"):
        (container,) = [
            c for c in deployments[name]["spec"]["template"]["spec"]["containers"]
            if c["name"] in ("hub", "chp")
        ]  # fmt: skip
        assert container["resources"]["requests"]["memory"], name
    hub_secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "hub")
    assert f"hub.services.notebooks{DRAIN_SUFFIX}.apiToken" in hub_secret["data"]
    # the clone puller takes z2jh's user pod tolerations from z2jh's own values
    (puller,) = [
        d for d in docs if d["kind"] == "DaemonSet" and "clone-puller" in d["metadata"]["name"]
    ]
    assert puller["spec"]["template"]["spec"]["tolerations"]


def test_the_notes_warnings_reach_the_glues_log(
    helm: str, chart: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A parent chart (renku) shows only its own NOTES: the glue logs this chart's warnings
    at every start, the same text."""
    docs = template(helm, chart)
    env = env_of(glue_pod(docs)["spec"]["containers"][0])
    text = env[CHART_WARNINGS_ENV]
    printed = notes(helm, chart)
    for paragraph in text.split("\n\n"):
        assert paragraph.startswith("WARNING: ") and paragraph in printed
    with caplog.at_level("WARNING", logger="glue.service.app"):
        logged = log_chart_warnings({CHART_WARNINGS_ENV: text})
    assert len(logged) == text.count("WARNING: ") == 2  # shared origin, no OAuth client
    assert [r.getMessage() for r in caplog.records] == [f"chart: {w}" for w in logged]
    assert all("\n" not in w for w in logged)
    # no warning, no variable
    quiet = values_file(
        chart.parent,
        {
            "jupyterhub": {
                "hub": {
                    "config": {
                        "JupyterHub": {"subdomain_host": SUBDOMAINS},
                        "GitLabOAuthenticator": {"client_id": "x"},
                    }
                },
                "proxy": HOST_ROUTING,
            }
        },
        "quiet.yaml",
    )
    env = env_of(glue_pod(template(helm, chart, "rel", "-f", quiet))["spec"]["containers"][0])
    assert CHART_WARNINGS_ENV not in env


def release_checkout(tmp_path: Path) -> Path:
    """This checkout's files (committed or not, as git would ship them) in a repository of
    their own whose one commit is tagged 9.9.9, as a release's checkout is."""
    listed = run("git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    dest = tmp_path / "release"
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    git = ("git", "-C", dest, "-c", "user.name=release", "-c", "user.email=release@example.org")
    run(*git, "init", "-q")
    run(*git, "add", "-A")
    run(*git, "commit", "-q", "-m", "release")
    run(*git, "tag", "9.9.9")
    return dest


def test_a_release_tag_versions_the_chart_and_both_images(helm: str, tmp_path: Path) -> None:
    """What the release workflow publishes, short of the push: chartpress (the pinned one)
    versions the chart and both images from the git tag, an operator's --image-prefix names
    their registry, and the packaged chart renders with those images and no placeholder."""
    checkout = release_checkout(tmp_path)
    chartpress = Path(sys.executable).parent / "chartpress"
    prefix = "registry.example.org/me/renku-notebooks-"
    done = subprocess.run(
        [chartpress, "--skip-build", "--image-prefix", prefix],
        cwd=checkout, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    chart = checkout / "helm-chart" / "renku-notebooks"
    assert yaml.safe_load((chart / "Chart.yaml").read_text())["version"] == "9.9.9"
    packaged = without_dependency(chart, tmp_path / "packaged" / "renku-notebooks", built=False)
    run(helm, "package", packaged, "--destination", tmp_path / "dist")
    (tgz,) = (tmp_path / "dist").glob("*.tgz")
    assert tgz.name == "renku-notebooks-9.9.9.tgz"
    docs = template(helm, tgz)
    assert glue_pod(docs)["spec"]["containers"][0]["image"] == f"{prefix}glue:9.9.9"
    values = yaml.safe_load((chart / "values.yaml").read_text())["jupyterhub"]["hub"]["image"]
    assert values == {"name": f"{prefix}hub", "tag": "9.9.9"}
    assert "set-by-chartpress" not in tgz.read_bytes().decode("latin-1")
    # a commit after the release is a development version of the next patch
    (checkout / "glue" / "__init__.py").write_text("# changed after the release\n")
    git = ("git", "-C", checkout, "-c", "user.name=dev", "-c", "user.email=dev@example.org")
    run(*git, "commit", "-q", "-a", "-m", "after the release")
    done = subprocess.run(
        [chartpress, "--skip-build"], cwd=checkout, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    version = yaml.safe_load((chart / "Chart.yaml").read_text())["version"]
    assert version.startswith("9.9.10-0.dev.git."), version


def test_the_release_workflow_pushes_and_publishes_from_a_tag(helm: str) -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yaml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["push"]["tags"][0] == "[0-9]+.[0-9]+.[0-9]+"
    assert "image-prefix" in triggers["workflow_dispatch"]["inputs"]
    steps = workflow["jobs"]["release"]["steps"]
    script = "\n".join(step.get("run", "") for step in steps)
    assert ".venv/bin/chartpress \"${args[@]}\"" in script
    assert "args=(--push)" in script and "--publish-chart" in script and "--image-prefix" in script
    assert "fetch-depth" in str(steps[0])  # chartpress needs the tags and history
    (setup_helm,) = [s for s in steps if str(s.get("uses", "")).startswith("azure/setup-helm")]
    ours = run(helm, "version", "--short").stdout.strip()
    assert ours.startswith(setup_helm["with"]["version"] + "+"), ours


def test_the_e2e_pins_its_helm_kind_and_node_image(helm: str) -> None:
    """One helm version everywhere (the tests', the e2e workflow's, e2e/run.sh's check), and
    kind and its node image pinned (the image by digest)."""
    ours = run(helm, "version", "--short").stdout.strip().split("+")[0]
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "e2e.yaml").read_text())
    steps = {s.get("name"): s for s in workflow["jobs"]["kind"]["steps"]}
    assert steps["helm"]["with"]["version"] == ours
    assert steps["e2e"]["env"]["E2E_HELM"] == "helm"
    assert f"HELM_VERSION={ours}\n" in (ROOT / "e2e" / "run.sh").read_text()
    kind = steps["kind and kubectl"]["with"]
    assert kind["version"].startswith("v0.") and kind["kubectl_version"].startswith("v1.")
    config = yaml.safe_load((ROOT / "e2e" / "kind-config.yaml").read_text())
    (node,) = config["nodes"]
    assert re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}", node["image"])
    assert node["image"].split(":")[1].split("@")[0] == kind["kubectl_version"]


def renku_parent(tmp_path: Path, child: Path) -> Path:
    """A `renku` chart that depends on `child` by file://, with values for it."""
    parent = tmp_path / "renku"
    (parent / "templates").mkdir(parents=True)
    version = yaml.safe_load((child / "Chart.yaml").read_text())["version"]
    dependency = {"name": "renku-notebooks", "repository": f"file://{child}", "version": version}
    (parent / "Chart.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "v2", "name": "renku", "version": "1.0.0", "dependencies": [dependency]}
        )
    )
    return parent


def test_as_subchart_of_renku_with_z2jh(helm: str, z2jh_chart: Path, tmp_path: Path) -> None:
    """renku -> renku-notebooks -> jupyterhub, the real z2jh: every document strict and valid,
    no name twice, and the glue, the hook and the hub agree on the hub's Secret."""
    parent = renku_parent(tmp_path, z2jh_chart)
    (parent / "values.yaml").write_text(
        yaml.safe_dump({"global": {"gitlab": {"url": "https://gitlab.renku.example"}}})
    )
    run(helm, "dependency", "build", parent)
    docs = template(helm, parent, "renku")
    validate_all(docs)
    assert [n for n, count in Counter(names(docs)).items() if count > 1] == []
    hub_secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "hub")
    refs = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "hub"
        and e["valueFrom"]["secretKeyRef"]["key"].startswith("hub.services.")
    }
    assert refs == {"hub.services.notebooks.apiToken", "hub.services.notebooks-drain.apiToken"}
    assert refs <= set(hub_secret["data"])
    z2jh_values = yaml.safe_load(base64.b64decode(hub_secret["data"]["values.yaml"]))
    assert z2jh_values["global"]["gitlab"]["url"] == "https://gitlab.renku.example"
    assert CHART_WARNINGS_ENV in env_of(glue_pod(docs)["spec"]["containers"][0])


def test_with_z2jh_the_hook_reaches_the_hub_api(helm: str, z2jh_chart: Path) -> None:
    """z2jh's hub NetworkPolicy admits the pre-delete hook's pod to the hub's API (port 8081),
    and no policy isolates the hook's own egress."""
    docs = template(helm, z2jh_chart)
    job = hook_job(docs)
    labels = job["spec"]["template"]["metadata"]["labels"]
    hub = pod_labels(docs, "Deployment", "hub")
    assert allowed(docs, "Ingress", labels, hub, "http")  # the hub's port 8081, by its name
    assert not allowed(docs, "Ingress", {"app": "other"}, hub, "http")
    assert not any(
        selects(d["spec"]["podSelector"], labels)
        for d in docs
        if d["kind"] == "NetworkPolicy" and "Egress" in d["spec"].get("policyTypes", [])
    )
    assert env_of(job["spec"]["template"]["spec"]["containers"][0])["JUPYTERHUB_API_URL"] == (
        "http://hub:8081/hub/api"
    )
