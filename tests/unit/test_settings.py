"""Settings are parsed once, explicitly, and never leak secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from safeloop.infra.exceptions import SettingsError
from safeloop.infra.settings import Secret, Settings


def test_defaults_point_at_the_local_broker_and_embedded_endpoint() -> None:
    settings = Settings.from_env({})
    assert settings.uses_local_kafka
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.uses_embedded_clickhouse
    assert settings.clickhouse_endpoint == "http://127.0.0.1:8123"


def test_external_cluster_and_server_replace_the_local_ones() -> None:
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092", "CLICKHOUSE_URL": "https://ch:8443"}
    )
    assert not settings.uses_local_kafka
    assert settings.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.clickhouse_endpoint == "https://ch:8443"


def test_topic_prefix_applies_to_every_topic() -> None:
    topics = Settings.from_env({"SAFELOOP_TOPIC_PREFIX": "t1."}).topics
    assert topics.control == "t1.control"
    assert all(name.startswith("t1.") for name in topics.all())
    assert len(set(topics.all())) == 9


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SAFELOOP_PARTITIONS", "zero"),
        ("SAFELOOP_PARTITIONS", "0"),
        ("SAFELOOP_KAFKA_PORT", "70000"),
        ("CLICKHOUSE_URL", "ch:8123"),
        ("CLICKHOUSE_DATABASE", "safe;drop"),
        ("SAFELOOP_LOG_LEVEL", "LOUD"),
        ("SAFELOOP_JOIN_WINDOW_MS", "30d"),
        ("SAFELOOP_JOIN_WINDOW_MS", "0"),
        ("SAFELOOP_JOIN_WINDOWS", "clicks"),
        ("SAFELOOP_JOIN_WINDOWS", "=5"),
        ("SAFELOOP_JOIN_WINDOWS", "clicks=soon"),
        ("SAFELOOP_JOIN_WINDOWS", "clicks=-4"),
        ("SAFELOOP_EARLY_OUTCOME_WAIT_MS", "-1"),
        ("SAFELOOP_STREAM_ROCKSDB_MEMORY_MB", "0"),
        ("SAFELOOP_STREAM_ROCKSDB_MEMORY_MB", "16MB"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({variable: value})
    assert variable in str(info.value)
    assert info.value.name == variable


def test_password_never_appears_in_repr() -> None:
    settings = Settings.from_env({"CLICKHOUSE_PASSWORD": "hunter2"})
    assert settings.clickhouse_password.value == "hunter2"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.clickhouse_password)
    assert not Secret("")


def test_paths_come_from_the_environment() -> None:
    settings = Settings.from_env({"SAFELOOP_STATE_DIR": "/tmp/s", "SAFELOOP_CACHE_DIR": "/tmp/c"})
    assert settings.state_dir == Path("/tmp/s")
    assert settings.cache_dir == Path("/tmp/c")


def test_to_env_round_trips_for_child_processes() -> None:
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
            "CLICKHOUSE_URL": "http://ch:8123",
            "CLICKHOUSE_PASSWORD": "pw",
            "SAFELOOP_TOPIC_PREFIX": "x.",
            "SAFELOOP_MODEL_DIR": "/models",
            "SAFELOOP_CONTROL_KEY": "ab" * 16,
            "SAFELOOP_PARTITIONS": "8",
            "SAFELOOP_JOIN_WINDOW_MS": "2000",
            "SAFELOOP_JOIN_WINDOWS": "clicks=60000, churn=7776000000",
            "SAFELOOP_EARLY_OUTCOME_WAIT_MS": "3000",
            "SAFELOOP_STREAM_ROCKSDB_MEMORY_MB": "64",
            "SAFELOOP_MODEL_STORE": "mlflow",
            "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        }
    )
    assert settings.join_windows_ms == (("clicks", 60_000), ("churn", 7_776_000_000))
    assert settings.early_outcome_wait_ms == 3000
    assert settings.stream_rocksdb_memory_mb == 64
    assert Settings.from_env(settings.to_env()) == settings
    assert Settings.from_env(Settings().to_env()) == Settings()


def test_mlflow_registry_is_embedded_under_state_unless_a_server_is_named() -> None:
    embedded = Settings.from_env({"SAFELOOP_STATE_DIR": "/tmp/s"})
    assert embedded.model_store == "folder"
    assert embedded.mlflow_uri == "sqlite:////tmp/s/mlflow/mlflow.db"
    assert embedded.mlflow_artifact_root == Path("/tmp/s/mlflow/artifacts")
    server = Settings.from_env(
        {"SAFELOOP_MODEL_STORE": "MLflow", "MLFLOW_TRACKING_URI": "https://u:hunter2@ml:5000"}
    )
    assert server.model_store == "mlflow"
    assert server.mlflow_uri == "https://u:hunter2@ml:5000"
    assert server.mlflow_artifact_root is None
    assert "hunter2" not in repr(server)
    with pytest.raises(SettingsError, match="SAFELOOP_MODEL_STORE"):
        Settings.from_env({"SAFELOOP_MODEL_STORE": "s3"})


def test_join_windows_default_to_thirty_days_and_no_overrides() -> None:
    settings = Settings.from_env({})
    assert settings.join_window_ms == 30 * 24 * 3600 * 1000
    assert settings.join_windows_ms == ()
    assert settings.early_outcome_wait_ms == 3600 * 1000
