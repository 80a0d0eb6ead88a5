"""The hub's `hub.extraConfig` from the chart's values.yaml, loaded by a real JupyterHub.

z2jh runs these snippets with `exec` inside its jupyterhub_config.py, after it
registered `hub.services` (with their generated tokens) and set KubeSpawner's
traits from `singleuser`. Here a generated config file does the same, with a
`z2jh` module that answers `get_config` from the chart's `jupyterhub` values
(what z2jh writes into its hub Secret's values.yaml) and `get_name` as z2jh's
ConfigMap does, and JupyterHub loads it: a typo, a missing import or a wrong
key fails here instead of in a crash-looping hub pod.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from jupyterhub.app import JupyterHub
from kubespawner.slugs import is_valid_object_name

from glue.core import trust
from glue.hub.kubespawner import CommitKubeSpawner
from testing.chart import CHART

API_TOKEN = "token-that-z2jh-generated"
# what z2jh's jupyterhub_config.py has set when it reaches hub.extraConfig
Z2JH_PRELUDE = f"""
c = get_config()  # noqa
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.JupyterHub.services = [
    {{"name": "notebooks", "oauth_no_confirm": True, "api_token": {API_TOKEN!r}}},
]
c.JupyterHub.load_roles = []
c.KubeSpawner.start_timeout = 300  # z2jh: singleuser.startTimeout
"""
Z2JH_EXEC = """
for key, config_py in sorted(extra_config.items()):
    exec(config_py)
"""


# z2jh's accessors, reading the hub Secret's values.yaml and naming the hub as z2jh 4.4.0 does
Z2JH_MODULE = """
import yaml

VALUES = yaml.safe_load(open(__file__.replace("z2jh.py", "values.yaml")))
HUB = open(__file__.replace("z2jh.py", "hub-name")).read()


def get_config(key, default=None):
    value = VALUES
    for level in key.split("."):
        if not isinstance(value, dict) or level not in value:
            return default
        value = value[level]
    return value


def get_name(name):
    return HUB if name == "hub" else name
