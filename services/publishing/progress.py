"""A one-line progress bar on stderr for long file publishes (redrawn at most 5 times a second)."""

from __future__ import annotations

import time
from typing import TextIO

WIDTH = 30
REDRAW_S = 0.2


class ProgressBar:
    """`update(done, total)` redraws `label [####......]  42%  420,000/1,000,000  120,000/s`."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self._stream = stream
        self._label = label
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._drawn = False

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._drawn_at < REDRAW_S and done < total:
            return
        self._drawn_at = now
        fraction = min(1.0, done / total) if total else 1.0
        filled = int(fraction * WIDTH)
        rate = done / max(now - self._started, 1e-9)
        self._stream.write(
            f"\r{self._label} [{'#' * filled}{'.' * (WIDTH - filled)}] {fraction:4.0%}  "
            f"{done:,}/{total:,} rows  {rate:,.0f}/s"
        )
        self._stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
