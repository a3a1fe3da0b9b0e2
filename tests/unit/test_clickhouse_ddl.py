"""The ClickHouse DDL parses, is idempotent, matches the events, and behaves (in-process chDB)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safeloop.schemas.events import (
    ControlCommand,
    DeadLetter,
    FeedbackRecord,
    ModelConfig,
    OutcomeEvent,
    PredictionEvent,
    ReplicaStatus,
    RetrainingDecision,
)

chdb_session = pytest.importorskip("chdb.session")

DDL_DIR = Path(__file__).resolve().parents[2] / "schemas" / "clickhouse"
FILES = sorted(DDL_DIR.glob("*.sql"))
IDEMPOTENT = re.compile(
    r"^\s*(CREATE TABLE IF NOT EXISTS|CREATE OR REPLACE VIEW"
    r"|CREATE MATERIALIZED VIEW IF NOT EXISTS"
    r"|ALTER TABLE \w+ ADD COLUMN IF NOT EXISTS)\s",
    re.IGNORECASE,
)
TABLES = {
    "predictions": "model_name, model_version, route, timestamp, prediction_id",
    "outcomes": "prediction_id, timestamp, source, ground_truth",
    "feedback": "prediction_id, route",
    "dead_letters": "source_topic, consumer, source_partition, source_offset",
    "control_log": "model_name, issued_at, sequence, entry_type, command_id",
    "replica_status": "replica_id, timestamp",
    "retraining_decisions": "model_name, model_version, timestamp, decision_id",
    "health_metrics": "model_name, model_version, route, metric, window_start, window_end",
    "performance_metrics": "model_name, model_version, route, metric, window_start, window_end",
    "drift_metrics": (
        "model_name, model_version, route, metric, feature, window_start, window_end, "
        "segment_key, segment_value"
    ),
}
EVENT_TABLES: dict[str, type[Any]] = {
    "predictions": PredictionEvent,
    "outcomes": OutcomeEvent,
    "feedback": FeedbackRecord,
    "dead_letters": DeadLetter,
    "replica_status": ReplicaStatus,
    "retraining_decisions": RetrainingDecision,
}


def statements(path: Path) -> list[str]:
    """Split a DDL file the way the migrate tool does: at `;` ending a line."""
    parts = re.split(r";[ \t]*$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return [part.strip() for part in parts if _without_comments(part).strip()]


def _without_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


class Warehouse:
    """A thin wrapper over a chDB session: run DDL and DML, read rows as dicts."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def run(self, sql: str) -> None:
        self.session.query(sql)

    def rows(self, sql: str) -> list[dict[str, Any]]:
        text = self.session.query(sql, "JSONEachRow").data()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def columns(self, table: str) -> list[str]:
        return [
            row["name"]
            for row in self.rows(
                "SELECT name FROM system.columns WHERE database = currentDatabase() "
                f"AND table = '{table}' ORDER BY position"
            )
        ]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    # chDB allows one data path per process: close it so other tests can open theirs.
    session = chdb_session.Session(str(tmp_path_factory.mktemp("chdb")))
    try:
        db = Warehouse(session)
        for _ in range(2):  # twice: every statement must be idempotent
            for path in FILES:
                for sql in statements(path):
                    db.run(sql)
        yield db
    finally:
        session.close()


def test_files_are_numbered_and_idempotent() -> None:
    assert FILES, "no DDL files"
    numbers = [path.name.split("_", 1)[0] for path in FILES]
    assert all(re.fullmatch(r"\d{3}", n) for n in numbers)
    assert len(set(numbers)) == len(numbers)
    for path in FILES:
        for sql in statements(path):
            assert IDEMPOTENT.match(_without_comments(sql)), f"{path.name}: {sql[:60]}"
            # Tables are unqualified so the migrate tool chooses the database.
            assert not re.search(r"\b(TABLE|VIEW|FROM|JOIN)\s+\w+\.\w+", sql), path.name


def test_every_table_exists_with_its_sorting_key(warehouse: Warehouse) -> None:
    rows = warehouse.rows(
        "SELECT name, sorting_key FROM system.tables WHERE database = currentDatabase()"
    )
    keys = {row["name"]: row["sorting_key"] for row in rows}
    for table, key in TABLES.items():
        assert keys.get(table) == key, table
    assert "feedback_late" in keys


@pytest.mark.parametrize("table", list(EVENT_TABLES))
def test_tables_hold_every_event_field(warehouse: Warehouse, table: str) -> None:
    fields = [f.name for f in dataclasses.fields(EVENT_TABLES[table])]
    columns = warehouse.columns(table)
    assert [c for c in columns if c in fields] == fields


