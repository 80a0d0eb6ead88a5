"""Small checks every kind of test makes: wait for an event, time a call, keep a secret out of
a text (without ever printing the secret)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               every: float = 0.1) -> Any:
    """The predicate's first true result, polled every `every` seconds; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every)
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
