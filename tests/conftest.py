"""Shared fixtures: real git repositories, one real hub (proxy, glue, servers) per session and
a real Chromium per module. Everything they are built from lives in `testing/`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser

from testing.chromium import chromium
from testing.hub import RunningHub
from testing.worlds import local_config, local_repos


@pytest.fixture(scope="session")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return local_repos(tmp_path_factory.mktemp("repos"))


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory, repos: dict) -> Iterator[RunningHub]:
    running = RunningHub(tmp_path_factory.mktemp("hub"), local_config(repos["root"]))
    try:
        yield running.start()
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium through playwright; each test opens its own contexts in it."""
    with chromium() as browser:
        yield browser
