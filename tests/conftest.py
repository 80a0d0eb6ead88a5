"""Shared fixtures: real git repositories and one real hub (proxy, glue, servers) per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubtools import RunningHub, make_repo

# access list of the session hub: everyone is a developer on `demo/*` and the
# subgroup project; carol is only a reporter on demo/hello; only alice sees demo/private
ACCESS = {
    "*": {"demo/hello": 30, "demo/other": 30, "group/sub/deep": 30},
    "carol": {"demo/hello": 20},
    "alice": {"demo/private": 40},
}


@pytest.fixture(scope="session")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("repos")
    shas = {
        path: make_repo(root, path)
        for path in ("demo/hello", "demo/other", "demo/private", "group/sub/deep")
    }
    return {"root": root, "shas": shas}


def notebooks_config(repos_root: Path) -> dict[str, object]:
    return {
        "images": {"default": "registry.example.org/renku/default:1"},
        "profiles": [
            {"name": "small", "cpu": 0.5, "memory": "1G", "default": True},
            {"name": "large", "cpu": 2, "memory": "4G"},
        ],
        "provider": {"kind": "local", "root": str(repos_root), "access": ACCESS},
        "launch": {"serversPerUser": 3, "startTimeoutSeconds": 60, "stopTimeoutSeconds": 20},
    }


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory, repos: dict) -> Iterator[RunningHub]:
    running = RunningHub(tmp_path_factory.mktemp("hub"), notebooks_config(repos["root"]))
    try:
        yield running.start()
    finally:
        running.stop()