"""


def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def extra_config() -> dict[str, str]:
    return chart_values()["jupyterhub"]["hub"]["extraConfig"]


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def hub_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """z2jh's hub Secret values.yaml (the chart's `jupyterhub` values) and its `z2jh` module."""
    module_dir = tmp_path / "z2jh"
    module_dir.mkdir()
    (module_dir / "z2jh.py").write_text(Z2JH_MODULE)
    (module_dir / "hub-name").write_text("hub")
    path = module_dir / "values.yaml"
    path.write_text(yaml.safe_dump(chart_values()["jupyterhub"]))
    monkeypatch.syspath_prepend(str(module_dir))
    monkeypatch.delitem(sys.modules, "z2jh", raising=False)
    return path


def load_hub(tmp_path: Path, snippets: dict[str, str]) -> JupyterHub:
    config_file = tmp_path / "jupyterhub_config.py"
    config_file.write_text(f"{Z2JH_PRELUDE}\nextra_config = {snippets!r}\n{Z2JH_EXEC}")
    app = JupyterHub()
    app.raise_config_file_errors = True
    app.load_config_file(str(config_file))
    return app


def test_extra_config_configures_the_hub(hub_values: Path, tmp_path: Path) -> None:
    app = load_hub(tmp_path, extra_config())
    assert app.spawner_class is CommitKubeSpawner
    assert app.allow_named_servers is True
    assert app.named_server_limit_per_user == rendered_limit(hub_values)

    services = {s["name"]: s for s in app.services}
    rendered = yaml.safe_load(hub_values.read_text())["custom"]["notebooks"]
    assert services["notebooks"] == {
        "name": "notebooks",
        "oauth_no_confirm": True,
        "api_token": API_TOKEN,
        "url": "http://hub-notebooks",  # the chart's Service name for the glue
    }
    roles = {r["name"]: r for r in app.load_roles}
    assert roles["notebooks-service"]["services"] == ["notebooks"]
    assert "admin:auth_state" in roles["notebooks-service"]["scopes"]
    assert "access:services!service=notebooks" in roles["user"]["scopes"]

    # GitLab login comes from the notebooks config, not restated in the values
    assert app.authenticator_class.__name__ == "GitLabOAuthenticator"
    assert "url" not in rendered["provider"]  # the chart's default: gitlab.com, as for the glue
    assert app.config.GitLabOAuthenticator.gitlab_url == "https://gitlab.com"
    assert app.config.Authenticator.enable_auth_state is True
    assert app.config.Authenticator.refresh_pre_spawn is True

    # culling from the notebooks config: jupyterhub-idle-culler as a hub service (z2jh's is off)
    assert chart_values()["jupyterhub"]["cull"]["enabled"] is False
    assert "jupyterhub-idle-culler" not in services
    culling = app.config.CommitKubeSpawner.notebooks_config["culling"]
    command = services["notebooks-culler"]["command"]
    assert command[1:3] == ["-m", "glue.hub.culler"]
    assert set(command[3:]) == {
        f"--timeout={culling['idleSeconds']}",
        f"--cull-every={culling['everySeconds']}",
        "--remove-named-servers",
    }
    assert roles["notebooks-culler"] == {
        "name": "notebooks-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["notebooks-culler"],
    }
    # the sidecars' fresh tokens: keys from z2jh's service token, the glue's in-cluster URL
    assert app.config.CommitKubeSpawner.service_api_token == API_TOKEN
    assert (
        app.config.CommitKubeSpawner.git_token_endpoint
        == "http://hub-notebooks/services/notebooks/-/git-token"
    )

    spawner_config: dict[str, Any] = app.config.CommitKubeSpawner.notebooks_config
    assert spawner_config["spawner"]["kind"] == "kubernetes"
    assert [p["name"] for p in spawner_config["profiles"]] == [
        p["name"] for p in rendered["profiles"]
    ]


@pytest.mark.parametrize(
    "typo",
    [
        ("glue.hub.kubesetup.configure_hub(", "glue.hub.kubesetup.configure_hb("),
        ("import glue.hub.kubesetup\n", ""),
        ('get_config("custom.notebooks")', 'get_config("custom.notebook")'),
    ],
)
def test_a_typo_fails_to_load(hub_values: Path, tmp_path: Path, typo: tuple[str, str]) -> None:
    snippets = {key: text.replace(*typo) for key, text in extra_config().items()}
    assert snippets != extra_config()
    with pytest.raises(Exception):  # noqa: B017 (any error: the hub would not start)
        load_hub(tmp_path, snippets)


async def test_start_timeout_wins_over_z2jh(
    hub_values: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """z2jh sets KubeSpawner.start_timeout; the notebooks config's must still apply."""
    values = yaml.safe_load(hub_values.read_text())
    hub_values.write_text(
        yaml.safe_dump(
            merge(values, {"custom": {"notebooks": {"launch": {"startTimeoutSeconds": 123}}}})
        )
    )
    app = load_hub(tmp_path, extra_config())
    monkeypatch.setattr("kubespawner.spawner.load_config", lambda **kwargs: None)
    spawner = CommitKubeSpawner(
        config=app.config, _mock=True, user=SimpleNamespace(name="alice", id=1, url="/user/alice/")
    )
    assert spawner.start_timeout == 123
    assert spawner.http_timeout == 123


def test_every_spawner_setting_is_a_trait(hub_values: Path, tmp_path: Path) -> None:
    """traitlets drops a setting that names no trait of the class, with only a warning: the hub
    of a real cluster logged "Config option `container_name` not recognized by
    `CommitKubeSpawner`" at every spawner it made, and the setting did nothing."""
    app = load_hub(tmp_path, extra_config())
    traits = set(CommitKubeSpawner.class_trait_names(config=True))
    for section in ("CommitKubeSpawner", "KubeSpawner", "Spawner"):
        unknown = set(app.config.get(section, {})) - traits
        assert not unknown, (section, unknown)


def test_a_config_change_is_in_the_hub_secret_values(hub_values: Path, tmp_path: Path) -> None:
    """The hub takes its notebooks config from z2jh's hub Secret (whose checksum rolls the
    hub), not from a mounted file: a profile added by an upgrade reaches the spawner."""
    values = yaml.safe_load(hub_values.read_text())
    bigger = {"name": "bigger", "cpu": 1, "memory": "2Gi"}
    profiles = [*values["custom"]["notebooks"]["profiles"], bigger]
    hub_values.write_text(
        yaml.safe_dump(merge(values, {"custom": {"notebooks": {"profiles": profiles}}}))
    )
    app = load_hub(tmp_path, extra_config())
    names = [p["name"] for p in app.config.CommitKubeSpawner.notebooks_config["profiles"]]
    assert names == ["small", "bigger"]
    assert "extraVolumes" not in chart_values()["jupyterhub"]["hub"]


