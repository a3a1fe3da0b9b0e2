"""Label files: CSV, JSON Lines and Parquet readers, and a resumed publish that doubles nothing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _fake_producer import FakeProducer

from safeloop.infra.settings import Settings
from safeloop.schemas.codec import OUTCOME_CODEC
from safeloop.schemas.outcome_batch import OutcomeTuple
from safeloop.services.publishing import checkpoint as checkpoints
from safeloop.services.publishing.checkpoint import default_checkpoint_path
from safeloop.services.publishing.exceptions import (
    CheckpointError,
    InputFileError,
    InvalidRecordError,
)
from safeloop.services.publishing.file_publish import FileJob, publish_file
from safeloop.services.publishing.outcome_publisher import OutcomePublisher
from safeloop.services.publishing.readers import FileFormat, format_of, open_rows

NOW_ISH = 1_764_400_000_000


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("prediction_id,ground_truth,timestamp\n" + "\n".join(rows) + "\n")
    return path


def test_csv_rows_are_text_mappings_and_a_ragged_line_is_a_rejection(tmp_path: Path) -> None:
    source = open_rows(write_csv(tmp_path / "l.csv", ["a,1,5", "b,0", "", "c,1,7"]))
    rows = list(source.rows())
    assert rows[0] == {"prediction_id": "a", "ground_truth": "1", "timestamp": "5"}
    assert isinstance(rows[1], InvalidRecordError)
    assert rows[1].problem == "has the wrong number of columns"
    assert rows[2] == {"prediction_id": "c", "ground_truth": "1", "timestamp": "7"}
    assert source.total_rows == 4  # an estimate from line counts: the blank line included
    assert list(source.rows(skip=2)) == [rows[2]]


def test_jsonl_rows_parse_objects_and_reject_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text(
        '{"prediction_id": "a", "ground_truth": 1}\nnot json\n\n[1, 2]\n{"prediction_id": "b"}\n'
    )
    rows = list(open_rows(path).rows())
    assert rows[0] == {"prediction_id": "a", "ground_truth": 1}
    assert isinstance(rows[1], InvalidRecordError) and rows[1].problem == "is not valid JSON"
    assert isinstance(rows[2], InvalidRecordError) and rows[2].problem == "is not an object"
    assert rows[3] == {"prediction_id": "b"}
    assert list(open_rows(path).rows(skip=3)) == [rows[3]]


def test_parquet_rows_keep_types_and_skip_across_batches(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr("safeloop.services.publishing.readers.PARQUET_BATCH_ROWS", 4)
    table = pa.table(
        {
            "prediction_id": [f"p{i}" for i in range(10)],
            "ground_truth": [float(i) for i in range(10)],
            "timestamp": pa.array([NOW_ISH + i for i in range(10)], pa.int64()),
        }
    )
    path = tmp_path / "l.parquet"
    pq.write_table(table, path)
    source = open_rows(path)
    assert source.total_rows == 10
    assert list(source.rows())[9] == {
        "prediction_id": "p9",
        "ground_truth": 9.0,
        "timestamp": NOW_ISH + 9,
    }
    assert [row["prediction_id"] for row in source.rows(skip=5)] == [f"p{i}" for i in range(5, 10)]  # type: ignore[index]


def test_formats_come_from_the_suffix_or_the_flag(tmp_path: Path) -> None:
    assert format_of(Path("x.ndjson")) is FileFormat.JSONL
    assert format_of(Path("x.PQ")) is FileFormat.PARQUET
    assert format_of(Path("x.txt"), "csv") is FileFormat.CSV
    with pytest.raises(InputFileError, match="--format"):
        format_of(Path("x.txt"))
    with pytest.raises(InputFileError, match="not a file"):
        open_rows(tmp_path / "missing.csv")
    bad = tmp_path / "bad.parquet"
    bad.write_text("no")
    with pytest.raises(InputFileError, match="not a readable Parquet"):
        open_rows(bad)


class FakeTail:
    """Topic end offsets as a count, and a scripted read-back of what was delivered."""

    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer
        self.read_back_from: dict[int, int] | None = None

    def end_offsets(self) -> dict[int, int]:
        return {0: len(self.producer.delivered)}

    def outcomes_since(self, offsets: dict[int, int]) -> Counter[OutcomeTuple]:
        self.read_back_from = offsets
        found: Counter[OutcomeTuple] = Counter()
        for message in self.producer.delivered[offsets[0] :]:
            event = OUTCOME_CODEC.decode(message.value())
            found[(event.prediction_id, event.ground_truth, event.timestamp, event.source)] += 1
        return found


def publisher_over(producer: FakeProducer) -> OutcomePublisher:
    return OutcomePublisher(Settings(topic_prefix="u."), producer=producer)  # type: ignore[arg-type]


def delivered_ids(producer: FakeProducer) -> list[str]:
    return [OUTCOME_CODEC.decode(m.value()).prediction_id for m in producer.delivered]


def test_a_file_publishes_in_confirmed_batches_and_counts_rejects(tmp_path: Path) -> None:
    rows = [f"p{i},{i % 2},{NOW_ISH}" for i in range(25)] + ["bad,nan,1", ",1,1"]
    source = open_rows(write_csv(tmp_path / "l.csv", rows))
    producer = FakeProducer()
    job = FileJob(source, tmp_path / "cp.json", default_source="l", batch_size=10)
    summary = publish_file(job, publisher_over(producer), FakeTail(producer))  # type: ignore[arg-type]
    assert (summary.rows, summary.published) == (27, 25)
    assert summary.rejected == {
        "ground_truth: must be a finite number": 1,
        "prediction_id: is missing": 1,
    }
    assert [e["index"] for e in summary.examples] == [25, 26]
    assert delivered_ids(producer) == [f"p{i}" for i in range(25)]
    assert {m.key() for m in producer.delivered} == {f"p{i}".encode() for i in range(25)}
    # Done is done: a rerun publishes nothing.
    again = publish_file(job, publisher_over(producer), FakeTail(producer))  # type: ignore[arg-type]
    assert again.already_finished and len(producer.delivered) == 25


def test_a_rerun_after_a_crash_mid_batch_sends_each_outcome_once(tmp_path: Path) -> None:
    rows = [f"p{i},1" for i in range(30)]
    path = tmp_path / "l.csv"
    path.write_text("prediction_id,ground_truth\n" + "\n".join(rows) + "\n")
    source = open_rows(path)
    producer = FakeProducer()
    job = FileJob(source, tmp_path / "cp.json", default_source="l", batch_size=10)

    class Crash(Exception):
        pass

    # The crashed run: batch 1 confirmed; batch 2 half delivered when the process died.
    publisher = publisher_over(producer)
    real_send = publisher.send
    calls = 0

    def send_then_die(batch: list[OutcomeTuple]) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            real_send(batch[:4])
            raise Crash
        return real_send(batch)

    publisher.send = send_then_die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        publish_file(job, publisher, FakeTail(producer))  # type: ignore[arg-type]
    state = checkpoints.load(job.checkpoint_path)
    assert state is not None and (state.rows_done, state.in_flight_row) == (10, 10)
    assert len(producer.delivered) == 14

    tail = FakeTail(producer)
    summary = publish_file(job, publisher_over(producer), tail)  # type: ignore[arg-type]
    assert tail.read_back_from == {0: 10}
    assert (summary.resumed_from_row, summary.already_delivered, summary.published) == (10, 4, 30)
    ids = delivered_ids(producer)
    assert sorted(ids) == sorted(f"p{i}" for i in range(30)) and len(ids) == len(set(ids))
    # Rows without a timestamp kept the first run's default: the read-back matched them.
    assert len({OUTCOME_CODEC.decode(m.value()).timestamp for m in producer.delivered}) == 1


def test_a_checkpoint_of_another_file_or_source_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", [f"p{i},1,{NOW_ISH}" for i in range(5)])
    producer = FakeProducer()
    job = FileJob(open_rows(path), tmp_path / "cp.json", default_source="l", batch_size=2)
    publish_file(job, publisher_over(producer), FakeTail(producer))  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="--source"):
        publish_file(
            FileJob(open_rows(path), job.checkpoint_path, default_source="other"),
            publisher_over(producer),
            FakeTail(producer),  # type: ignore[arg-type]
        )
    write_csv(path, [f"q{i},1,{NOW_ISH}" for i in range(6)])
    with pytest.raises(CheckpointError, match="--restart"):
        publish_file(job, publisher_over(producer), FakeTail(producer))  # type: ignore[arg-type]
    restarted = FileJob(open_rows(path), job.checkpoint_path, default_source="l", restart=True)
    summary = publish_file(restarted, publisher_over(producer), FakeTail(producer))  # type: ignore[arg-type]
    assert summary.published == 6


def test_the_default_checkpoint_lives_in_the_state_dir_per_file_and_topic(tmp_path: Path) -> None:
    one = default_checkpoint_path(tmp_path, Path("a/labels.csv"), "outcomes")
    assert one.parent == tmp_path / "outcome-publish" and one.name.startswith("labels.csv.")
    assert one != default_checkpoint_path(tmp_path, Path("a/labels.csv"), "x.outcomes")
    assert one != default_checkpoint_path(tmp_path, Path("b/labels.csv"), "outcomes")


def test_publish_reports_rejections_and_sends_the_rest(tmp_path: Path) -> None:
    producer = FakeProducer()
    publisher = OutcomePublisher(Settings(), producer=producer, batch_size=2)  # type: ignore[arg-type]
    records: list[Any] = [
        {"prediction_id": "a", "ground_truth": 1},
        {"prediction_id": "b", "ground_truth": float("nan")},
        {"prediction_id": "c", "ground_truth": "x"},
        {"prediction_id": "d", "ground_truth": 0, "timestamp": NOW_ISH},
        "not a record",
    ]
    result = publisher.publish(records)
    assert result.published == 2 and not result.ok
    assert [(r.index, r.prediction_id, r.reason) for r in result.rejected] == [
        (1, "b", "ground_truth: must be a finite number"),
        (2, "c", "ground_truth: is not a number"),
        (4, None, "record: is not an object"),
    ]
    assert delivered_ids(producer) == ["a", "d"]
    assert json.dumps(result.rejected[0].to_json())


def test_rows_by_column_are_tuples_in_the_asked_order_with_none_for_absent_columns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.csv"
    path.write_text("ground_truth,extra,prediction_id\n1,x,a\n0,y\nnan,z,c\n")
    columns = ("prediction_id", "ground_truth", "timestamp", "source")
    rows = list(open_rows(path).rows(columns=columns))
    assert rows[0] == ("a", "1", None, None)
    assert isinstance(rows[1], InvalidRecordError)
    assert rows[2] == ("c", "nan", None, None)
    table = pa.table({"source": ["s1", "s2"], "prediction_id": ["p1", "p2"]})
    pq.write_table(table, tmp_path / "l.parquet")
    assert list(open_rows(tmp_path / "l.parquet").rows(skip=1, columns=columns)) == [
        ("p2", None, None, "s2")
    ]


def test_cells_and_mappings_validate_to_the_same_outcomes_and_reasons(tmp_path: Path) -> None:
    publisher = publisher_over(FakeProducer())
    cells: list[Any] = [
        ("a", "1", None, None),
        ("b", "nan", None, "crm"),
        (None, "1", "5", None),
        ("d", "0", "2025-11-29T23:00:00Z", " "),
        ("e", True, NOW_ISH, "s"),
    ]
    names = ("prediction_id", "ground_truth", "timestamp", "source")
    mappings = [{k: v for k, v in zip(names, c, strict=True) if v is not None} for c in cells]
    by_cells = publisher.validate(cells, default_timestamp_ms=NOW_ISH)
    by_mappings = publisher.validate(mappings, default_timestamp_ms=NOW_ISH)
    assert by_cells == by_mappings
    assert [r.reason for r in by_cells[1]] == [
        "ground_truth: must be a finite number",
        "prediction_id: is missing",
        "source: must not be empty",
    ]
    assert [r.prediction_id for r in by_cells[1]] == ["b", None, "d"]
