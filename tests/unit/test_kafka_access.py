"""Kafka's refusals become errors that name the principal and what it tried; nothing else does."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from safeloop.infra.exceptions import (
    DeliveryError,
    KafkaAuthenticationError,
    KafkaAuthorizationError,
)
from safeloop.infra.kafka.access import ClientErrors, access_error, is_refusal, refusal_of
from safeloop.infra.kafka.produce import produce_confirmed


def test_authorization_failures_name_principal_operation_and_topic() -> None:
    error = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Broker: Topic authorization failed")
    found = access_error(
        error, principal="User:replica", bootstrap="b:9092", operation="write", resource="topic c"
    )
    assert isinstance(found, KafkaAuthorizationError)
    assert str(found).startswith("User:replica may not write topic c: Broker: Topic authorization")
    assert (found.principal, found.operation, found.resource) == (
        "User:replica",
        "write",
        "topic c",
    )


def test_authentication_failures_name_principal_and_broker() -> None:
    error = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials")
    found = access_error(
        error, principal="User:labels", bootstrap="b:9092", operation="write", resource="topic o"
    )
    assert isinstance(found, KafkaAuthenticationError)
    assert "Kafka at b:9092 refused to authenticate User:labels" in str(found)


def test_an_unverifiable_broker_certificate_is_an_authentication_failure() -> None:
    error = KafkaError(KafkaError._SSL, "SSL handshake failed: certificate verify failed")
    assert is_refusal(error)


def test_other_errors_are_not_refusals() -> None:
    for code in (
        KafkaError._TRANSPORT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    ):
        error = KafkaError(code, "x")
        assert not is_refusal(error)
        found = access_error(error, principal="p", bootstrap="b", operation="read", resource="r")
        assert found is None


class _Refused:
    """A producer whose broker refused its credentials: nothing is ever acknowledged."""

    principal = "User:replica"
    bootstrap = "b:9092"

    def __init__(self) -> None:
        self.errors = ClientErrors()
        self.errors(KafkaError(KafkaError._AUTHENTICATION, "invalid credentials"))
        self.flushes = 0

    def produce(self, topic: str, *, key: bytes | None, value: bytes, on_delivery: object) -> None:
        pass

    def flush(self, timeout: float) -> int:
        self.flushes += 1
        return 1


def test_a_confirmed_send_stops_waiting_once_credentials_are_refused() -> None:
    producer = _Refused()
    with pytest.raises(KafkaAuthenticationError) as refused:
        produce_confirmed(producer, "t.predictions", [(b"k", b"v")], timeout_s=60)
    assert refused.value.principal == "User:replica"
    # One flush slice, not a minute of waiting.
    assert producer.flushes <= 2
    assert refusal_of(producer, None, operation="write", resource="topic t") is not None


class _Silent(_Refused):
    def __init__(self) -> None:
        self.errors = ClientErrors()
        self.errors(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        self.flushes = 0


def test_a_client_no_broker_answers_is_told_what_may_be_wrong() -> None:
    with pytest.raises(DeliveryError) as silent:
        produce_confirmed(_Silent(), "t.control", [(b"k", b"v")], timeout_s=0.2)
    assert "no broker at b:9092 answered User:replica" in str(silent.value)
    assert "SAFELOOP_KAFKA_SECURITY" in str(silent.value)
