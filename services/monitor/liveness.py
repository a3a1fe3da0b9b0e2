"""Is `safeloop metrics run` doing its job? The answers behind `GET /healthz` and `/readyz`.

Alive means: the loop thread runs and finished an iteration within `stale_after_s`, and every
consumer has joined its group (an assignment arrived, possibly of zero partitions when the
group has more members than partitions), is not stuck without partitions, and has polled
recently. Anything else is unavailable, with one reason per failed condition.

Ready means able to act: alive, the control producer has delivered (its idempotence producer
id acquired, the control topic reachable: a rollback goes out at once), and every consumer has
caught up with its partitions' end offsets, measured at assignment and again each time reached
(the windows are primed, and no backlog that built up meanwhile is left ahead).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from safeloop.services.monitor.consumer import GroupMembership
from safeloop.services.monitor.service import LoopState

DEFAULT_STALE_AFTER_S = 30.0


@dataclass(frozen=True, slots=True)
class Liveness:
    """The verdict and the figures it was drawn from, ready to be sent as JSON."""

    reasons: tuple[str, ...]
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def body(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "unavailable",
            "reasons": list(self.reasons),
            **self.details,
        }


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(now - then, 0.0), 3)


def check_liveness(
    loop: LoopState,
    consumers: Mapping[str, GroupMembership],
    now: float,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> Liveness:
    """Judge the loop and its consumers at monotonic time `now`."""
    reasons: list[str] = []
    loop_age = _age(now, loop.iterated_at)
    if not loop.running:
        reasons.append("metrics loop is not running")
    elif loop_age is None:
        reasons.append("metrics loop has not completed an iteration yet")
    elif loop_age > stale_after_s:
        reasons.append(f"metrics loop last completed an iteration {loop_age:.1f}s ago")
    consumer_details: dict[str, dict[str, Any]] = {}
    for name, membership in sorted(consumers.items()):
        polled_age = _age(now, membership.polled_at)
        unassigned_age = _age(now, membership.unassigned_at)
        consumer_details[name] = {
            "partitions": sorted(membership.partitions),
            "joined": membership.assigned_at is not None,
            "last_poll_age_s": polled_age,
            "caught_up": membership.caught_up_at is not None,
            "catch_up_remaining": membership.catch_up_remaining,
        }
        if membership.assigned_at is None:
            reasons.append(f"{name}: waiting for a partition assignment")
        elif unassigned_age is not None and unassigned_age > stale_after_s:
            reasons.append(f"{name}: without an assignment for {unassigned_age:.1f}s")
        if polled_age is None:
            reasons.append(f"{name}: has not polled yet")
        elif polled_age > stale_after_s:
            reasons.append(f"{name}: last polled {polled_age:.1f}s ago")
    details = {
        "loop_running": loop.running,
        "control_producer_ready": loop.control_ready_at is not None,
        # Judges for its group (guard, rollouts, retraining): reads partition 0 of predictions.
        "judge": loop.judge,
        "control_warm_up_s": loop.control_warm_up_s,
        "last_iteration_age_s": loop_age,
        "last_snapshot_age_s": _age(now, loop.snapshot_written_at),
        "consumers": consumer_details,
    }
    return Liveness(tuple(reasons), details)


def check_readiness(
    loop: LoopState,
    consumers: Mapping[str, GroupMembership],
    now: float,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> Liveness:
    """Alive, and able to act now: the control producer delivers and the windows are primed."""
    alive = check_liveness(loop, consumers, now, stale_after_s)
    reasons = list(alive.reasons)
    if loop.control_ready_at is None:
        reasons.append("control producer has not delivered yet (a rollback would wait for it)")
    for name, membership in sorted(consumers.items()):
        if membership.assigned_at is not None and membership.caught_up_at is None:
            remaining = membership.catch_up_remaining
            left = "" if remaining is None else f": {remaining} records to go"
            reasons.append(f"{name}: not caught up with its partitions' end offsets{left}")
    return Liveness(tuple(reasons), alive.details)
