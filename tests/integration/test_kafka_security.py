"""Least privilege on the wire, as a user meets it: each role can do its job on the secured
broker (SASL_SSL, SCRAM, ACLs) and is refused, by name, what belongs to another role."""

from __future__ import annotations

import stat
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _stream_harness import free_port, new_run, outcome, prediction, wait_for

from safeloop.infra.exceptions import (
    DeliveryError,
    KafkaAuthenticationError,
    KafkaAuthorizationError,
)
from safeloop.infra.kafka.broker_security import ADMIN_USER, SecurityPaths
from safeloop.infra.kafka.clients import cluster_answers, make_producer
from safeloop.infra.kafka.produce import produce_confirmed
from safeloop.infra.kafka.provisioning import grant_roles, role_settings
from safeloop.infra.kafka.roles import Role
from safeloop.infra.settings import Secret, Settings
from safeloop.schemas.codec import OUTCOME_CODEC, PREDICTION_CODEC
from safeloop.services.cli.main import main
from safeloop.services.control.clients import make_broadcast_reader

pytestmark = pytest.mark.integration

RoleSettings = Callable[[Role], Settings]


@pytest.fixture(scope="module")
def fresh(stack: Any, kafka_security: SecurityPaths) -> Settings:
    """Topics of this module's own, with the role ACLs granted on their names (as the admin)."""
    settings: Settings = stack.fresh("security")
    grant_roles(settings)
    return settings


@pytest.fixture(scope="module")
def as_role(fresh: Settings, kafka_security: SecurityPaths) -> RoleSettings:
    return lambda role: role_settings(fresh, kafka_security, role)


def write(settings: Settings, topic: str, value: bytes = b"payload") -> int:
    return produce_confirmed(make_producer(settings), topic, [(b"key", value)], timeout_s=20)


def read(settings: Settings, topic: str, label: str) -> int:
    reader = make_broadcast_reader(settings, topic, label)
    try:
        reader.assign_from_beginning(20.0)
        return len(reader.read_to_end(20.0))
    finally:
        reader.close()


def test_a_replica_writes_predictions_and_status_reads_control_and_may_not_write_control(
    as_role: RoleSettings,
) -> None:
    replica = as_role(Role.REPLICA)
    topics = replica.topics
    assert write(replica, topics.predictions) == 1
    assert write(replica, topics.replica_status) == 1
    assert read(replica, topics.control, "replica-it") >= 0

    with pytest.raises(KafkaAuthorizationError) as refused:
        write(replica, topics.control)
    assert refused.value.principal == "User:replica"
    assert f"User:replica may not write topic {topics.control}" in str(refused.value)


def test_a_label_pipeline_writes_outcomes_and_may_not_read_or_write_predictions(
    as_role: RoleSettings,
) -> None:
    labels = as_role(Role.LABELS)
    topics = labels.topics
    assert write(labels, topics.outcomes) == 1

    with pytest.raises(KafkaAuthorizationError) as reading:
        read(labels, topics.predictions, "replica-labels")
    assert f"User:labels may not read topic {topics.predictions}" in str(reading.value)
    with pytest.raises(KafkaAuthorizationError) as writing:
        write(labels, topics.predictions)
    assert f"User:labels may not write topic {topics.predictions}" in str(writing.value)


def test_an_operator_writes_control_reads_status_and_may_not_write_predictions(
    as_role: RoleSettings,
) -> None:
    operator = as_role(Role.OPERATOR)
    topics = operator.topics
    assert write(operator, topics.control) == 1
    assert read(operator, topics.control, "cli") >= 1
    assert read(operator, topics.replica_status, "cli-status") >= 0

    with pytest.raises(KafkaAuthorizationError) as refused:
        write(operator, topics.predictions)
    assert f"User:operator may not write topic {topics.predictions}" in str(refused.value)


def test_the_metrics_service_writes_retraining_and_control_and_may_not_read_outcomes(
    as_role: RoleSettings,
) -> None:
    metrics = as_role(Role.METRICS)
    topics = metrics.topics
    assert write(metrics, topics.retraining) == 1
    assert write(metrics, topics.control) == 1
    assert read(metrics, topics.control, "metrics") >= 1

    with pytest.raises(KafkaAuthorizationError) as refused:
        read(metrics, topics.outcomes, "metrics")
    assert f"User:metrics may not read topic {topics.outcomes}" in str(refused.value)


