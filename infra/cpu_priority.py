"""Lower a background process's CPU priority so it only runs on cycles serving does not want.

`idle` is Linux's SCHED_IDLE policy (the scheduler gives the process a core only when nothing
else of normal priority is runnable there); `low` is nice 19 (still scheduled, with ~1.5 % of
a normal process's weight); `normal` leaves the process as it was started. Threads inherit
the calling thread's policy, so this is applied first thing, before any client starts its
threads.
"""

from __future__ import annotations

import enum
import logging
import os

from safeloop.infra.exceptions import SettingsError

logger = logging.getLogger(__name__)

LOWEST_NICE = 19


class CpuPriority(enum.Enum):
    """How much of the CPU a background process may take from serving."""

    IDLE = "idle"
    LOW = "low"
    NORMAL = "normal"

    @classmethod
    def parse(cls, name: str, raw: str) -> CpuPriority:
        """The priority spelt `raw` (any case); `SettingsError` naming `name` otherwise."""
        try:
            return cls(raw.strip().lower())
        except ValueError as exc:
            expected = "one of " + ", ".join(choice.value for choice in cls)
            raise SettingsError(name, raw, expected) from exc


CPU_PRIORITY_CHOICES = tuple(choice.value for choice in CpuPriority)


def lower_cpu_priority(priority: CpuPriority) -> str:
    """Apply `priority` to the calling thread (and threads it starts later); returns what was
    applied: "SCHED_IDLE", "nice 19" or "unchanged".

    Where SCHED_IDLE is missing or refused (not Linux, a seccomp profile), `idle` falls back
    to nice 19: lowering one's own priority never needs a privilege."""
    if priority is CpuPriority.NORMAL:
        return "unchanged"
    if priority is CpuPriority.IDLE:
        setscheduler = getattr(os, "sched_setscheduler", None)
        policy = getattr(os, "SCHED_IDLE", None)
        if setscheduler is not None and policy is not None:
            try:
                setscheduler(0, policy, os.sched_param(0))
            except OSError as exc:
                logger.warning("SCHED_IDLE refused (%s): falling back to nice %s", exc, LOWEST_NICE)
            else:
                return "SCHED_IDLE"
    os.nice(LOWEST_NICE - os.nice(0))
    return f"nice {LOWEST_NICE}"
