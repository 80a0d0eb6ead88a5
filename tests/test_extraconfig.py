"""The hub's `hub.extraConfig` from the chart's values.yaml, loaded by a real JupyterHub.

z2jh runs these snippets with `exec` inside its jupyterhub_config.py, after it
registered `hub.services` (with their generated tokens). Here a generated
config file does the same, with the notebooks config the chart's ConfigMap
renders, and JupyterHub loads it: a typo, a missing import or a wrong key
fails here instead of in a crash-looping hub pod.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from jupyterhub.app import JupyterHub

from glue.kube import CommitKubeSpawner
from tests.test_chart import CHART, find_helm, one, template, without_dependency

API_TOKEN = "token-that-z2jh-generated"
# what z2jh's jupyterhub_config.py has set when it reaches hub.extraConfig
Z2JH_PRELUDE = f"""
c = get_config()  # noqa
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.JupyterHub.services = [
    {{"name": "notebooks", "oauth_no_confirm": True, "api_token": {API_TOKEN!r}}},
]
c.JupyterHub.load_roles = []
"""
Z2JH_EXEC = """
for key, config_py in sorted(extra_config.items()):
    exec(config_py)
"""


def extra_config() -> dict[str, str]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return values["jupyterhub"]["hub"]["extraConfig"]


@pytest.fixture
def notebooks_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The config file the hub mounts, as the chart renders it; the snippet finds it by env."""
    chart = without_dependency(CHART, tmp_path / "chart")
    configmap = one(template(find_helm(), chart, "rel"), "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    monkeypatch.setenv("NOTEBOOKS_CONFIG", str(path))
    return path


def load_hub(tmp_path: Path, snippets: dict[str, str]) -> JupyterHub:
    config_file = tmp_path / "jupyterhub_config.py"
    config_file.write_text(f"{Z2JH_PRELUDE}\nextra_config = {snippets!r}\n{Z2JH_EXEC}")
    app = JupyterHub()
    app.raise_config_file_errors = True
    app.load_config_file(str(config_file))
    return app


def test_extra_config_configures_the_hub(notebooks_config: Path, tmp_path: Path) -> None:
    app = load_hub(tmp_path, extra_config())
    assert app.spawner_class is CommitKubeSpawner
    assert app.allow_named_servers is True
    assert app.named_server_limit_per_user == 5

    services = {s["name"]: s for s in app.services}
    rendered = yaml.safe_load(notebooks_config.read_text())["notebooks"]
    assert services["notebooks"] == {
        "name": "notebooks",
        "oauth_no_confirm": True,
        "api_token": API_TOKEN,
        "url": rendered["service"]["url"],
    }
    roles = {r["name"]: r for r in app.load_roles}
    assert roles["notebooks-service"]["services"] == ["notebooks"]
    assert "admin:auth_state" in roles["notebooks-service"]["scopes"]
    assert "access:services!service=notebooks" in roles["user"]["scopes"]

    # GitLab login comes from the notebooks config, not restated in the values
    assert app.authenticator_class.__name__ == "GitLabOAuthenticator"
    assert app.config.GitLabOAuthenticator.gitlab_url == rendered["provider"]["url"]
    assert app.config.Authenticator.enable_auth_state is True
    assert app.config.Authenticator.refresh_pre_spawn is True

    spawner_config: dict[str, Any] = app.config.CommitKubeSpawner.notebooks_config
    assert spawner_config["spawner"]["kind"] == "kubernetes"
    assert [p["name"] for p in spawner_config["profiles"]] == [
        p["name"] for p in rendered["profiles"]
    ]


@pytest.mark.parametrize(
    "typo",
    [
        ("glue.hubconfig.configure(", "glue.hubconfig.configur("),
        ("import os\n", ""),
        ("glue.config.load(", "glue.config.laod("),
    ],
)
def test_a_typo_fails_to_load(
    notebooks_config: Path, tmp_path: Path, typo: tuple[str, str]
) -> None:
    snippets = {key: text.replace(*typo) for key, text in extra_config().items()}
    assert snippets != extra_config()
    with pytest.raises(Exception):  # noqa: B017 (any error: the hub would not start)
        load_hub(tmp_path, snippets)
