"""Segment attributes through the real broker, the stream join and ClickHouse: predictions,
joined feedback and late labels (feedback_late) all carry the prediction's segments; an old
producer (PredictionEvent v4, before segments) shares the topic and its rows land with none."""

from __future__ import annotations

import io
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _stream_harness import Run, free_port, new_run, now_ms, outcome, prediction, wait_for
from fastavro import schemaless_writer

from safeloop.schemas.codec import MARKER
from safeloop.schemas.events import PredictionEvent
from safeloop.schemas.registry import HISTORY_DIR, SchemaRegistry, default_registry, load_avsc

pytestmark = pytest.mark.integration

WINDOW_MS = 600_000


@pytest.fixture
def run(stack, tmp_path: Path) -> Any:  # type: ignore[no-untyped-def]
    current = new_run(stack.fresh("segments"), tmp_path, window_ms=WINDOW_MS)
    current.start_worker(0, free_port())
    yield current
    current.stop_all()


def _v4_bytes(event: PredictionEvent) -> bytes:
    """The event as a producer built before segments would write it."""
    entry = default_registry().get(
        SchemaRegistry().register(load_avsc(HISTORY_DIR / "prediction_event.v4.avsc")).fingerprint
    )
    assert entry is not None
    record = {name: getattr(event, name) for name in PredictionEvent.__dataclass_fields__}
    del record["segments"]
    record["route"] = event.route.value
    out = io.BytesIO()
    out.write(MARKER + entry.fingerprint)
    schemaless_writer(out, entry.parsed, record)
    return out.getvalue()


def test_segments_reach_predictions_feedback_and_late_labels(run: Run) -> None:
    columns = run.query(
        "SELECT table, type FROM system.columns WHERE database = currentDatabase() "
        "AND name = 'segments' ORDER BY table"
    )
    assert columns == [
        ("feedback", "Map(String, String)"),
        ("feedback_late", "Map(String, String)"),
        ("predictions", "Map(String, String)"),
    ]
    tag = uuid.uuid4().hex[:6]
    segmented = replace(prediction(f"s-{tag}"), segments={"country": "BR", "device": "ios"})
    old = prediction(f"o-{tag}")
    # Older than the join window: its label arrives late and only feedback_late pairs it.
    long_ago = now_ms() - WINDOW_MS - 60_000
    late = replace(prediction(f"l-{tag}", ts=long_ago), segments={"country": "DE"})
    run.send_prediction(segmented)
    run.produce(run.topics.predictions, old.prediction_id.encode(), _v4_bytes(old))
    run.send_prediction(late)
    run.send_outcome(outcome(segmented.prediction_id))
    run.send_outcome(outcome(old.prediction_id))
    run.send_outcome(outcome(late.prediction_id, ts=long_ago + 1_000))
    run.flush()

    joined = (
        "SELECT prediction_id, segments FROM feedback FINAL "
        f"WHERE status = 'joined' AND prediction_id LIKE '%-{tag}' ORDER BY prediction_id"
    )
    expected = [
        (old.prediction_id, {}),
        (segmented.prediction_id, {"country": "BR", "device": "ios"}),
    ]
    assert wait_for(lambda: run.query(joined) == expected, 90), (
        run.query(joined),
        run.worker_log("worker-0"),
    )
    stored = run.query(
        f"SELECT prediction_id, segments FROM predictions WHERE prediction_id LIKE '%-{tag}' "
        "ORDER BY prediction_id"
    )
    assert stored == [
        (late.prediction_id, {"country": "DE"}),
        (old.prediction_id, {}),
        (segmented.prediction_id, {"country": "BR", "device": "ios"}),
    ]

    paired = f"SELECT segments FROM feedback_late WHERE prediction_id = '{late.prediction_id}'"
    assert wait_for(lambda: run.query(paired) == [({"country": "DE"},)], 90), (
        run.query(paired),
        run.worker_log("worker-0"),
    )
