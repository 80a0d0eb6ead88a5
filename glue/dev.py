"""The embedded default: hub, proxy and glue on one machine, started by one command (`make dev`).

It creates a demo project on first run, writes the effective config, starts
a real JupyterHub (which starts the proxy and the glue) on 127.0.0.1, waits
until a launch URL answers, prints it with an API token for user `demo`, and
stops everything it started, servers included, on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from .config import load, validate

CHECKOUT = Path(__file__).resolve().parent.parent
DEMO_PROJECT = ("demo", "hello-notebooks")
DEMO_NOTEBOOK = "hello.ipynb"
READY_TIMEOUT = 90


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Renku demo",
        "GIT_AUTHOR_EMAIL": "demo@example.org",
        "GIT_COMMITTER_NAME": "Renku demo",
        "GIT_COMMITTER_EMAIL": "demo@example.org",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def notebook(*cells: str) -> str:
    """A minimal nbformat 4 notebook with code cells."""
    return json.dumps(
        {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "metadata": {},
                    "outputs": [],
                    "source": source,
                }
                for source in cells
            ],
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        },
        indent=1,
    )


def make_demo_project(root: Path) -> list[str]:
    """A bare repository with two commits; returns their shas, oldest first."""
    bare = root / DEMO_PROJECT[0] / f"{DEMO_PROJECT[1]}.git"
    if not bare.is_dir():
        bare.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            _git(work, "init", "-q", "-b", "main")
            (work / DEMO_NOTEBOOK).write_text(notebook("print('Hello from the first commit')"))
            (work / "README.md").write_text("# Hello notebooks\n\nVersion 1.\n")
            _git(work, "add", ".")
            _git(work, "commit", "-q", "-m", "First version")
            (work / "README.md").write_text("# Hello notebooks\n\nVersion 2.\n")
            _git(work, "commit", "-q", "-am", "Second version")
            _git(root, "clone", "-q", "--bare", str(work), str(bare))
    return _git(bare, "rev-list", "--reverse", "main").splitlines()


def gitlab_provider() -> dict[str, str]:
    """GitLab instead of local repositories, when GITLAB_URL and the OAuth client are set."""
    missing = [v for v in ("GITLAB_CLIENT_ID", "GITLAB_CLIENT_SECRET") if not os.environ.get(v)]
    if missing:
        raise SystemExit(
            f"GITLAB_URL is set but {' and '.join(missing)} not: register an OAuth application "
            "in GitLab (callback <hub-url>/hub/oauth_callback) and set both."
        )
    return {"kind": "gitlab", "url": os.environ["GITLAB_URL"].rstrip("/")}


def write_config(state: Path, repos: Path) -> Path:
    """The effective config: the embedded values with this machine's directories filled in."""
    config = yaml.safe_load((CHECKOUT / "values" / "embedded.yaml").read_text())
    config["provider"]["root"] = str(repos)
    if os.environ.get("GITLAB_URL"):
        config["provider"] = gitlab_provider()
    config.setdefault("spawner", {})["workspaceRoot"] = str(state / "workspaces")
    glue_port = os.environ.get("NOTEBOOKS_GLUE_PORT", "8090")
    config["service"]["url"] = f"http://127.0.0.1:{glue_port}"
    validate(config, "values/embedded.yaml")
    path = state / "notebooks.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    load(path)
    return path


def wait_ready(url: str, hub: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if hub.poll() is not None:
            raise SystemExit(f"JupyterHub exited with status {hub.returncode}; see the log above.")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"The hub did not become ready within {READY_TIMEOUT} s.")


def stop(hub: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets the hub stop its servers, the proxy and the glue; then make sure."""
    if hub.poll() is None:
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(hub.pid, signal.SIGKILL)
            hub.wait()


def banner(base: str, shas: list[str], token: str) -> str:
    ns, project = DEMO_PROJECT
    launch = f"{base}/services/notebooks/{ns}/{project}/{shas[0]}/{DEMO_NOTEBOOK}"
    api = f"{base}/services/notebooks"
    return f"""
renku-notebooks is running (Ctrl-C stops everything).

  Open in a browser (log in as any name, e.g. demo, any password):
    {launch}

  API token for user demo:  {token}
    curl -H "Authorization: token {token}" {api}/user
    curl -X POST -H "Authorization: token {token}" {api}/{ns}/{project}/{shas[0]}
    curl -H "Authorization: token {token}" {api}/
    curl -X DELETE -H "Authorization: token {token}" {api}/{ns}/{project}/{shas[0]}
"""


def main() -> int:
    state = Path(os.environ.get("NOTEBOOKS_STATE", CHECKOUT / ".dev" / "state")).resolve()
    repos = Path(os.environ.get("NOTEBOOKS_REPOS", CHECKOUT / ".dev" / "repos")).resolve()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    shas = make_demo_project(repos)
    config_path = write_config(state, repos)
    port = os.environ.get("NOTEBOOKS_PORT", "8000")
    token = os.environ.get("NOTEBOOKS_DEMO_TOKEN") or secrets.token_hex(20)
    env = {
        **os.environ,
        "NOTEBOOKS_CONFIG": str(config_path),
        "NOTEBOOKS_STATE": str(state),
        "NOTEBOOKS_PORT": port,
    }
    if not os.environ.get("GITLAB_URL"):
        env["NOTEBOOKS_DEMO_TOKEN"] = token  # the demo user exists only with local projects
    hub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterhub",
            "-f",
            str(CHECKOUT / "values" / "jupyterhub_config.py"),
        ],
        cwd=state,
        env=env,
        start_new_session=True,
    )
    # SIGTERM takes the Ctrl-C path, so the hub is stopped once, from the main flow
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/services/notebooks/health", hub)
        if os.environ.get("GITLAB_URL"):
            print(
                f"\nrenku-notebooks is running with GitLab login at {base}/hub/login "
                f"(launch links: {base}/services/notebooks/<namespace>/<project>/<sha>); "
                "Ctrl-C stops everything.",
                flush=True,
            )
        else:
            print(banner(base, shas, token), flush=True)
        hub.wait()
    except KeyboardInterrupt:
        print("\nStopping hub, proxy, glue and servers...", flush=True)
    finally:
        stop(hub)
    return 0 if hub.returncode in (0, -signal.SIGTERM) else hub.returncode


if __name__ == "__main__":
    sys.exit(main())