def test_the_processor_joins_as_its_own_principal_and_may_not_write_control(
    as_role: RoleSettings,
) -> None:
    processor = as_role(Role.PROCESSOR)
    with pytest.raises(KafkaAuthorizationError) as refused:
        write(processor, processor.topics.control)
    assert f"User:processor may not write topic {processor.topics.control}" in str(refused.value)

    pid = f"sec-{uuid.uuid4().hex[:8]}"
    replica, labels = as_role(Role.REPLICA), as_role(Role.LABELS)
    with tempfile.TemporaryDirectory(prefix="security-run-") as tmp:
        run = new_run(processor, Path(tmp))
        # The worker reads its inputs, keeps its changelogs and writes feedback as `processor`.
        run.start_worker(0, free_port())
        try:
            produce_confirmed(
                make_producer(replica),
                replica.topics.predictions,
                [(pid.encode(), PREDICTION_CODEC.encode(prediction(pid)))],
            )
            produce_confirmed(
                make_producer(labels),
                labels.topics.outcomes,
                [(pid.encode(), OUTCOME_CODEC.encode(outcome(pid, truth=1.0)))],
            )
            joined = f"SELECT count() FROM feedback WHERE prediction_id = '{pid}'"
            landed = wait_for(lambda: run.count(joined) == 1, timeout_s=120)
            assert landed, run.worker_log("worker-0")
        finally:
            run.stop_all()
        assert "AuthorizationFailed" not in run.worker_log("worker-0")


def test_a_wrong_password_is_refused_naming_the_principal(as_role: RoleSettings) -> None:
    impostor = replace(as_role(Role.REPLICA), kafka_password=Secret("not-the-password"))
    with pytest.raises(KafkaAuthenticationError) as refused:
        write(impostor, impostor.topics.predictions)
    assert refused.value.principal == "User:replica"
    assert "refused to authenticate User:replica" in str(refused.value)


def test_an_anonymous_plaintext_client_gets_nothing_at_all(fresh: Settings) -> None:
    anonymous = replace(
        fresh,
        kafka_security="plaintext",
        kafka_username="",
        kafka_password=Secret(""),
        kafka_ca_file=None,
    )
    assert not cluster_answers(anonymous.bootstrap_servers, timeout=3.0)
    with pytest.raises(DeliveryError) as refused:
        produce_confirmed(
            make_producer(anonymous), fresh.topics.control, [(b"model", b"forged")], timeout_s=5
        )
    assert "answered User:ANONYMOUS" in str(refused.value)


def test_a_role_client_file_is_all_a_process_needs(
    fresh: Settings, kafka_security: SecurityPaths
) -> None:
    env = {
        "SAFELOOP_KAFKA_CLIENT_FILE": str(kafka_security.client_file(Role.LABELS.value)),
        "KAFKA_BOOTSTRAP_SERVERS": fresh.bootstrap_servers,
        "SAFELOOP_TOPIC_PREFIX": fresh.topic_prefix,
    }
    labels = Settings.from_env(env)
    assert labels.kafka_principal == "User:labels"
    assert labels.kafka_password and labels.kafka_password.value not in repr(labels)
    assert write(labels, labels.topics.outcomes) == 1


def test_secrets_are_readable_by_their_owner_only_and_never_logged(
    kafka_security: SecurityPaths,
) -> None:
    private = [
        kafka_security.password_file(ADMIN_USER),
        *(kafka_security.password_file(role.value) for role in Role),
        *(kafka_security.client_file(role.value) for role in Role),
        kafka_security.tls.ca_key,
        kafka_security.tls.broker_keystore,
        kafka_security.root / "server.properties",
    ]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    log = (kafka_security.root / "logs" / "server.log").read_text(errors="replace")
    for path in private[: 1 + len(Role)]:
        assert path.read_text().strip() not in log


def test_an_operator_adds_a_label_pipeline_s_credentials_with_the_cli(
    fresh: Settings,
    base_settings: Settings,
    kafka_security: SecurityPaths,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "SAFELOOP_KAFKA_CLIENT_FILE",
        "SAFELOOP_KAFKA_USERNAME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SAFELOOP_STATE_DIR", str(base_settings.state_dir))
    monkeypatch.setenv("SAFELOOP_KAFKA_SECURITY", "sasl_ssl")
    monkeypatch.setenv("SAFELOOP_KAFKA_PORT", str(fresh.kafka_port))
    monkeypatch.setenv("SAFELOOP_TOPIC_PREFIX", fresh.topic_prefix)
    user = f"labels-{uuid.uuid4().hex[:6]}"

    assert main(["kafka", "grant", "labels", "--user", user]) == 0
    out = capsys.readouterr().out
    client_file = kafka_security.client_file(user)
    assert f"User:{user} has the labels role's 1 ACLs" in out
    assert str(client_file) in out
    assert stat.S_IMODE(kafka_security.password_file(user).stat().st_mode) == 0o600

    pipeline = Settings.from_env(
        {
            "SAFELOOP_KAFKA_CLIENT_FILE": str(client_file),
            "KAFKA_BOOTSTRAP_SERVERS": fresh.bootstrap_servers,
            "SAFELOOP_TOPIC_PREFIX": fresh.topic_prefix,
        }
    )
    assert write(pipeline, pipeline.topics.outcomes) == 1
    with pytest.raises(KafkaAuthorizationError, match=f"User:{user} may not read topic"):
        read(pipeline, pipeline.topics.predictions, "replica-pipeline")
