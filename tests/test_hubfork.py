"""The tests' hubs are forked from one Python that has imported JupyterHub (testing.hubfork).
What a test can see of a forked hub must be what `python -m jupyterhub` would have given it:
its session, working directory, log, children's environment and exit status. Each check runs
against a forked hub and an exec'd one, side by side."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

from testing import hubfork
from testing.hub import RunningHub

pytestmark = pytest.mark.hub

CONFIG = {
    "images": {"default": "registry.example.org/renku/default:1"},
    "profiles": [{"name": "small", "cpu": 1, "memory": "1G", "default": True}],
}


def started(workdir: Path, forked: bool, config: dict[str, Any]) -> RunningHub:
    workdir.mkdir()
    (workdir / "repos").mkdir()
    provider = {"kind": "local", "root": str(workdir / "repos")}
    hub = RunningHub(workdir, {**config, "provider": provider})
    enabled = hubfork.ENABLED
    hubfork.ENABLED = forked
    try:
        return hub.start()
    finally:
        hubfork.ENABLED = enabled


def seen(hub: RunningHub) -> dict[str, Any]:
    """What a test can see of a running hub, by psutil and its log; ends it with SIGTERM."""
    assert hub.process is not None
    process = psutil.Process(hub.process.pid)
    glue = [c for c in process.children() if "glue" in c.cmdline()[2:3]]
    config = str(hub.workdir / "notebooks.yaml")
    view = {
        "own session": os.getsid(process.pid) == process.pid,
        "cwd": process.cwd() == str(hub.workdir),
        "glue's config": config in glue[0].cmdline(),  # the hub read it from its environment
        "logs": "JupyterHub is now running" in hub.log(),
    }
    ending = hub.process
    hub.stop()
    view["exit on SIGTERM"] = ending.returncode
    return view


def test_a_forked_hub_is_what_an_exec_would_start(tmp_path: Path) -> None:
    forked = started(tmp_path / "forked", True, CONFIG)
    try:
        execd = started(tmp_path / "execd", False, CONFIG)
        try:
            assert isinstance(forked.process, hubfork.ForkedHub)
            assert isinstance(execd.process, subprocess.Popen)
            view = seen(forked)
            assert view == seen(execd)
        finally:
            execd.stop()
    finally:
        forked.stop()  # both are stopped already when nothing failed
    assert view == {
        "own session": True, "cwd": True, "glue's config": True, "logs": True,
        "exit on SIGTERM": 0,
    }


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "execd"])
def test_a_hub_that_fails_its_config_exits_1_and_says_why(tmp_path: Path, forked: bool) -> None:
    with pytest.raises(RuntimeError, match=r"hub exited 1:[\s\S]*images"):
        started(tmp_path / "hub", forked, {**CONFIG, "images": {}})


def test_a_killed_forked_hub_exits_as_killed(tmp_path: Path) -> None:
    hub = started(tmp_path / "hub", True, CONFIG)
    process = hub.process
    assert isinstance(process, hubfork.ForkedHub)
    children = psutil.Process(process.pid).children()
    try:
        hub.kill()
        assert process.returncode == -signal.SIGKILL
    finally:
        for child in children:
            child.kill()
