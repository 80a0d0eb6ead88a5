"""The chart's entry point: the hub's `hub.extraConfig` configures JupyterHub from z2jh's values.

z2jh's hub Secret carries the notebooks config (`custom.notebooks`); this turns it
into `glue.hub.setup.configure` with what only the cluster knows: the glue's
in-cluster URL (named after z2jh's hub) and the pod names of this hub.
"""

from __future__ import annotations

from typing import Any

from kubespawner.slugs import safe_slug

from glue.core.config import validate
from glue.core.contracts import DRAIN_SUFFIX
from glue.hub.setup import add_by_name, configure

K8S_NAME_MAX = 63
DEFAULT_GITLAB_URL = "https://gitlab.com"
# KubeSpawner keeps {user_server} to 48 characters; the hub's part of a pod name gets the rest
POD_PREFIX_MAX = K8S_NAME_MAX - 48 - 1
# what the chart's pre-delete hook (glue.service.drain) needs: find every user's servers and
# stop them through the saving DELETE; nothing else (no users:..., no tokens, no admin)
DRAIN_SCOPES = ["list:users", "read:servers", "delete:servers"]


def service_url(hub_name: str, service_name: str) -> str:
    """The glue's in-cluster URL: its Service is named after z2jh's hub and the hub service.

    The chart names the Service by the same rule (`renku-notebooks.serviceName`),
    so the hub finds it from z2jh's own names, without a value written twice.
    """
    return f"http://{f'{hub_name}-{service_name}'[:K8S_NAME_MAX].rstrip('-')}"


def configure_hub(
    c: Any, notebooks: dict[str, Any] | None, hub_name: str, gitlab_url: str | None = None
) -> None:
    """The chart's hub.extraConfig: the notebooks config from z2jh's hub Secret (`custom`).

    It lives there, not in a mounted ConfigMap, because z2jh's hub pod carries a
    checksum of that Secret: an upgrade that changes the config restarts the hub.
    `gitlab_url` (a parent chart's `global.gitlab.url`) fills an unset provider.url,
    else gitlab.com, as the chart does for the glue (`renku-notebooks.values`).
    """
    data = dict(notebooks or {})
    provider = dict(data.get("provider") or {})
    if provider.get("kind", "gitlab") == "gitlab" and not provider.get("url"):
        provider["url"] = gitlab_url or DEFAULT_GITLAB_URL
        data["provider"] = provider
    service = dict(data.get("service") or {})
    service["url"] = service_url(hub_name, service.get("name", "notebooks"))
    data["service"] = service
    config = validate(data, "jupyterhub.custom.notebooks")
    configure(c, config)
    register_drain(c, config["service"]["name"])
    if "pod_name_template" not in c.KubeSpawner:  # z2jh's singleuser.podNameTemplate wins
        c.KubeSpawner.pod_name_template = pod_name_template(hub_name)


def register_drain(c: Any, service_name: str) -> None:
    """The role of the pre-delete hook's hub service (`<service name>-drain`), when z2jh
    registered that service (its key in hub.services, where z2jh makes its token); a role
    for a service the hub lacks would stop the hub."""
    name = f"{service_name}{DRAIN_SUFFIX}"
    if any(s.get("name") == name for s in c.JupyterHub.get("services", [])):
        role = {"name": name, "scopes": list(DRAIN_SCOPES), "services": [name]}
        c.JupyterHub.load_roles = add_by_name(list(c.JupyterHub.get("load_roles", [])), role)


def pod_name_template(hub_name: str) -> str:
    """User pods named after their hub, so two hubs in one namespace never share a pod name
    (nor the `<pod>-git-token`, `<pod>-autosave-key` and `<pod>-registry` Secrets named
    after it).

    KubeSpawner's default, `jupyter-{user_server}`, is the same for every hub. The hub's
    name is shortened (with a hash) so the name stays within 63 characters: KubeSpawner
    keeps `{user_server}` to 48.
    """
    return f"{safe_slug(hub_name, max_length=POD_PREFIX_MAX)}-{{user_server}}"
