"""Publishing from outside against the real broker, processor and ClickHouse: predictions from
PredictionLogger, outcomes from CSV / JSON Lines / Parquet through `safeloop outcomes publish` and
from the HTTP ingest all join; rejects come back with reasons; a publish killed with SIGKILL and
rerun lands every outcome exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _stream_harness import REPO, Run, free_port, new_run, now_ms, wait_for

from safeloop.schemas.codec import OUTCOME_CODEC
from safeloop.services.publishing import OutcomePublisher, PredictionLogger

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(stack: Any) -> Iterator[Run]:
    with tempfile.TemporaryDirectory(prefix="publish-run-") as tmp:
        current = new_run(stack.fresh("publish"), Path(tmp), window_ms=600_000)
        current.start_worker(0, free_port())
        yield current
        current.stop_all()


def cli(run: Run, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safeloop.services.cli.main", *args],
        cwd=REPO,
        env=run.env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def post(url: str, payload: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def ingest(run: Run) -> Iterator[str]:
    port = free_port()
    with (run.state_dir / "ingest.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "safeloop.services.cli.main", "ingest", "--port", str(port)],
            cwd=REPO,
            env=run.env,
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        assert wait_for(healthy, 60), (run.state_dir / "ingest.log").read_text()
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def joined(run: Run, prefix: str) -> int:
    return run.count(
        "SELECT count() FROM feedback FINAL "
        f"WHERE startsWith(prediction_id, '{prefix}') AND status = 'joined'"
    )


def test_logger_predictions_and_outcomes_from_every_door_join(
    run: Run, ingest: str, tmp_path: Path
) -> None:
    ids = [f"door-{i:03d}" for i in range(40)]
    with PredictionLogger(run.settings, replica_id="own-stack") as logger:
        for pid in ids:
            logger.log("churn", "v1", {"age": 41.0}, 0.7, 0.9, latency_ms=1.2, prediction_id=pid)
    assert logger.stats().delivered == 40 and logger.dropped == 0

    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(
        "prediction_id,ground_truth,timestamp\n"
        + "".join(f"{pid},1,{now_ms()}\n" for pid in ids[:10])
    )
    jsonl_path = tmp_path / "labels.jsonl"
    jsonl_path.write_text(
        "".join(json.dumps({"prediction_id": p, "ground_truth": 0}) + "\n" for p in ids[10:20])
    )
    parquet_path = tmp_path / "labels.parquet"
    pq.write_table(
        pa.table({"prediction_id": ids[20:30], "ground_truth": [1.0] * 10, "source": ["pq"] * 10}),
        parquet_path,
    )
    for path in (csv_path, jsonl_path, parquet_path):
        done = cli(run, "outcomes", "publish", str(path), "--json")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert (summary["published"], summary["rejected"]) == (10, 0)

    status, body = post(
        f"{ingest}/outcomes",
        [{"prediction_id": pid, "ground_truth": 1, "source": "http"} for pid in ids[30:]],
    )
    assert (status, body["accepted"], body["rejected"]) == (200, 10, 0)

    assert wait_for(lambda: joined(run, "door-") == 40, 120), run.worker_log("worker-0")
    sources = run.query(
        "SELECT outcome_source, count() FROM feedback FINAL WHERE startsWith(prediction_id, "
        "'door-') GROUP BY outcome_source ORDER BY outcome_source"
    )
    assert sources == [("http", 10), ("labels", 20), ("pq", 10)]
    replicas = run.query(
        "SELECT DISTINCT replica_id FROM feedback FINAL WHERE startsWith(prediction_id, 'door-')"
    )
    assert replicas == [("own-stack",)]


def test_predictions_over_http_join_outcomes_from_the_python_publisher(
    run: Run, ingest: str
) -> None:
    rows = [
        {"prediction_id": f"http-{i}", "model_name": "churn", "model_version": "v2",
         "prediction": 0.4, "features": {"age": 3}}
        for i in range(5)
    ]  # fmt: skip
    status, body = post(f"{ingest}/predictions", [*rows, {"model_name": "churn"}])
    assert status == 200
    assert (body["accepted"], body["rejected"]) == (5, 1)
    assert body["results"][5]["reason"] == "model_version: is missing"
    with OutcomePublisher(run.settings, default_source="pipeline") as publisher:
        result = publisher.publish(
            [{"prediction_id": f"http-{i}", "ground_truth": i % 2} for i in range(5)]
            + [{"prediction_id": "http-x", "ground_truth": float("nan")}]
        )
    assert result.published == 5
    assert result.reasons() == {"ground_truth: must be a finite number": 1}
    assert wait_for(lambda: joined(run, "http-") == 5, 120), run.worker_log("worker-0")


def test_rejected_rows_are_reported_with_reasons_and_fail_the_command(
    run: Run, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text("prediction_id,ground_truth\nrej-1,1\nrej-2,nan\n,1\nrej-4,maybe\nrej-5,NaN\n")
    done = cli(run, "outcomes", "publish", str(path), "--json")
    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert (summary["published"], summary["rejected"]) == (1, 4)
    assert summary["reasons"] == {
        "ground_truth: must be a finite number": 2,
        "ground_truth: is not a number": 1,
        "prediction_id: is missing": 1,
    }
    again = cli(run, "outcomes", "publish", str(path), "--restart", "--allow-rejects")
    assert again.returncode == 0, again.stderr
    assert "2  ground_truth: must be a finite number" in again.stdout


def test_a_publish_killed_mid_file_resumes_and_lands_each_outcome_once(
    stack: Any, tmp_path: Path
) -> None:
    fresh = new_run(stack.fresh("resume"), tmp_path, window_ms=600_000)
    fresh.start_worker(0, free_port())
    try:
        rows = 40_000
        path = tmp_path / "big.csv"
        stamp = now_ms()
        path.write_text(
            "prediction_id,ground_truth,timestamp\n"
            + "".join(f"resume-{i:06d},{i % 2},{stamp}\n" for i in range(rows))
        )
        checkpoint = tmp_path / "big.checkpoint.json"
        command = [
            sys.executable, "-m", "safeloop.services.cli.main", "outcomes", "publish", str(path),
            "--batch-size", "1000", "--checkpoint", str(checkpoint), "--json",
        ]  # fmt: skip
        first = subprocess.Popen(command, cwd=REPO, env=fresh.env, stdout=subprocess.DEVNULL)

        def mid_file() -> bool:
            try:
                state = json.loads(checkpoint.read_text())
            except (OSError, ValueError):
                return False
            return bool(state["rows_done"] >= 5_000)

        assert wait_for(mid_file, 120, 0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        interrupted = json.loads(checkpoint.read_text())
        assert not interrupted["finished"] and interrupted["rows_done"] < rows

        second = subprocess.run(
            command, cwd=REPO, env=fresh.env, capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 0, second.stderr
        summary = json.loads(second.stdout)
        assert summary["resumed_from_row"] == interrupted["rows_done"]
        assert (summary["rows"], summary["published"], summary["rejected"]) == (rows, rows, 0)

        # In Kafka: every outcome exactly once.
        messages = fresh.consume_all(fresh.topics.outcomes, rows + 1, timeout_s=60)
        ids = [OUTCOME_CODEC.decode(m.value()).prediction_id for m in messages]
        assert len(ids) == rows and len(set(ids)) == rows

        # In ClickHouse, without FINAL: as many rows as distinct outcomes.
        counts = "SELECT count(), uniqExact(prediction_id) FROM outcomes"
        assert wait_for(lambda: fresh.query(counts)[0][1] == rows, 180), fresh.worker_log(
            "worker-0"
        )
        assert fresh.query(counts) == [(rows, rows)]
    finally:
        fresh.stop_all()
