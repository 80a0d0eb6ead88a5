"""The chart's pre-delete hook (`python -m glue.service.drain`) against a real hub: every
user server is stopped through the hub's saving stop, its work autosaved first; one whose
autosave fails keeps running and is reported, and the run fails so `helm uninstall` stops.

It runs with the token of the `notebooks-drain` hub service, registered as z2jh does and given
its role by glue.hub.kubesetup.register_drain, as the chart's hub does (testing/hub_config.py).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from testing.checks import wait_until
from testing.hub import Client, RunningHub
from testing.kernels import run_in_kernel
from testing.marks import starts_hub
from testing.repos import git, make_repo

SAVED, REFUSED = "group/saved", "group/refused"


@pytest.fixture(scope="module")
@starts_hub
def drained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("drain-repos")
    shas = {p: make_repo(root, p, versions=1)[0] for p in (SAVED, REFUSED)}
    config = {
        "images": {"default": "registry.example.org/renku/default:1"},
        "profiles": [{"name": "small", "cpu": 0.5, "memory": "1G"}],
        "provider": {"kind": "local", "root": str(root)},
        "launch": {"startTimeoutSeconds": 240},
    }
    token = secrets.token_hex(32)
    hub = RunningHub(
        tmp_path_factory.mktemp("drain-hub"),
        config,
        extra_env={"NOTEBOOKS_TEST_DRAIN_TOKEN": token},
    )
    try:
        yield {"hub": hub.start(), "shas": shas, "root": root, "token": token}
    finally:
        hub.stop()


def run_drain(hub: RunningHub, token: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JUPYTERHUB_API_URL": f"{hub.url}/hub/api", "JUPYTERHUB_API_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "glue.service.drain", "--save-seconds", "90",
         "--deadline-seconds", "150"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def launch_dirty(hub: RunningHub, user: str, project: str, sha: str) -> dict[str, Any]:
    client = Client(hub, user)
    path = f"{project}/{sha}"
    assert client.post(path).status_code in (201, 202)
    server = client.wait_running(path, timeout=250)
    assert run_in_kernel(hub, client, server, "open('work.txt', 'w').write('unsaved\\n')") == ""
    return server


def test_every_server_is_saved_and_stopped_and_one_that_cannot_be_saved_is_reported(drained):
    hub, shas, root = drained["hub"], drained["shas"], drained["root"]
    saved = launch_dirty(hub, "alice", SAVED, shas[SAVED])
    kept = launch_dirty(hub, "bob", REFUSED, shas[REFUSED])
    token = drained["token"]
    hook = root / f"{REFUSED}.git" / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho refused by the test >&2\nexit 1\n")
    hook.chmod(0o755)
    try:
        first = run_drain(hub, token)
    finally:
        hook.unlink()
    assert first.returncode == 1, first.stdout + first.stderr
    assert f"saved and stopped: alice/{saved['name']}" in first.stdout, first.stdout
    assert f"NOT SAVED, still running: bob/{kept['name']}" in first.stdout, first.stdout
    assert "1 server(s) saved and stopped, 1 could not be saved." in first.stdout
    assert token not in first.stdout + first.stderr
    # alice's work is on her autosave branch, her server gone; bob's runs on, his work there
    branch = f"notebooks/autosave/alice/{shas[SAVED]}"
    assert git(Path(root) / f"{SAVED}.git", "show", f"{branch}:work.txt") == "unsaved"
    assert saved["name"] not in hub.hub_servers("alice")
    assert hub.hub_servers("bob")[kept["name"]]["ready"] is True
    workspace = hub.workspaces / "bob" / kept["name"]
    assert (workspace / "work.txt").read_text() == "unsaved\n"

    # the push is accepted again: the next run saves and stops the rest, and succeeds
    second = run_drain(hub, token)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"saved and stopped: bob/{kept['name']}" in second.stdout
    branch = f"notebooks/autosave/bob/{shas[REFUSED]}"
    assert git(Path(root) / f"{REFUSED}.git", "show", f"{branch}:work.txt") == "unsaved"
    wait_until(lambda: kept["name"] not in hub.hub_servers("bob"), 60, "bob's server removed")
    # nothing runs: a run now has nothing to do
    third = run_drain(hub, token)
    assert third.returncode == 0 and "0 server(s) saved and stopped" in third.stdout


def test_a_paused_server_is_saved_and_removed(drained):
    """A paused server keeps its workspace (on Kubernetes a claim, which would outlive the
    release): the drain removes it too, its autosave first, and reports it."""
    hub, shas, root = drained["hub"], drained["shas"], drained["root"]
    paused = launch_dirty(hub, "carol", SAVED, shas[SAVED])
    path = f"{SAVED}/{shas[SAVED]}"
    response = Client(hub, "carol").request("PATCH", path, json={"state": "hibernated"})
    assert response.status_code == 200 and response.json()["status"] == "hibernated", response.text
    workspace = hub.workspaces / "carol" / paused["name"]
    result = run_drain(hub, drained["token"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"saved and removed, was paused: carol/{paused['name']}" in result.stdout
    assert "1 paused server(s) saved and removed, none left." in result.stdout, result.stdout
    branch = f"notebooks/autosave/carol/{shas[SAVED]}"
    assert git(Path(root) / f"{SAVED}.git", "show", f"{branch}:work.txt") == "unsaved"
    assert paused["name"] not in hub.hub_servers("carol")
    assert not workspace.exists()


def test_the_drain_service_has_its_scopes_and_no_other(drained):
    """Least privilege: find every user's servers and stop them; no admin, no tokens, no
    starts, no GitLab tokens (auth_state)."""
    hub = drained["hub"]
    headers = {"Authorization": f"token {drained['token']}"}
    me = requests.get(f"{hub.url}/hub/api/user", headers=headers, timeout=30)
    assert me.status_code == 200, me.text
    scopes = set(me.json()["scopes"])
    assert {"list:users", "read:servers", "delete:servers"} <= scopes, scopes
    assert not {"admin:users", "admin:servers", "tokens", "servers", "admin:auth_state"} & scopes


def test_a_token_without_the_drain_scopes_fails_the_run(drained):
    """A token that cannot list users fails the hook: an uninstall must not go on believing
    that nothing runs."""
    hub = drained["hub"]
    result = run_drain(hub, hub.token_for("mallory"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the hub failed" in result.stderr or "403" in result.stderr, result.stderr
