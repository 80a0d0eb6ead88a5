"""The README's first command: the embedded default starts, launches the demo, and stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import requests

from tests.hubtools import CHECKOUT, free_port


def test_embedded_default_end_to_end(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "NOTEBOOKS_PORT": str(port),
        "NOTEBOOKS_GLUE_PORT": str(free_port()),
        "NOTEBOOKS_HUB_PORT": str(free_port()),
        "NOTEBOOKS_PROXY_API_PORT": str(free_port()),
        "NOTEBOOKS_STATE": str(tmp_path / "state"),
        "NOTEBOOKS_REPOS": str(tmp_path / "repos"),
        "NOTEBOOKS_DEMO_TOKEN": "demo-token-for-tests",
    }
    env.pop("GITLAB_URL", None)
    log = (tmp_path / "dev.log").open("w+")
    dev = subprocess.Popen(
        [sys.executable, "-m", "glue.dev"],
        cwd=CHECKOUT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        launch_url = wait_for_banner(tmp_path / "dev.log", dev)
        assert launch_url.startswith(f"http://127.0.0.1:{port}/services/notebooks/demo/")
        headers = {"Authorization": "token demo-token-for-tests"}
        api_url = launch_url.rsplit("/", 1)[0]  # without the notebook
        response = requests.post(api_url, headers=headers, timeout=60)
        assert response.status_code in (201, 202), response.text
        deadline = time.monotonic() + 60
        while (model := requests.get(api_url, headers=headers, timeout=30).json())[
            "status"
        ] != "running":
            assert time.monotonic() < deadline, model
            time.sleep(0.3)
        readme = requests.get(
            f"http://127.0.0.1:{port}{model['url']}api/contents/README.md",
            headers=headers,
            timeout=30,
        )
        assert "Version 1." in readme.json()["content"]
        server_pids = singleuser_pids(tmp_path)
        assert server_pids, "no single-user server process found"
    finally:
        dev.send_signal(signal.SIGINT)  # what Ctrl-C sends
        dev.wait(60)
        log.close()
    assert dev.returncode == 0, (tmp_path / "dev.log").read_text()[-2000:]
    time.sleep(0.5)
    assert singleuser_pids(tmp_path) == [], "Ctrl-C left a single-user server running"
    assert not port_open(port), "Ctrl-C left the proxy running"


def wait_for_banner(log_path, dev: subprocess.Popen) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = log_path.read_text()
        match = re.search(r"(http://127\.0\.0\.1:\d+/services/notebooks/\S+\.ipynb)", text)
        if match and "API token for user demo:  demo-token-for-tests" in text:
            return match.group(1)
        assert dev.poll() is None, text[-3000:]
        time.sleep(0.3)
    raise AssertionError("no banner:\n" + log_path.read_text()[-3000:])


def singleuser_pids(tmp_path) -> list[int]:
    """Single-user servers running in a workspace under this test's state directory."""
    pids = []
    for proc in os.listdir("/proc"):
        if not proc.isdigit():
            continue
        try:
            with open(f"/proc/{proc}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace")
            cwd = os.readlink(f"/proc/{proc}/cwd")
        except OSError:
            continue
        if "jupyterhub.singleuser" in args and cwd.startswith(str(tmp_path)):
            pids.append(int(proc))
    return pids


def port_open(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    except requests.ConnectionError:
        return False
    return True
