"""When `metrics run` takes its next snapshot while ClickHouse refuses them, and what it says.

Retries back off (the snapshot interval doubling per failure, up to 10 s), and an outage is
logged when it starts, every 30 s while it lasts and when it ends, not once per attempt. The
guard and the rollouts judge from memory meanwhile; only the rows and the commits wait.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_RETRY_DELAY_MS = 10_000
REPORT_EVERY_S = 30.0


@dataclass(frozen=True, slots=True)
class Outage:
    """Failed snapshots in a row, and the monotonic time of the first."""

    failures: int
    since: float


@dataclass(slots=True)
class SnapshotRetry:
    """The delay before the next snapshot, from how many in a row have failed."""

    interval_ms: int
    failures: int = 0
    failing_since: float | None = None
    reported_at: float | None = None

    def delay_ms(self) -> int:
        if not self.failures:
            return self.interval_ms
        backed_off: int = self.interval_ms << min(self.failures, 20)
        return min(backed_off, max(self.interval_ms, MAX_RETRY_DELAY_MS))

    def failed(self, now: float) -> bool:
        """Count a failed snapshot at monotonic `now`; True when it should be logged."""
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
        if self.reported_at is None or now - self.reported_at >= REPORT_EVERY_S:
            self.reported_at = now
            return True
        return False

    def succeeded(self) -> Outage | None:
        """Reset after a written snapshot; the outage it ends, if any."""
        if self.failing_since is None:
            return None
        outage = Outage(self.failures, self.failing_since)
        self.failures, self.failing_since, self.reported_at = 0, None, None
        return outage
