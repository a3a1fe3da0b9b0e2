"""Durations as operators type them: `90`, `250ms`, `45s`, `30m`, `6h`, `30d`, `2w`."""

from __future__ import annotations

import re

SECONDS_PER_DAY = 86_400
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?$")
_UNIT_S = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": float(SECONDS_PER_DAY),
    "w": 7.0 * SECONDS_PER_DAY,
}


def parse_duration_s(text: str) -> float:
    """Seconds in `text` (no unit: seconds; case and surrounding spaces ignored); ValueError
    naming the accepted forms otherwise."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise ValueError(f"a duration looks like 90, 250ms, 45s, 30m, 6h, 30d or 2w; got {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
