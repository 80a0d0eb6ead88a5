"""The `hub` mark: which tests need the slow parts, a running hub, a server, a browser or a
cluster of processes. `make test-fast` (`pytest -m "not hub"`) runs all the others.

Tests are marked from the fixtures they use, directly or through other fixtures: a fixture
that starts such parts is decorated with `starts_hub` (beneath `@pytest.fixture`), so a new
test that uses `hub`, `browser` or a world is marked without anyone remembering to. A test
that starts them itself carries `@pytest.mark.hub`. What starts a hub or a browser
(testing.hub.RunningHub.start, testing.chromium.chromium) calls `check_may_start`, which
fails a test that is not marked: the mark cannot silently be wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

HUB = "hub"
F = TypeVar("F", bound=Callable[..., object])
# the test being set up or run, when it is not marked `hub` (set by tests/conftest.py)
unmarked_test: str | None = None


def starts_hub(fixture: F) -> F:
    """Marks a fixture function as one that starts a hub, a server, a browser or a cluster."""
    fixture.starts_hub = True  # type: ignore[attr-defined]
    return fixture


def check_may_start(what: str) -> None:
    """Fail the running test if it is not marked `hub` yet starts `what`."""
    if unmarked_test is not None:
        raise AssertionError(
            f"{unmarked_test} starts {what} but is not marked `{HUB}`: decorate the fixture "
            "that starts it with testing.marks.starts_hub, or mark the test"
        )
