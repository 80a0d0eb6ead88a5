"""Small checks every kind of test makes: wait for an event, time a call, keep a secret out of
a text (without ever printing the secret)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# the default wait: first every 0.1 s, then less and less often, at most every 1 s. Most
# predicates are requests through the proxy, the glue and the hub (about 10 ms of CPU
# each) or scans of /proc, and the suite is bound by its CPU: a culler's minute-long wait
# at 0.1 s cost 600 of them
FIRST_POLL, BACKOFF, LAST_POLL = 0.1, 1.5, 1.0


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               every: float | None = None) -> Any:
    """The predicate's first true result; fails after `timeout`. Polled every `every`
    seconds where the test needs that (a moment it must catch), else backing off from
    FIRST_POLL to LAST_POLL."""
    deadline = time.monotonic() + timeout
    pause = every or FIRST_POLL
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        if every is None:
            pause = min(pause * BACKOFF, LAST_POLL)
    raise AssertionError(f"{what}: not within {timeout} s")


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """What `call()` returns, and how many seconds it took."""
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def assert_hidden(secret: str, text: str | bytes, where: object) -> None:
    """Fail if `secret` is in `text`, naming the place but never the secret: CI logs are read."""
    found = secret.encode() in text if isinstance(text, bytes) else secret in text
    if found:
        raise AssertionError(f"a secret appears in {where}")