def rendered_limit(hub_values: Path) -> int:
    """The hub's limit of named servers: running ones plus paused ones (glue.hub.setup)."""
    from glue.core.config import schema

    launch = yaml.safe_load(hub_values.read_text())["custom"]["notebooks"]["launch"]
    paused = schema()["properties"]["launch"]["properties"]["hibernatedPerUser"]["default"]
    return launch["serversPerUser"] + launch.get("hibernatedPerUser", paused)


@pytest.mark.parametrize("second_hub", ["second-hub", "a-long-release-name-jupyterhub-hub"])
async def test_two_hubs_in_one_namespace_name_pods_apart(
    hub_values: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second_hub: str
) -> None:
    """The same user's same server under two hubs (two releases, one namespace): different
    pod names, so different `<pod>-git-token` and `<pod>-registry` Secrets, each a valid name."""
    monkeypatch.setattr("kubespawner.spawner.load_config", lambda **kwargs: None)
    user = SimpleNamespace(name="alice", id=1, url="/user/alice/")
    server = SimpleNamespace(name="a-very-long-project-name-0123456789ab", server=None)
    spawners = []
    for hub in ("hub", second_hub):
        (hub_values.parent / "hub-name").write_text(hub)
        sys.modules.pop("z2jh", None)
        app = load_hub(tmp_path, extra_config())
        spawners.append(
            CommitKubeSpawner(config=app.config, _mock=True, user=user, orm_spawner=server)
        )
    first, second = spawners
    assert first.pod_name != second.pod_name
    assert first.token_secret_name != second.token_secret_name
    assert first.registry_secret_name != second.registry_secret_name
    for spawner in spawners:
        assert len(spawner.pod_name) <= 63 and is_valid_object_name(spawner.pod_name)


def test_an_operators_pod_name_template_wins(hub_values: Path, tmp_path: Path) -> None:
    snippets = {"0-operator": 'c.KubeSpawner.pod_name_template = "nb-{user_server}"'}
    app = load_hub(tmp_path, {**snippets, **extra_config()})
    assert app.config.KubeSpawner.pod_name_template == "nb-{user_server}"


@pytest.mark.parametrize(
    "global_values, own_url, expected",
    [
        ({"gitlab": {"url": "https://gitlab.renku.example"}}, None, "https://gitlab.renku.example"),
        (
            {"gitlab": {"url": "https://gitlab.renku.example"}},
            "https://git.example.org",
            "https://git.example.org",
        ),
        ({}, None, "https://gitlab.com"),
    ],
)
def test_the_hub_takes_renku_globals_as_the_glue_does(
    hub_values: Path,
    tmp_path: Path,
    global_values: dict[str, Any],
    own_url: str | None,
    expected: str,
) -> None:
    """A parent chart's global.gitlab.url fills an unset provider.url on the hub (from z2jh's
    Secret, where Helm copies the globals) exactly as the chart's template does for the glue."""
    from testing.chart import (
        BUILT_TAG,
        PLACEHOLDER_TAG,
        find_helm,
        template,
        values_file,
        without_dependency,
    )

    values = chart_values()
    if own_url:
        values["jupyterhub"]["custom"]["notebooks"]["provider"]["url"] = own_url
    hub_values.write_text(yaml.safe_dump({**values["jupyterhub"], "global": global_values}))
    app = load_hub(tmp_path, extra_config())
    assert app.config.GitLabOAuthenticator.gitlab_url == expected

    chart = without_dependency(CHART, tmp_path / "chart")
    overrides = {"global": global_values, "jupyterhub": values["jupyterhub"]}
    # the values as a build leaves them (the chart refuses chartpress's placeholders)
    overrides = yaml.safe_load(yaml.safe_dump(overrides).replace(PLACEHOLDER_TAG, BUILT_TAG))
    docs = template(find_helm(), chart, "rel", "-f", values_file(tmp_path, overrides))
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    glue = yaml.safe_load(configmap["data"]["config.yaml"])["notebooks"]
    assert glue["provider"]["url"] == expected


