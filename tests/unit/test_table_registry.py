"""The table registry matches the DDL: each registered table has exactly the DDL's columns less
those the server fills, identity columns that exist, and rows of the right width."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _stream_events import outcome, prediction

from safeloop.schemas.events import (
    CommandKind,
    ControlCommand,
    DeadLetter,
    FeedbackRecord,
    FeedbackStatus,
    ModelConfig,
    RetrainingDecision,
    Route,
    Urgency,
)
from safeloop.schemas.tables import (
    TABLES,
    ControlLogEntry,
    MetricRow,
    ProgressMark,
    RetrainingStep,
    Table,
)

chdb_session = pytest.importorskip("chdb.session")

DDL_DIR = Path(__file__).resolve().parents[2] / "schemas" / "clickhouse"
# DDL tables that no registered writer fills, each for its reason, so that a new table cannot
# be left out of the registry silently: materialised views fill the first three; nothing writes
# replica_status yet (replicas report on the replica-status topic).
NOT_WRITTEN = frozenset(
    {"serving_minutes_agg", "serving_hours_agg", "segment_hours_agg", "replica_status"}
)

NOW = 1_700_000_000_000
COMMAND = ControlCommand(
    command_id="c1",
    model_name="churn",
    kind=CommandKind.ROLLBACK,
    sequence=3,
    issued_at=NOW,
    issuer="guard",
    reason="error rate",
    config=ModelConfig(production_version="v1"),
    key_id="ops",
    signature="sig",
)
SAMPLES: dict[str, object] = {
    "predictions": prediction(ts=NOW),
    "outcomes": outcome(ts=NOW),
    "feedback": FeedbackRecord(
        "p1",
        "churn",
        "v1",
        Route.PRODUCTION,
        "r",
        {"x": 1.0},
        0.7,
        0.7,
        NOW,
        FeedbackStatus.JOINED,
        1.0,
        NOW + 5,
        5,
        "labels",
        NOW + 6,
    ),
    "dead_letters": DeadLetter(
        "predictions", 1, 9, b"k", b"v", "bad_marker: x", "bad_marker", NOW, "safeloop-streams"
    ),
    "control_log": ControlLogEntry(COMMAND, "command"),
    "retraining_decisions": RetrainingDecision(
        "d1", "churn", "v1", NOW, True, Urgency.ELEVATED, "drift", 0.4, None, ["x"]
    ),
    "retraining_steps": RetrainingStep(
        "d1", "churn", "v1", "v1-rab", "shadowing", 2, NOW, "safeloop-retrain", "in shadow", "{}"
    ),
    "health_metrics": MetricRow("churn", "v1", "production", NOW, NOW + 1, "error_rate", 0.1, 10),
    "performance_metrics": MetricRow("churn", "v1", "canary", NOW, NOW + 1, "accuracy", 0.9, 10),
    "drift_metrics": MetricRow(
        "churn", "v1", "production", NOW, NOW + 1, "psi", 0.2, 10, feature="x"
    ),
    "segment_metrics": MetricRow(
        "churn",
        "v1",
        "canary",
        NOW,
        NOW + 1,
        "error_rate",
        0.1,
        300,
        segment_key="country",
        segment_value="BR",
    ),
    "stream_progress": ProgressMark("safeloop-streams", "predictions", 3, 1_234),
}


@pytest.fixture(scope="module")
def ddl_columns(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, list[tuple[str, str]]]]:
    """table -> [(column, default_kind)] as the engine reads the DDL (in-process chDB)."""
    session = chdb_session.Session(str(tmp_path_factory.mktemp("chdb-registry")))
    try:
        for path in sorted(DDL_DIR.glob("*.sql")):
            for sql in re.split(r";[ \t]*$", path.read_text(), flags=re.MULTILINE):
                if any(
                    line.strip() and not line.strip().startswith("--") for line in sql.splitlines()
                ):
                    session.query(sql)
        text = session.query(
            "SELECT table, name, default_kind FROM system.columns "
            "WHERE database = currentDatabase() AND table IN "
            "(SELECT name FROM system.tables WHERE database = currentDatabase() "
            "AND engine LIKE '%MergeTree') ORDER BY table, position",
            "JSONEachRow",
        ).data()
        found: dict[str, list[tuple[str, str]]] = {}
        for line in text.splitlines():
            row = json.loads(line)
            found.setdefault(row["table"], []).append((row["name"], row["default_kind"]))
        yield found
    finally:
        session.close()


def test_every_ddl_table_is_registered_or_known_unwritten(
    ddl_columns: dict[str, list[tuple[str, str]]],
) -> None:
    assert set(ddl_columns) - NOT_WRITTEN == set(TABLES)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_registered_columns_are_the_ddl_columns_the_server_does_not_fill(
    ddl_columns: dict[str, list[tuple[str, str]]], name: str
) -> None:
    insertable = [column for column, default_kind in ddl_columns[name] if default_kind == ""]
    assert list(TABLES[name].columns) == insertable


@pytest.mark.parametrize("name", sorted(TABLES))
def test_a_built_row_has_one_value_per_column(name: str) -> None:
    table: Table[Any] = TABLES[name]
    (row,) = table.rows([SAMPLES[name]])
    assert len(row) == len(table.columns)
    assert table.identity(row)


def test_identity_columns_must_be_columns() -> None:
    with pytest.raises(ValueError, match="identity columns"):
        Table("t", ("a",), tuple, identity_columns=("b",))


def test_same_rows_same_token_other_rows_other_token() -> None:
    table = TABLES["feedback"]
    rows = table.rows([SAMPLES["feedback"]])
    assert table.dedup_token(rows) == table.dedup_token(list(rows))
    later = (*rows[0][:14], NOW + 99)  # a newer version of the same feedback row
    assert table.dedup_token([later]) != table.dedup_token(rows)