def test_control_log_holds_command_and_config_fields(warehouse: Warehouse) -> None:
    command = {f.name for f in dataclasses.fields(ControlCommand)} - {"config"}
    config = {f.name for f in dataclasses.fields(ModelConfig)}
    assert command | config <= set(warehouse.columns("control_log"))


def test_feedback_late_mirrors_feedback(warehouse: Warehouse) -> None:
    feedback = [c for c in warehouse.columns("feedback") if c != "ingested_at"]
    assert warehouse.columns("feedback_late") == [*feedback, "error"]


def _prediction_row(prediction_id: str, route: str, ts: int) -> str:
    return (
        f"('{prediction_id}', 'fraud', 'v2', fromUnixTimestamp64Milli({ts}, 'UTC'), "
        f"map('amount', 1.5), 0.7, 0.9, 3.0, '{route}', 'replica-1', 'user-1', 1, NULL)"
    )


def _feedback_row(
    prediction_id: str,
    route: str,
    status: str,
    outcome_ts: int | None,
    emitted: int,
    truth: float = 1.0,
) -> str:
    outcome = "NULL" if outcome_ts is None else f"fromUnixTimestamp64Milli({outcome_ts}, 'UTC')"
    truth_sql = "NULL" if outcome_ts is None else repr(truth)
    source = "NULL" if outcome_ts is None else "'labels'"
    return (
        f"('{prediction_id}', 'fraud', 'v2', '{route}', 'replica-1', map('amount', 1.5), 0.7, "
        f"0.9, fromUnixTimestamp64Milli(1000, 'UTC'), '{status}', {truth_sql}, {outcome}, NULL, "
        f"{source}, fromUnixTimestamp64Milli({emitted}, 'UTC'))"
    )


def test_feedback_late_pairs_every_label_the_join_missed(warehouse: Warehouse) -> None:
    day = 86_400_000
    prediction_columns = (
        "prediction_id, model_name, model_version, timestamp, features, prediction, "
        "confidence, latency_ms, route, replica_id, routing_key, routing_hash_version, error"
    )
    predictions = [
        _prediction_row("joined", "production", 1000),
        _prediction_row("joined", "shadow", 1000),  # shadow shares the id, was never joined
        _prediction_row("expired", "production", 1000),
        _prediction_row("corrected", "production", 1000),
        _prediction_row("unlabelled", "production", 1000),
    ]
    warehouse.run(f"INSERT INTO predictions ({prediction_columns}) VALUES {', '.join(predictions)}")
    warehouse.run(f"INSERT INTO predictions ({prediction_columns}) VALUES {predictions[0]}")
    warehouse.run(
        "INSERT INTO outcomes (prediction_id, ground_truth, timestamp, source) VALUES "
        f"('joined', 1, fromUnixTimestamp64Milli({day}, 'UTC'), 'labels'), "
        f"('expired', 0, fromUnixTimestamp64Milli({30 * day}, 'UTC'), 'labels'), "
        f"('corrected', 1, fromUnixTimestamp64Milli({day}, 'UTC'), 'labels'), "
        f"('corrected', 0, fromUnixTimestamp64Milli({2 * day}, 'UTC'), 'audit')"
    )
    feedback_columns = (
        "prediction_id, model_name, model_version, route, replica_id, features, prediction, "
        "confidence, prediction_timestamp, status, ground_truth, outcome_timestamp, "
        "label_delay_ms, outcome_source, emitted_at"
    )
    warehouse.run(
        f"INSERT INTO feedback ({feedback_columns}) VALUES "
        + ", ".join(
            [
                _feedback_row("joined", "production", "joined", day, day + 5),
                _feedback_row("expired", "production", "expired", None, 7 * day),
                _feedback_row("corrected", "production", "joined", day, day + 5),
            ]
        )
    )
    rows = warehouse.rows(
        "SELECT prediction_id, route, status, ground_truth, outcome_source, label_delay_ms "
        "FROM feedback_late ORDER BY prediction_id, route"
    )
    assert [(r["prediction_id"], r["route"]) for r in rows] == [
        ("corrected", "production"),  # the correction came after the join
        ("expired", "production"),  # the label came after the window
        ("joined", "shadow"),  # the shadow row was never joined
    ]
    by_id = {r["prediction_id"]: r for r in rows}
    assert by_id["corrected"]["ground_truth"] == 0
    assert by_id["corrected"]["outcome_source"] == "audit"
    assert by_id["expired"]["label_delay_ms"] == 30 * day - 1000
    assert {r["status"] for r in rows} == {"late"}


