"""The ACL table: each role gets exactly its topics, and the processor's names match faust's."""

from __future__ import annotations

import datetime as dt
import ipaddress
from concurrent.futures import Future
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException
from cryptography import x509

from safeloop.infra.exceptions import KafkaAdminError
from safeloop.infra.kafka.admin_retry import until_done
from safeloop.infra.kafka.broker_security import (
    BrokerSecurity,
    scram_format_argument,
    secured_properties,
)
from safeloop.infra.kafka.certificates import TlsFiles, ensure_certificates
from safeloop.infra.kafka.roles import (
    Access,
    Grant,
    Resource,
    Role,
    acl_bindings,
    role_grants,
)
from safeloop.infra.settings import Secret, Settings
from safeloop.streams.app import StreamConfig, app_id_for

SETTINGS = Settings(topic_prefix="p.")


def _topics(role: Role, access: Access) -> set[str]:
    return {
        g.name
        for g in role_grants(SETTINGS)
        if g.role is role and g.access is access and g.resource is Resource.TOPIC and not g.prefixed
    }


def test_only_operators_and_the_guard_write_control() -> None:
    writers = {
        g.role for g in role_grants(SETTINGS) if g.name == "p.control" and g.access != "READ"
    }
    assert writers == {Role.OPERATOR, Role.METRICS}


def test_each_role_writes_exactly_its_topics() -> None:
    assert _topics(Role.REPLICA, Access.WRITE) == {"p.predictions", "p.replica-status"}
    assert _topics(Role.LABELS, Access.WRITE) == {"p.outcomes"}
    assert _topics(Role.PROCESSOR, Access.WRITE) == {
        "p.feedback",
        "p.dead-letter",
        "p.join-repartition",
    }
    assert _topics(Role.METRICS, Access.WRITE) == {
        "p.retraining",
        "p.control",
        "p.dead-letter",
        "p.metrics-summaries",
    }
    assert _topics(Role.OPERATOR, Access.WRITE) == {"p.control"}


def test_each_role_reads_exactly_its_topics() -> None:
    assert _topics(Role.REPLICA, Access.READ) == {"p.control"}
    assert _topics(Role.LABELS, Access.READ) == set()
    assert _topics(Role.PROCESSOR, Access.READ) == {
        "p.predictions",
        "p.outcomes",
        "p.join-repartition",
    }
    assert _topics(Role.METRICS, Access.READ) == {
        "p.predictions",
        "p.feedback",
        "p.control",
        "p.retraining",
        "p.metrics-summaries",
    }
    assert _topics(Role.OPERATOR, Access.READ) == {"p.control", "p.replica-status"}


def test_the_processor_owns_faust_s_group_and_internal_topics_only() -> None:
    app_id = app_id_for(SETTINGS, StreamConfig())
    prefixed = [g for g in role_grants(SETTINGS) if g.prefixed and g.role is Role.PROCESSOR]
    assert Grant(Role.PROCESSOR, Access.ALL, Resource.TOPIC, f"{app_id}-", True) in prefixed
    assert Grant(Role.PROCESSOR, Access.READ, Resource.GROUP, app_id, True) in prefixed
    # No role may do everything with every topic.
    assert all(g.name for g in role_grants(SETTINGS))


def test_bindings_name_each_role_s_user() -> None:
    usernames = {role: f"u-{role.value}" for role in Role}
    bindings = acl_bindings(role_grants(SETTINGS), usernames)
    assert {b.principal for b in bindings} == {f"User:u-{role.value}" for role in Role}


def test_the_broker_refuses_by_default_and_keeps_super_users_to_the_admin(tmp_path: Path) -> None:
    security = BrokerSecurity(Secret('pa"ss'), TlsFiles(tmp_path))
    properties = secured_properties(Settings(kafka_port=9192), security)
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert properties["super.users"] == "User:admin;User:safeloop-broker"
    assert properties["listeners"].startswith("SASL_SSL://127.0.0.1:9192,CONTROLLER://")
    assert "CONTROLLER:SSL" in properties["listener.security.protocol.map"]
    assert properties["listener.name.controller.ssl.client.auth"] == "required"
    jaas = properties["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert 'password="pa\\"ss";' in jaas


def test_the_format_argument_carries_a_salted_password_never_the_password() -> None:
    argument = scram_format_argument("SCRAM-SHA-512", "admin", Secret("hunter2-long-password"))
    assert argument.startswith("SCRAM-SHA-512=[name=admin,iterations=")
    assert "saltedpassword=" in argument
    assert "hunter2" not in argument


def test_the_broker_certificate_names_its_hosts_and_is_signed_by_the_ca(tmp_path: Path) -> None:
    files = TlsFiles(tmp_path / "tls")
    assert ensure_certificates(files, ["127.0.0.1", "localhost"])
    assert not ensure_certificates(files, ["127.0.0.1", "localhost"])  # reused
    chain = x509.load_pem_x509_certificates(files.broker_keystore.read_bytes())
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    broker = chain[0]
    broker.verify_directly_issued_by(ca)
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert broker.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=300)
    assert b"PRIVATE KEY" in files.broker_keystore.read_bytes()
    # A new host needs a new certificate.
    assert ensure_certificates(files, ["10.0.0.5"])


def _future(error: int | None) -> Future[None]:
    future: Future[None] = Future()
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(KafkaException(KafkaError(error)))
    return future


def test_admin_requests_a_restarted_controller_times_out_are_retried_for_the_failed_items() -> None:
    submitted: list[list[str]] = []
    outcomes = iter([{"a": None, "b": KafkaError._TIMED_OUT}, {"b": None}])

    def submit(items: list[str]) -> dict[str, Future[None]]:
        submitted.append(items)
        answers = next(outcomes)
        return {item: _future(answers[item]) for item in items}

    until_done(submit, ["a", "b"], lambda item: f"creating {item}", sleep=lambda _: None)
    assert submitted == [["a", "b"], ["b"]]


def test_an_admin_request_refused_for_good_fails_at_once_naming_the_item() -> None:
    calls = 0

    def submit(items: list[str]) -> dict[str, Future[None]]:
        nonlocal calls
        calls += 1
        return {item: _future(KafkaError.TOPIC_AUTHORIZATION_FAILED) for item in items}

    with pytest.raises(KafkaAdminError, match="creating a failed"):
        until_done(submit, ["a"], lambda item: f"creating {item}", sleep=lambda _: None)
    assert calls == 1


def test_retrying_an_admin_request_stops_at_its_deadline() -> None:
    def submit(items: list[str]) -> dict[str, Future[None]]:
        return {item: _future(KafkaError._TIMED_OUT) for item in items}

    with pytest.raises(KafkaAdminError, match=r"creating a failed: .*(Timed out|TIMED_OUT)"):
        until_done(submit, ["a"], lambda item: f"creating {item}", retry_for_s=0.0)
