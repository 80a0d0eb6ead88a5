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


# --- pytest-xdist: `make test` runs the suite in workers (`-n N --dist loadscope`) ----------
#
# The unit of work a worker gets is a module: its tests share its fixtures (its own hub, its
# world), so one worker starts those once. A few long tests share nothing with their module
# but the session hub and run apart, as units of their own (APART). Units start in the order
# of LONGEST_FIRST (from `--durations`), then in collection order, so that no long unit is
# left to run alone at the end.
APART: dict[str, str] = {
    # schemathesis' thousands of requests, and its launches of real commits
    "tests/test_contract.py::test_fuzz_every_operation": "fuzz",
    "tests/test_contract.py::test_fuzz_launches_of_real_commits": "fuzz-launches",
    # each starts and ends an embedded default of its own
    "tests/test_dev.py::": "",
    # hubs of their own: the local provider's, the culler's
    "tests/test_autosave_flow.py::test_local_refs": "autosave-local",
    "tests/test_autosave_flow.py::test_the_culler": "autosave-culler",
    # a hub each that the test kills; fifty servers at once on a hub of its own
    "tests/test_faults.py::test_hub_killed": "",
    "tests/test_faults.py::test_fifty_users": "faults-busy",
    "tests/test_faults.py::test_glue_killed": "faults-busy",
    # the hub killed during a restore; the hub that refreshes logins every second
    "tests/test_gitlab_flow.py::test_a_hub_killed": "",
    "tests/test_gitlab_flow.py::test_expired_token_is_refreshed": "gitlab-refreshing",
    "tests/test_gitlab_flow.py::test_revoked_login": "gitlab-refreshing",
    # the hub with a single origin
    "tests/test_origins.py::test_one_origin": "single-origin",
}
LONGEST_FIRST: tuple[str, ...] = (
    "fuzz",
    "tests/test_bench_smoke.py",
    "tests/test_dev.py::test_embedded_default_end_to_end_and_a_clean_restart",
    "faults-busy",
    "tests/test_autosave_flow.py",
    "tests/test_gitlab_flow.py",
    "tests/test_sandbox.py",
    "tests/test_api.py",
)


def work_unit(nodeid: str) -> str:
    """The unit of work of a test, from its node id (all the scheduler sees of a test): its
    module's, or the one APART names (`""`: the test's own)."""
    for prefix, unit in APART.items():
        if nodeid.startswith(prefix):
            return unit or nodeid
    return nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker(marks.HUB) is None and uses_a_hub(item):
            item.add_marker(marks.HUB)
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(work_unit(item.nodeid), len(rank) + index)
    # stable: a unit's tests keep their order, and each unit's tests stay together
    def order(item: pytest.Item) -> int:
        unit = work_unit(item.nodeid)
        return rank.get(unit, first_seen[unit])

    items.sort(key=order)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadscope` with our units, handed out in collection order (set above)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False
    return WorkUnits(config, log)


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
