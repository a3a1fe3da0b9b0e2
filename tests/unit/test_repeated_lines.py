"""librdkafka's repeated lines (a broker down) are collapsed; distinct lines all pass."""

from __future__ import annotations

import logging

from safeloop.infra.repeated_lines import RepeatedLineFilter


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


def _named(name: str, text: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, "%s", (text,), None)


def test_scoped_to_libraries_it_collapses_their_retries_and_never_our_own_lines() -> None:
    repeats = RepeatedLineFilter(window_s=30, clock=lambda: 0.0, loggers=("urllib3",))
    retry = "Retrying (total=0) after connection broken: Connection refused"
    ours = "rolled back churn canary v3 (sequence 3)"

    library = [repeats.filter(_named("urllib3.connectionpool", retry)) for _ in range(5)]
    own = [repeats.filter(_named("safeloop.services.guard.runner", ours)) for _ in range(5)]
    # A prefix of a logger's name is not its parent.
    lookalike = [repeats.filter(_named("urllib3x", retry)) for _ in range(2)]

    assert library == [True, False, False, False, False]
    assert own == [True] * 5
    assert lookalike == [True, True]


def test_configured_processes_collapse_library_retries_on_every_handler() -> None:
    from safeloop.infra.process_logging import RETRYING_LIBRARIES, configure_logging

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []
    try:
        configure_logging("INFO")
        filters = [f for h in root.handlers for f in h.filters]
        record = _named(f"{RETRYING_LIBRARIES[0]}.consumer.fetcher", "Failed fetch: not ready")
        passed = [all(f.filter(record) for f in filters) for _ in range(3)]
    finally:
        root.handlers = saved

    assert filters and passed == [True, False, False]


def test_retries_differing_only_in_query_ids_and_tokens_are_one_kind() -> None:
    repeats = RepeatedLineFilter(window_s=30, clock=lambda: 0.0)
    url = "Retrying after connection broken: /?database=chaos_a8e61f&query_id={}&token=t-{}-80"
    first = url.format("8a459536-f9dc-40da-aebd-479bfa8c6d84", "1a2dfd6fa3f71962868d1056df92a7fb")
    second = url.format("48b69b77-e4ab-4e16-b14e-5a01dde3fc0e", "d1a6ba382e69a7be57010e39291cca2e")

    conn = "NewConnectionError('<HTTPConnection object at {}>: Connection refused')"

    assert repeats.filter(_named("urllib3.connectionpool", first))
    assert not repeats.filter(_named("urllib3.connectionpool", second))
    assert repeats.filter(_named("urllib3.connectionpool", conn.format("0x7f37813e9880")))
    assert not repeats.filter(_named("urllib3.connectionpool", conn.format("0x7f3780ffbec0")))
    assert repeats.filter(_named("urllib3.connectionpool", "Connection pool is full"))
