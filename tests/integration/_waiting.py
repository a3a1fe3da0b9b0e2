"""Polling and clock helpers shared by the integration harnesses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol


class WaitFor(Protocol):
    def __call__(
        self, check: Callable[[], Any], timeout_s: float = ..., every_s: float = ...
    ) -> Any: ...


def now_ms() -> int:
    return int(time.time() * 1000)


def poller(default_timeout_s: float, default_every_s: float) -> WaitFor:
    """A `wait_for` with these defaults (each harness polls at its own pace)."""

    def wait_for(
        check: Callable[[], Any],
        timeout_s: float = default_timeout_s,
        every_s: float = default_every_s,
    ) -> Any:
        """Poll `check` until it returns something truthy; the last value (falsy on timeout)."""
        deadline = time.monotonic() + timeout_s
        value = check()
        while not value and time.monotonic() < deadline:
            time.sleep(every_s)
            value = check()
        return value

    return wait_for


# A minute, every quarter second: the stream tests' pace (they query ClickHouse each time).
wait_for = poller(60.0, 0.25)
