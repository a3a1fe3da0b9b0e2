"""Log lines that repeat per retry, collapsed: a broker or ClickHouse that is down makes every
client log the same failed connect several times a second, which buries everything else."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

REPEAT_WINDOW_S = 30.0
# Figures and ids that change from one repeat to the next ("after 0ms", "1 identical
# error(s)", a query id or deduplication token in a retried URL, an object's address).
_FIGURES = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F-]*\d[0-9a-fA-F-]*\b|\d+")
_MAX_KINDS = 1_000


class RepeatedLineFilter(logging.Filter):
    """Lets a line through once per `window_s` per kind (client, facility, text with figures
    blanked); the next one let through says how many like it were held back."""

    def __init__(
        self,
        window_s: float = REPEAT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        *,
        loggers: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        # Only records of these loggers (or their children) are collapsed; None: every record.
        self._loggers = loggers
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        # kind -> (when it was last let through, how many were held back since)
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self._loggers is not None and not _is_of(record.name, self._loggers):
            return True
        message = record.getMessage()
        kind = _FIGURES.sub("#", message)
        now = self._clock()
        with self._lock:
            passed_at, held = self._seen.get(kind, (-float("inf"), 0))
            if now - passed_at < self._window_s:
                self._seen[kind] = (passed_at, held + 1)
                return False
            self._seen[kind] = (now, 0)
            if len(self._seen) > _MAX_KINDS:
                self._forget_older_than(now - self._window_s)
        if held:
            record.msg = f"{message} ({held} more like it in the last {now - passed_at:.0f} s)"
            record.args = None
        return True

    def _forget_older_than(self, cutoff: float) -> None:
        for kind in [k for k, (at, _) in self._seen.items() if at < cutoff]:
            del self._seen[kind]


def _is_of(name: str, loggers: tuple[str, ...]) -> bool:
    return any(name == logger or name.startswith(logger + ".") for logger in loggers)
