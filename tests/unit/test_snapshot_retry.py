"""While ClickHouse refuses snapshots, `metrics run` backs off and logs the outage, not each try."""

from __future__ import annotations

from safeloop.services.monitor.snapshot_retry import (
    MAX_RETRY_DELAY_MS,
    REPORT_EVERY_S,
    SnapshotRetry,
)


def test_the_delay_doubles_per_failure_up_to_the_cap_and_resets_after_a_success() -> None:
    retry = SnapshotRetry(interval_ms=500)
    delays = [retry.delay_ms()]
    for second in range(8):
        retry.failed(float(second))
        delays.append(retry.delay_ms())

    assert delays == [500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000, 10_000, 10_000]
    assert retry.succeeded() is not None
    assert retry.delay_ms() == 500


def test_an_interval_longer_than_the_cap_is_never_shortened() -> None:
    retry = SnapshotRetry(interval_ms=60_000)
    retry.failed(0.0)

    assert retry.delay_ms() == 60_000 > MAX_RETRY_DELAY_MS


def test_an_outage_is_logged_at_its_start_every_30_s_and_its_end_reports_its_length() -> None:
    retry = SnapshotRetry(interval_ms=500)
    logged = [t for t in range(0, 65, 2) if retry.failed(100.0 + t)]
    outage = retry.succeeded()

    assert logged == [0, 30, 60]
    assert REPORT_EVERY_S == 30
    assert outage is not None and outage.failures == 33 and outage.since == 100.0
    assert retry.succeeded() is None


def test_a_success_with_no_outage_reports_nothing() -> None:
    assert SnapshotRetry(interval_ms=500).succeeded() is None
