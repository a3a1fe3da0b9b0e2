"""CPU seconds of a process or thread, from its /proc stat file (Linux)."""

from __future__ import annotations

import os
from pathlib import Path


def stat_cpu_seconds(stat: str) -> float:
    """User + system seconds in the text of a /proc/<pid>/stat or .../task/<tid>/stat file."""
    # Fields after the parenthesised command name (which may hold spaces): utime, stime at 11, 12.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system seconds of process `pid` so far, all its threads; OSError once it is gone."""
    return stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())
