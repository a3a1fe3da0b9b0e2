"""librdkafka's repeated lines (a broker down) are collapsed; distinct lines all pass."""

from __future__ import annotations

import logging

from safeloop.infra.kafka.client_log import RepeatedLineFilter


def _record(text: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("safeloop.kafka.client", logging.ERROR, __file__, 1, text, args, None)


def test_a_failed_connect_repeated_passes_once_per_window_with_a_count() -> None:
    now = [0.0]
    repeats = RepeatedLineFilter(window_s=30, clock=lambda: now[0])
    fail = "%s [%s] %s"
    line = "127.0.0.1:50811/bootstrap: Connection refused (after {}ms in state CONNECT)"

    passed = []
    for step in range(100):  # ten a second for ten seconds, the figures changing
        now[0] = step / 10
        record = _record(fail, "FAIL", "rdkafka#producer-3", line.format(step % 3))
        if repeats.filter(record):
            passed.append(record.getMessage())
    now[0] = 31.0
    later = _record(fail, "FAIL", "rdkafka#producer-3", line.format(0))

    assert len(passed) == 1
    assert repeats.filter(later)
    assert later.getMessage().endswith("(99 more like it in the last 31 s)")


def test_different_lines_are_not_held_back() -> None:
    repeats = RepeatedLineFilter(window_s=30, clock=lambda: 0.0)
    lines = ["Connect failed", "SASL authentication failed", "Broker: Not leader"]

    assert all(repeats.filter(_record("%s", text)) for text in lines)
    assert not repeats.filter(_record("%s", "Connect failed"))