def test_a_late_correction_with_the_same_timestamp_shows_the_later_arrival(
    warehouse: Warehouse,
) -> None:
    prediction_columns = (
        "prediction_id, model_name, model_version, timestamp, features, prediction, "
        "confidence, latency_ms, route, replica_id, routing_key, routing_hash_version, error"
    )
    warehouse.run(
        f"INSERT INTO predictions ({prediction_columns}) VALUES "
        f"{_prediction_row('same-ts', 'production', 1000)}, "
        f"{_prediction_row('same-ts-joined', 'production', 1000)}"
    )
    # Two versions of each label with one timestamp: the later-arriving one (ingested_at) wins.
    warehouse.run(
        "INSERT INTO outcomes (prediction_id, ground_truth, timestamp, source, ingested_at) "
        "VALUES ('same-ts', 1, fromUnixTimestamp64Milli(5000, 'UTC'), 'labels', "
        "fromUnixTimestamp64Milli(6000, 'UTC')), "
        "('same-ts', 0, fromUnixTimestamp64Milli(5000, 'UTC'), 'labels', "
        "fromUnixTimestamp64Milli(9000, 'UTC')), "
        "('same-ts-joined', 1, fromUnixTimestamp64Milli(5000, 'UTC'), 'labels', "
        "fromUnixTimestamp64Milli(6000, 'UTC')), "
        "('same-ts-joined', 0, fromUnixTimestamp64Milli(5000, 'UTC'), 'labels', "
        "fromUnixTimestamp64Milli(9000, 'UTC'))"
    )
    feedback_columns = (
        "prediction_id, model_name, model_version, route, replica_id, features, prediction, "
        "confidence, prediction_timestamp, status, ground_truth, outcome_timestamp, "
        "label_delay_ms, outcome_source, emitted_at"
    )
    warehouse.run(
        f"INSERT INTO feedback ({feedback_columns}) VALUES "
        # The join took the first version; the correction came after its window.
        f"{_feedback_row('same-ts', 'production', 'joined', 5000, 6000, truth=1.0)}, "
        # The join took the correction itself: nothing is late.
        f"{_feedback_row('same-ts-joined', 'production', 'joined', 5000, 9000, truth=0.0)}"
    )
    rows = warehouse.rows(
        "SELECT prediction_id, ground_truth FROM feedback_late "
        "WHERE prediction_id LIKE 'same-ts%' ORDER BY prediction_id"
    )
    assert [(r["prediction_id"], r["ground_truth"]) for r in rows] == [("same-ts", 0.0)]


def test_feedback_newest_emission_wins(warehouse: Warehouse) -> None:
    columns = (
        "prediction_id, model_name, model_version, route, replica_id, features, prediction, "
        "confidence, prediction_timestamp, status, ground_truth, outcome_timestamp, "
        "label_delay_ms, outcome_source, emitted_at"
    )
    for row in [
        _feedback_row("dedup", "canary", "joined", 9000, 9100),
        _feedback_row("dedup", "canary", "expired", None, 5000),  # older, arrives later
        _feedback_row("dedup", "canary", "joined", 9000, 9100),  # a replay
    ]:
        warehouse.run(f"INSERT INTO feedback ({columns}) VALUES {row}")
    rows = warehouse.rows("SELECT status FROM feedback FINAL WHERE prediction_id = 'dedup'")
    assert rows == [{"status": "joined"}]


def test_retried_insert_is_deduplicated_by_token(warehouse: Warehouse) -> None:
    insert = (
        "INSERT INTO outcomes (prediction_id, ground_truth, timestamp, source) "
        "SETTINGS insert_deduplication_token = 'batch-42' "
        "VALUES ('retry', 1, fromUnixTimestamp64Milli(5000, 'UTC'), 'labels')"
    )
    warehouse.run(insert)
    warehouse.run(insert)
    rows = warehouse.rows("SELECT count() AS n FROM outcomes WHERE prediction_id = 'retry'")
    assert int(rows[0]["n"]) == 1


def test_outcomes_keep_every_correction_and_collapse_replays(warehouse: Warehouse) -> None:
    insert = (
        "INSERT INTO outcomes (prediction_id, ground_truth, timestamp, source) VALUES "
        "('versions', {truth}, fromUnixTimestamp64Milli({ts}, 'UTC'), 'labels')"
    )
    for truth, ts in [(1, 7000), (0, 7000), (0, 8000), (1, 7000)]:  # the last is a replay
        warehouse.run(insert.format(truth=truth, ts=ts))
    rows = warehouse.rows(
        "SELECT ground_truth, toUnixTimestamp64Milli(timestamp) AS ts FROM outcomes FINAL "
        "WHERE prediction_id = 'versions' ORDER BY ts, ground_truth"
    )
    assert [(r["ground_truth"], int(r["ts"])) for r in rows] == [(0, 7000), (1, 7000), (0, 8000)]
