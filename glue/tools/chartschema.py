"""Generate the Helm chart's values.schema.json from the notebooks config schema.

The config schema (schema/notebooks.schema.yaml) stays the only source: Helm
validates `jupyterhub.custom.notebooks` in the chart's values with the very rules the glue and
the hub apply at start-up, so a bad config fails at `helm install` with the
schema's message instead of as a crash-looping pod. The chart's own values
(the glue's Deployment and what surrounds it) are described here, closed to
unknown keys; the rest of `jupyterhub` is left to z2jh's own schema.

    python -m glue.tools.chartschema           # write the file
    python -m glue.tools.chartschema --check   # fail if the committed file is stale (CI)
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from glue.core.config import schema, schema_path
from glue.tools import generated

CHART_SCHEMA = (
    Path(__file__).resolve().parents[2]
    / "helm-chart"
    / "renku-notebooks"
    / ("values.schema.json")
)
# keys that only make sense at a document's root: inside `properties` they would
# reset the base URI or the dialect of the embedded part
ROOT_ONLY = ("$schema", "$id")


# Kubernetes' own structures are checked by the API server; here only their JSON type
K8S_OBJECT: dict[str, Any] = {"type": "object"}
K8S_LIST: dict[str, Any] = {"type": "array", "items": {"type": "object"}}
STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
NAME: dict[str, Any] = {"type": "string", "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"}


def closed(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An object with exactly these keys (a typo fails `helm install`)."""
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


# the chart's own values (the glue's Deployment and what surrounds it), as values.yaml lists them
CHART_VALUES: dict[str, Any] = {
    "nameOverride": {"type": "string"},
    "fullnameOverride": {"type": "string"},
    "replicaCount": {"type": "integer", "minimum": 0},
    "secrets": closed({"cookieSecret": {"type": "string"}, "existingSecret": NAME}),
    "global": {"type": "object", "description": "a parent chart's globals"},
    "serviceAccount": closed(
        {"create": {"type": "boolean"}, "name": NAME, "annotations": STRING_MAP}
    ),
    "service": closed(
        {
            "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
            "annotations": STRING_MAP,
        }
    ),
    "resources": K8S_OBJECT,
    "podAnnotations": STRING_MAP,
    "podLabels": STRING_MAP,
    "podSecurityContext": K8S_OBJECT,
    "containerSecurityContext": K8S_OBJECT,
    "nodeSelector": STRING_MAP,
    "tolerations": K8S_LIST,
    "affinity": K8S_OBJECT,
    "priorityClassName": {"type": "string"},
    "topologySpreadConstraints": K8S_LIST,
    "extraEnv": K8S_LIST,
    "extraVolumes": K8S_LIST,
    "extraVolumeMounts": K8S_LIST,
    "podDisruptionBudget": closed(
        {
            "enabled": {"type": "boolean"},
            "minAvailable": {"type": ["integer", "string"]},
        }
    ),
    "metrics": closed(
        {
            "scrapers": K8S_LIST,
            "podAnnotations": {"type": "boolean"},
            "serviceMonitor": closed(
                {
                    "enabled": {"type": "boolean"},
                    "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                    "labels": STRING_MAP,
                    "authorization": K8S_OBJECT,
                }
            ),
        }
    ),
    "tests": closed({"image": {"type": "string", "minLength": 1}}),
    "networkPolicy": closed(
        {
            "enabled": {"type": "boolean"},
            "ingress": K8S_LIST,
            "egress": K8S_LIST,
            "gitlab": K8S_LIST,
            "kubernetesApi": K8S_LIST,
            "egressAllowRules": closed(
                {
                    "nonPrivateIPs": {"type": "boolean"},
                    "privateIPs": {"type": "boolean"},
                    "dnsPortsCloudMetadataServer": {"type": "boolean"},
                    "dnsPortsKubeSystemNamespace": {"type": "boolean"},
                    "dnsPortsPrivateIPs": {"type": "boolean"},
                }
            ),
        }
    ),
    "ingress": closed(
        {
            "enabled": {"type": "boolean"},
            "className": {"type": "string"},
            "annotations": STRING_MAP,
            "hosts": {"type": "array", "items": {"type": "string"}},
            "tls": K8S_LIST,
            "routeHub": {"type": "boolean"},
        }
    ),
    "httpRoute": closed(
        {
            "enabled": {"type": "boolean"},
            "annotations": STRING_MAP,
            "parentRefs": K8S_LIST,
            "hostnames": {"type": "array", "items": {"type": "string"}},
            "routeHub": {"type": "boolean"},
        }
    ),
    "uninstallHook": closed(
        {
            "enabled": {"type": "boolean"},
            "saveTimeoutSeconds": {"type": "integer", "minimum": 1},
            "activeDeadlineSeconds": {"type": "integer", "minimum": 30},
            "resources": K8S_OBJECT,
        }
    ),
    "clonePuller": closed({"enabled": {"type": "boolean"}, "resources": K8S_OBJECT}),
}


def notebooks_schema() -> dict[str, Any]:
    """The config schema as the chart checks it: provider.url may be left out, the chart then
    fills it (a parent chart's global.gitlab.url, else gitlab.com)."""
    notebooks = copy.deepcopy({k: v for k, v in schema().items() if k not in ROOT_ONLY})
    for rule in notebooks["properties"]["provider"].get("allOf", []):
        required = rule.get("then", {}).get("required", [])
        if "url" in required:
            required.remove("url")
            if not required:
                del rule["then"]["required"]
    return notebooks


def chart_schema() -> dict[str, Any]:
    """The values schema: the config schema at `jupyterhub.custom.notebooks` (z2jh passes
    `custom` into its hub Secret, whose checksum restarts the hub), the chart's own values,
    and the rest of `jupyterhub` left to z2jh's own schema."""
    return {
        "$schema": schema()["$schema"],
        "title": "renku-notebooks Helm chart values",
        "description": (
            f"Generated by `python -m glue.tools.chartschema` from {schema_path().name} and "
            "glue/tools/chartschema.py; do not edit."
        ),
        "type": "object",
        "required": ["jupyterhub"],
        "additionalProperties": False,
        "properties": {
            **CHART_VALUES,
            "jupyterhub": {
                "type": "object",
                "required": ["custom"],
                "properties": {
                    "custom": {
                        "type": "object",
                        "required": ["notebooks"],
                        "properties": {"notebooks": notebooks_schema()},
                    }
                },
            },
        },
    }


def render() -> str:
    return json.dumps(chart_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    return generated.main(argv, render, CHART_SCHEMA, "glue.tools.chartschema", __doc__)


if __name__ == "__main__":
    sys.exit(main())
