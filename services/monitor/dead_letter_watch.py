"""Watches the `dead_letters` table for a spike: how many arrived since the last look."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from safeloop.services.alerts.alert import Alert, alert_for_dead_letters

log = logging.getLogger(__name__)

_COUNT_SINCE = (
    "SELECT count() FROM dead_letters WHERE ingested_at > fromUnixTimestamp64Milli({since:Int64})"
)


class DeadLetterWatch:
    """`check()` counts dead letters since its last call and returns an alert above the rate."""

    def __init__(
        self,
        client: Client,
        limit_per_minute: int,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self._client = client
        self.limit_per_minute = limit_per_minute
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._since_ms = self._clock_ms()
        self.last_count = 0
        self.failures = 0

    def check(self) -> Alert | None:
        """Dead letters since the last check, as an alert if over the per-minute limit."""
        now_ms = self._clock_ms()
        try:
            result = self._client.query(_COUNT_SINCE, parameters={"since": self._since_ms})
        except ClickHouseError as exc:
            self.failures += 1
            log.warning("dead-letter count failed (will look again): %s", exc)
            return None
        count = int(result.result_rows[0][0])
        window_ms = max(now_ms - self._since_ms, 1)
        self._since_ms = now_ms
        self.last_count = count
        limit = self.limit_per_minute * window_ms / 60_000
        if count <= limit:
            return None
        return alert_for_dead_letters(count, window_ms / 1000, round(limit), now_ms)
