"""The CLI's second line when Kafka or ClickHouse did not answer: how to start or point at it."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from safeloop.infra.exceptions import KafkaAdminError, WarehouseError
from safeloop.infra.settings import Settings
from safeloop.services.cli.exit_codes import ExitCode, report_failure
from safeloop.services.cli.unreachable_hint import unreachable_hint


def _raised_from(error: Exception, cause: BaseException) -> Exception:
    try:
        raise error from cause
    except Exception as raised:
        return raised


def test_a_broker_nobody_answers_for_gets_the_start_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092"})
    cause = KafkaException(KafkaError(KafkaError._TRANSPORT, "Local: Broker transport failure"))
    error = _raised_from(KafkaAdminError(f"listing topics failed: {cause}"), cause)
    assert isinstance(error, KafkaAdminError)
    assert report_failure(error, debug=False, settings=settings) == ExitCode.FAILURE
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("safeloop: listing topics failed")
    assert lines[1] == (
        "safeloop: is Kafka running at 127.0.0.1:19092? `safeloop kafka start` starts the local "
        "broker; KAFKA_BOOTSTRAP_SERVERS points at another"
    )


def test_a_refused_clickhouse_connection_gets_the_warehouse_command() -> None:
    class NewConnectionError(Exception):  # urllib3's, by module
        __module__ = "urllib3.exceptions"

    cause = NewConnectionError("Failed to establish a new connection: [Errno 111] refused")
    error = _raised_from(WarehouseError("migrate failed"), cause)
    hint = unreachable_hint(error, None)
    assert hint is not None and "`safeloop warehouse start`" in hint


def test_other_failures_get_no_hint() -> None:
    cause = KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "not allowed"))
    assert unreachable_hint(_raised_from(KafkaAdminError("denied"), cause), None) is None
    assert unreachable_hint(WarehouseError("Code: 60. Unknown table"), None) is None