@pytest.mark.parametrize(
    ("culling", "flags"),
    [
        ({"idleSeconds": 0, "maxAgeSeconds": 0}, None),
        (
            {"idleSeconds": 0, "maxAgeSeconds": 7200, "everySeconds": 60},
            {"--timeout=7200", "--max-age=7200", "--cull-every=60", "--remove-named-servers"},
        ),
        (
            {"idleSeconds": 900, "maxAgeSeconds": 86400},
            {"--timeout=900", "--max-age=86400", "--cull-every=300", "--remove-named-servers"},
        ),
    ],
)
def test_culling_settings_reach_the_culler(
    hub_values: Path, tmp_path: Path, culling: dict[str, int], flags: set[str] | None
) -> None:
    """idleSeconds 0 never culls for idleness; with no maximum age either there is no culler."""
    values = yaml.safe_load(hub_values.read_text())
    values["custom"]["notebooks"]["culling"] = culling
    hub_values.write_text(yaml.safe_dump(values))
    app = load_hub(tmp_path, extra_config())
    services = {s["name"]: s for s in app.services}
    if flags is None:
        assert "notebooks-culler" not in services
        assert "notebooks-culler" not in {r["name"] for r in app.load_roles}
    else:
        assert set(services["notebooks-culler"]["command"][3:]) == flags


def test_a_private_ca_reaches_the_hubs_oauth_and_spawner(hub_values: Path, tmp_path: Path) -> None:
    """provider.caBundle in the chart values reaches the hub through z2jh's Secret: its OAuth
    client gets a combined file (system store + CA), its spawner the text for the pods."""
    pem = (Path(__file__).parent / "private-ca.crt").read_text()
    values = yaml.safe_load(hub_values.read_text())
    hub_values.write_text(
        yaml.safe_dump(merge(values, {"custom": {"notebooks": {"provider": {"caBundle": pem}}}}))
    )
    app = load_hub(tmp_path, extra_config())
    ca_file = Path(app.config.OAuthenticator.http_request_kwargs["ca_certs"])
    assert ca_file.read_text() == trust.combined(pem)
    assert app.config.CommitKubeSpawner.notebooks_config["provider"]["caBundle"] == pem


def test_users_get_domains_of_their_own_where_the_operator_gives_one(
    hub_values: Path, tmp_path: Path
) -> None:
    """z2jh's hub.config.JupyterHub.subdomain_host (set before extraConfig runs): each user's
    servers on `<user>.<domain>`, the glue and the hub on `<domain>`, and `__Host-` login
    cookies, which no page on a user's domain can toss onto the hub's."""
    subdomains = {"00-z2jh-hub-config": 'c.JupyterHub.subdomain_host = "https://nb.example.org"'}
    app = load_hub(tmp_path, {**subdomains, **extra_config()})
    assert app.subdomain_hook("alice", "nb.example.org", "user") == "alice.nb.example.org"
    assert app.subdomain_hook("notebooks", "nb.example.org", "service") == "nb.example.org"
    assert app.cookie_host_prefix_enabled is True
    shared = load_hub(tmp_path, extra_config())
    assert shared.subdomain_host == "" and shared.cookie_host_prefix_enabled is False


def test_the_pre_delete_hooks_service_gets_exactly_its_role(
    hub_values: Path, tmp_path: Path
) -> None:
    """z2jh registers every key of hub.services (the chart lists `notebooks-drain`, whose
    token the pre-delete hook reads); the extraConfig gives it list:users, read:servers and
    delete:servers, nothing more. Without that service, no role (a role for a missing
    service would stop the hub)."""
    services = chart_values()["jupyterhub"]["hub"]["services"]
    assert "notebooks-drain" in services
    prelude = Z2JH_PRELUDE.replace(
        "c.JupyterHub.load_roles = []",
        'c.JupyterHub.services.append({"name": "notebooks-drain", "api_token": "t"})\n'
        "c.JupyterHub.load_roles = []",
    )
    config_file = tmp_path / "jupyterhub_config.py"
    config_file.write_text(f"{prelude}\nextra_config = {extra_config()!r}\n{Z2JH_EXEC}")
    app = JupyterHub()
    app.raise_config_file_errors = True
    app.load_config_file(str(config_file))
    roles = {r["name"]: r for r in app.load_roles}
    assert roles["notebooks-drain"] == {
        "name": "notebooks-drain",
        "scopes": ["list:users", "read:servers", "delete:servers"],
        "services": ["notebooks-drain"],
    }
    without = load_hub(tmp_path, extra_config())
    assert "notebooks-drain" not in {r["name"] for r in without.load_roles}
