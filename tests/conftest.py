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
# but the session hub, or have a hub of their own, and run apart, as units of their own
# (APART). Units are handed out in collection order, which is set here:
# - FIRST, the one unit that keeps the cores busy for minutes: fifty servers at once, then
#   schemathesis' thousands of requests, one after the other in one worker (side by side on 2
#   cores they made servers miss their start timeouts); the fifty servers first, while the
#   other workers run units without a hub, whose tests have no start to wait for;
# - beside them, every unit that needs no hub: nothing of theirs waits on a launch that
#   fifty servers starting at once would slow past its timeout;
# - then the units with hubs, longest first (LONGEST, from `--durations` on 2 cores), so
#   that no long one is left to run alone at the end; then all the others.
APART: dict[str, str] = {
    # schemathesis' thousands of requests, and its launches of real commits
    "tests/test_contract.py::test_fuzz_every_operation": "busy",
    "tests/test_contract.py::test_fuzz_launches_of_real_commits": "fuzz-launches",
    # each starts and ends an embedded default of its own
    "tests/test_dev.py::": "",
    # the benchmark's smoke run, in three parts
    "tests/test_bench_smoke.py::": "",
    # hubs of their own: the local provider's, the culler's
    "tests/test_autosave_flow.py::test_local_refs": "autosave-local",
    "tests/test_autosave_flow.py::test_the_culler": "autosave-culler",
    # a hub each that the test kills; fifty servers at once on a hub of its own
    "tests/test_faults.py::test_hub_killed": "",
    # a glue's connection left idle for 80 s
    "tests/test_faults.py::test_an_idle_connection": "",
    "tests/test_faults.py::test_fifty_users": "busy",
    "tests/test_faults.py::test_glue_killed": "busy",
    # the hub killed during a restore; the hub that refreshes logins every second
    "tests/test_gitlab_flow.py::test_a_hub_killed": "",
    "tests/test_gitlab_flow.py::test_expired_token_is_refreshed": "gitlab-refreshing",
    "tests/test_gitlab_flow.py::test_revoked_login": "gitlab-refreshing",
    # the hub with a single origin
    "tests/test_origins.py::test_one_origin": "single-origin",
    # the culler's pause and removal of a paused server, on a hub of its own
    "tests/test_hibernate.py::test_the_culler": "hibernate-culler",
    # the sandbox's limits (memory, disk), on a second sandbox hub beside the first
    "tests/test_sandbox.py::test_a_workspace_is_a_disk": "sandbox-limits",
    "tests/test_sandbox.py::test_a_server_killed_for_its_memory": "sandbox-limits",
    "tests/test_sandbox.py::test_a_notebook_past_its_profiles_memory": "sandbox-limits",
}
FIRST = ("busy",)
# the order of the tests inside the busy unit (by node id prefix)
BUSY = ("tests/test_faults.py", "tests/test_contract.py")
SMOKE = "tests/test_bench_smoke.py::test_every_figure_measures_something_at_smoke_size"
LONGEST = (
    # a wait of 80 s, and almost no CPU: first, beside the units that keep the cores busy
    "tests/test_faults.py::test_an_idle_connection_of_the_proxy_stays_open",
    # beside the fifty servers: the benchmark's runs, whose waits are generous
    f"{SMOKE}[figures-9-10]",
    f"{SMOKE}[figures-6-7-11]",
    f"{SMOKE}[figures-1-2-3-5]",
    "hibernate-culler",
    "tests/test_dev.py::test_embedded_default_end_to_end_and_a_clean_restart",
    "tests/test_sandbox.py",
    "tests/test_startup.py",
    "tests/test_api.py",
    "tests/test_gitlab_images.py",
    "tests/test_metrics.py",
    "tests/test_gitlab_flow.py",
    "tests/test_autosave_flow.py",
    # from here on, by their length on 2 cores (`-p timeline` of 2026-12-06), so that the
    # units left for the end are the short ones
    "autosave-culler",
    # the memory limits: a server killed for its memory must be noticed within the test's wait,
    # which fifty servers starting beside it would outlast
    "sandbox-limits",
    "tests/test_browser.py",
    "tests/test_security.py",
    "tests/test_faults.py::test_hub_killed_mid_clone",
    "tests/test_hibernate.py",
    "tests/test_faults.py::test_hub_killed_during_launches",
    "tests/test_portsquat.py",
    "tests/test_origins.py",
    "tests/test_hub_internals.py",
    "autosave-local",
    "tests/test_drain.py",
    "tests/test_gitproxy.py",
    "fuzz-launches",
    "tests/test_gitlab_flow.py::test_a_hub_killed_during_the_restore_leaves_no_component_and_loses_nothing",
    "tests/test_autosave_api.py",
    "tests/test_dev.py::test_two_instances_side_by_side",
    "tests/test_faults.py",
    "single-origin",
    "tests/test_launcher.py",
    "gitlab-refreshing",
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
    with_hub = {work_unit(item.nodeid) for item in items if item.get_closest_marker(marks.HUB)}
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(work_unit(item.nodeid), index)

    def order(item: pytest.Item) -> tuple[int, int]:
        unit = work_unit(item.nodeid)
        if unit in FIRST:
            return 0, [item.nodeid.startswith(prefix) for prefix in BUSY].index(True)
        if unit not in with_hub:
            return 1, first_seen[unit]
        if unit in LONGEST:
            return 2, LONGEST.index(unit)
        return 3, first_seen[unit]

    # stable: a unit's tests keep their order, and each unit's tests stay together
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
