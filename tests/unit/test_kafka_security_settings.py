"""How a process learns who it is to Kafka: settings, client files, librdkafka and faust configs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from safeloop.infra.exceptions import SettingsError
from safeloop.infra.kafka.broker_security import SecurityPaths, client_file_text
from safeloop.infra.kafka.certificates import TlsFiles, ensure_certificates
from safeloop.infra.kafka.clients import admin_client, consumer_config, producer_config
from safeloop.infra.kafka.secret_files import ensure_password, write_private
from safeloop.infra.settings import Settings
from safeloop.streams.app import broker_credentials


def test_plaintext_is_the_default_and_adds_nothing_to_client_configs() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_security == "plaintext"
    assert settings.kafka_principal == "User:ANONYMOUS"
    assert "security.protocol" not in producer_config(settings)
    assert broker_credentials(settings) is None


def test_sasl_ssl_reaches_producers_consumers_and_admin_clients(tmp_path: Path) -> None:
    password_file = tmp_path / "replica.password"
    password_file.write_text("s3cret-value\n")
    tls = TlsFiles(tmp_path / "tls")
    ensure_certificates(tls, ["127.0.0.1"])
    settings = Settings.from_env(
        {
            "SAFELOOP_KAFKA_SECURITY": "SASL_SSL",
            "SAFELOOP_KAFKA_USERNAME": "replica",
            "SAFELOOP_KAFKA_PASSWORD_FILE": str(password_file),
            "SAFELOOP_KAFKA_CA_FILE": str(tls.ca_cert),
        }
    )
    assert settings.kafka_principal == "User:replica"
    for config in (producer_config(settings), consumer_config(settings, "g")):
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.mechanisms"] == "SCRAM-SHA-512"
        assert config["sasl.username"] == "replica"
        assert config["sasl.password"] == "s3cret-value"
        assert config["ssl.ca.location"] == str(tls.ca_cert)
    assert admin_client(settings) is not None
    assert "s3cret-value" not in repr(settings)


def test_faust_gets_the_same_credentials_with_a_tls_context(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "SAFELOOP_KAFKA_SECURITY": "sasl_ssl",
            "SAFELOOP_KAFKA_USERNAME": "processor",
            "SAFELOOP_KAFKA_PASSWORD": "pw",
        }
    )
    credentials = broker_credentials(settings)
    assert credentials.username == "processor"
    assert credentials.password == "pw"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.ssl_context is not None


def test_a_client_file_fills_in_what_the_environment_leaves_out(tmp_path: Path) -> None:
    paths = SecurityPaths(tmp_path / "kafka")
    ensure_password(paths.password_file("labels"))
    settings = Settings()
    write_private(paths.client_file("labels"), client_file_text(settings, paths, "labels", "x"))
    from_file = Settings.from_env({"SAFELOOP_KAFKA_CLIENT_FILE": str(paths.client_file("labels"))})
    assert from_file.kafka_secured
    assert from_file.kafka_principal == "User:labels"
    assert from_file.kafka_password.value == paths.password_file("labels").read_text().strip()
    assert from_file.kafka_ca_file == paths.tls.ca_cert.resolve()
    overridden = Settings.from_env(
        {
            "SAFELOOP_KAFKA_CLIENT_FILE": str(paths.client_file("labels")),
            "SAFELOOP_KAFKA_USERNAME": "labels-crm",
        }
    )
    assert overridden.kafka_principal == "User:labels-crm"


def test_secret_files_are_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "admin.password"
    first = ensure_password(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ensure_password(path) == first
    assert len(first.value) >= 32


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SAFELOOP_KAFKA_SECURITY", "ssl-maybe"),
        ("SAFELOOP_KAFKA_SASL_MECHANISM", "PLAIN"),
        ("SAFELOOP_KAFKA_PASSWORD_FILE", "/nonexistent/password"),
        ("SAFELOOP_KAFKA_CLIENT_FILE", "/nonexistent/client.env"),
    ],
)
def test_bad_security_settings_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_security_settings_round_trip_for_child_processes() -> None:
    settings = Settings.from_env(
        {
            "SAFELOOP_KAFKA_SECURITY": "sasl_ssl",
            "SAFELOOP_KAFKA_USERNAME": "metrics",
            "SAFELOOP_KAFKA_PASSWORD": "pw",
            "SAFELOOP_KAFKA_CA_FILE": "/ca.pem",
            "SAFELOOP_DASHBOARD_PASSWORD": "dash",
        }
    )
    assert Settings.from_env(settings.to_env()) == settings
    assert set(settings.kafka_client_env()) >= {"SAFELOOP_KAFKA_USERNAME", "SAFELOOP_KAFKA_CA_FILE"}
