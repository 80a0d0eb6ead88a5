"""Shared fixtures: real git repositories, one real hub (proxy, glue, servers) per session and
a real Chromium per module. Everything they are built from lives in `testing/`.

Tests that need a hub, a server, a browser or a cluster are marked `hub` here, from the
fixtures they use (testing.marks); `make test-fast` runs the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser

from testing import marks
from testing.chromium import chromium
from testing.hub import RunningHub
from testing.marks import starts_hub
from testing.worlds import local_config, local_repos


def uses_a_hub(item: pytest.Item) -> bool:
    """Whether any fixture the test uses, directly or not, starts a hub (or a server, a
    browser, a cluster): the one each name resolves to for this test."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for name in info.names_closure:
        definitions = info.name2fixturedefs.get(name)
        if definitions and getattr(definitions[-1].func, "starts_hub", False):
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker(marks.HUB) is None and uses_a_hub(item):
            item.add_marker(marks.HUB)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    marks.unmarked_test = None if item.get_closest_marker(marks.HUB) else item.nodeid


@pytest.fixture(scope="session")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return local_repos(tmp_path_factory.mktemp("repos"))


@pytest.fixture(scope="session")
@starts_hub
def hub(tmp_path_factory: pytest.TempPathFactory, repos: dict) -> Iterator[RunningHub]:
    running = RunningHub(tmp_path_factory.mktemp("hub"), local_config(repos["root"]))
    try:
        yield running.start()
    finally:
        running.stop()


@pytest.fixture(scope="module")
@starts_hub
def browser() -> Iterator[Browser]:
    """Debian's Chromium through playwright; each test opens its own contexts in it."""
    with chromium() as browser:
        yield browser
