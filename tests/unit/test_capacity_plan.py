"""`safeloop plan`'s arithmetic: the benchmark's figures scaled to a prediction rate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from safeloop.infra.duration import parse_duration_s
from safeloop.services.cli.main import main
from safeloop.streams.capacity import MeasuredFigures, plan

FIGURES = MeasuredFigures(
    worker_cpu_us_per_event=50.0,
    memory_bytes_per_pending=500.0,
    rocksdb_bytes_per_pending=400.0,
    prediction_bytes=300,
    outcome_bytes=60,
    feedback_bytes=350,
    key_bytes=36,
    clickhouse_bytes_per_row={"predictions": 40.0, "outcomes": 10.0, "feedback": 50.0},
    source="test",
)


def test_cpu_per_event_sets_workers_and_partitions_leave_room_to_double() -> None:
    result = plan(FIGURES, 100_000, 3600)
    assert result.events_per_s == 200_000
    assert result.worker_cores == pytest.approx(10.0)
    assert result.workers == math.ceil(10.0 / 0.7) == 15
    assert result.partitions == 32  # the power of two at or above twice the workers
    assert plan(FIGURES, 1, 60).workers == 1
    assert plan(FIGURES, 1, 60).partitions == 4


def test_state_lives_for_the_window_and_rows_accumulate_per_day() -> None:
    result = plan(FIGURES, 1_000, parse_duration_s("1d"), parse_duration_s("30d"))
    pending = 1_000 * 30 * 86_400
    assert result.pending_entries == pending
    assert result.rocksdb_bytes == pending * 400
    assert result.memory_bytes_per_worker == pending * 500 / result.workers
    assert result.clickhouse_rows_per_day == 3 * 1_000 * 86_400
    assert result.clickhouse_bytes_per_day == 1_000 * 86_400 * (40 + 10 + 50)
    # Without a window, state lives as long as the label delay.
    assert plan(FIGURES, 1_000, 600).pending_entries == 600_000


def test_broker_throughput_counts_sources_changelogs_and_feedback() -> None:
    result = plan(FIGURES, 10, 60)
    sources = 10 * (300 + 60)
    changelog = 10 * 2 * (36 + 300) + 10 * 60
    assert result.broker_in_bytes_per_s == sources + changelog + 10 * 350
    assert result.broker_out_bytes_per_s == sources + 10 * 350


def test_durations_and_bad_inputs() -> None:
    assert parse_duration_s("90") == 90
    assert parse_duration_s("30m") == 1800
    assert parse_duration_s("2w") == 14 * 86_400
    assert parse_duration_s("250ms") == 0.25
    assert parse_duration_s(" 1.5H ") == 5400
    for bad in ("xyz", "", "5 days", "-3d", "1e3"):
        with pytest.raises(ValueError, match="a duration looks like 90, 250ms, 45s"):
            parse_duration_s(bad)
    with pytest.raises(ValueError):
        plan(FIGURES, 0, 60)
    with pytest.raises(ValueError):
        plan(FIGURES, 10, 0)


def test_figures_come_from_a_results_file_and_the_cli_prints_the_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = {
        "throughput": [
            {"worker_cpu_us_per_event": 40.0, "clickhouse_bytes_per_row": {"feedback": 50.0}},
            {"worker_cpu_us_per_event": 50.0, "clickhouse_bytes_per_row": {"feedback": 45.0}},
        ],
        "footprint": {"memory_mb_per_million": 500.0, "rocksdb_disk_mb_per_million": 400.0},
        "record_bytes": {"prediction": 300, "outcome": 60, "feedback": 350, "key": 36},
    }
    path = tmp_path / "stream_join.json"
    path.write_text(json.dumps(results))
    figures = MeasuredFigures.from_results(path)
    assert figures.worker_cpu_us_per_event == 50.0  # the worse of the runs
    assert figures.clickhouse_bytes_per_row == {"feedback": 50.0}
    assert figures.rocksdb_bytes_per_pending == pytest.approx(400 * 2**20 / 1e6)
    argv = ["plan", "--predictions-per-s", "1000", "--label-delay", "1d", "--window", "30d"]
    assert main([*argv, "--figures", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["pending_entries"] == 1000 * 30 * 86_400
    assert printed["workers"] == 1
    assert main([*argv, "--figures", str(path)]) == 0
    assert "workers / partitions" in capsys.readouterr().out
    assert main([*argv, "--figures", str(tmp_path / "missing.json")]) == 2
