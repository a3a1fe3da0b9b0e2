"""The live progress display: one redrawn status block on a TTY, plain log lines otherwise.

The CLI owns the terminal, so this module writes to its stream directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TextIO

REDRAW_S = 0.5
PLAIN_STATUS_EVERY_S = 10.0
_CLEAR_LINE = "\x1b[2K"


@dataclass(frozen=True, slots=True)
class Gauges:
    """What the status block shows besides phase and last event."""

    rate: float
    canary_percent: float
    feedback_rows: int
    sent: int
    failed: int


# For a caller with nothing to show (a benchmark driving the demo's stack quietly).
NO_GAUGES = Gauges(0.0, 0.0, 0, 0, 0)


class Progress:
    """`phase` and `event` update the block (or print a line); a thread redraws it."""

    def __init__(self, out: TextIO, gauges: Callable[[], Gauges], *, live: bool) -> None:
        self._out = out
        self._gauges = gauges
        self._live = live
        self._started = time.monotonic()
        self._phase = "starting"
        self._event = "-"
        self._drawn_lines = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="demo-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop redrawing and erase the block; idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._redraw(final=True)

    def phase(self, name: str) -> None:
        with self._lock:
            self._phase = name
        self._line(f"== {name}")

    def event(self, text: str) -> None:
        with self._lock:
            self._event = text
        self._line(f"   {text}")

    def _line(self, text: str) -> None:
        """A permanent line: above the block on a TTY, on its own otherwise."""
        with self._lock, suppress(OSError):  # the terminal may be gone (hang-up)
            self._erase()
            self._out.write(f"[{self._elapsed()}] {text}\n")
            self._out.flush()

    def _run(self) -> None:
        last_plain = time.monotonic()
        while not self._stop.wait(REDRAW_S):
            if self._live:
                self._redraw()
            elif time.monotonic() - last_plain >= PLAIN_STATUS_EVERY_S:
                last_plain = time.monotonic()
                self._line(self._status_line())

    def _redraw(self, final: bool = False) -> None:
        if not self._live:
            return
        block = [] if final else self._block()
        with self._lock, suppress(OSError):
            self._erase()
            if block:
                self._out.write("\n".join(block) + "\n")
                self._drawn_lines = len(block)
            self._out.flush()

    def _erase(self) -> None:
        if self._drawn_lines:
            self._out.write(f"\x1b[{self._drawn_lines}F" + f"{_CLEAR_LINE}\n" * self._drawn_lines)
            self._out.write(f"\x1b[{self._drawn_lines}F")
            self._drawn_lines = 0

    def _block(self) -> list[str]:
        gauges = self._gauges()
        with self._lock:
            phase, event = self._phase, self._event
        return [
            "+" + "-" * 70,
            f"| elapsed {self._elapsed():>8}   phase: {phase}",
            f"| traffic {gauges.rate:6.1f} req/s   canary {gauges.canary_percent:5.1f} %   "
            f"sent {gauges.sent}  failed {gauges.failed}",
            f"| feedback rows in ClickHouse: {gauges.feedback_rows}",
            f"| last control event: {event[:60]}",
            "+" + "-" * 70,
        ]

    def _status_line(self) -> str:
        gauges = self._gauges()
        return (
            f"   status: {gauges.rate:.1f} req/s, canary {gauges.canary_percent:.1f} %, "
            f"{gauges.feedback_rows} feedback rows, {gauges.sent} sent, {gauges.failed} failed"
        )

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self._started)
        return f"{seconds // 60:02d}:{seconds % 60:02d}"
