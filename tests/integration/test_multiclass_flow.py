"""Multi-class and regression models through the real broker, the stream join, ClickHouse and
the metrics service; every figure is checked against a reference computed here row by row.

An old producer (PredictionEvent v3, before class_probabilities) shares the topic and its rows
join as before.
"""

from __future__ import annotations

import io
import math
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _metrics_harness import KEY_HEX, TEST_POLICY, metrics_service
from _stream_harness import Run, free_port, new_run, wait_for
from fastavro import schemaless_writer

from safeloop.infra.settings import Secret, Settings
from safeloop.schemas.codec import MARKER
from safeloop.schemas.events import OutcomeEvent, PredictionEvent, Route
from safeloop.schemas.registry import HISTORY_DIR, SchemaRegistry, default_registry, load_avsc
from safeloop.services.models.store import ModelStore
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model, train_multiclass_model
from safeloop.services.monitor.service import MetricsConfig

pytestmark = pytest.mark.integration

ROWS = 600
SPECIES = "species"
PRICE = "price"


@pytest.fixture
def run(stack, tmp_path: Path) -> Any:  # type: ignore[no-untyped-def]
    current = new_run(stack.fresh("multiclass"), tmp_path)
    current.start_worker(0, free_port())
    yield current
    current.stop_all()


def _settings(run: Run, model_dir: Path) -> Settings:
    return replace(
        run.settings,
        model_dir=model_dir,
        control_key=Secret(KEY_HEX),
        control_key_id="multiclass-it",
    )


def _event(pid: str, model: str, ts: int, features: dict[str, float], **answer: Any) -> Any:
    return PredictionEvent(
        prediction_id=pid,
        model_name=model,
        model_version="v1",
        timestamp=ts,
        features=features,
        latency_ms=1.0,
        route=Route.PRODUCTION,
        replica_id="replica-it",
        routing_key=pid,
        routing_hash_version=1,
        **answer,
    )


def _v3_bytes(event: PredictionEvent) -> bytes:
    """The event as a producer built before class_probabilities would write it."""
    entry = default_registry().get(
        SchemaRegistry().register(load_avsc(HISTORY_DIR / "prediction_event.v3.avsc")).fingerprint
    )
    assert entry is not None
    record = {name: getattr(event, name) for name in PredictionEvent.__dataclass_fields__}
    del record["class_probabilities"]
    record["route"] = event.route.value
    out = io.BytesIO()
    out.write(MARKER + entry.fingerprint)
    schemaless_writer(out, entry.parsed, record)
    return out.getvalue()


def _latest(run: Run, model: str, metric: str, window: str) -> tuple[float, int] | None:
    rows = run.query(
        "SELECT value, sample_count FROM performance_metrics FINAL "
        f"WHERE model_name = '{model}' AND metric = '{metric}' AND labels['window'] = '{window}' "
        "ORDER BY window_end DESC, computed_at DESC LIMIT 1"
    )
    return None if not rows else (float(rows[0][0]), int(rows[0][1]))


def _reference_multiclass(truth: list[int], probabilities: list[list[float]]) -> dict[str, float]:
    """Macro/micro F1, per-class precision and recall, log loss, Brier, counting row by row."""
    predicted = [max(range(len(p)), key=p.__getitem__) for p in probabilities]
    classes = sorted(set(truth) | set(predicted))
    figures: dict[str, float] = {}
    f1s = []
    for c in classes:
        tp = sum(t == c and p == c for t, p in zip(truth, predicted, strict=True))
        fp = sum(t != c and p == c for t, p in zip(truth, predicted, strict=True))
        fn = sum(t == c and p != c for t, p in zip(truth, predicted, strict=True))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        figures[f"precision_class_{c:02d}"] = precision
        figures[f"recall_class_{c:02d}"] = recall
        figures[f"confusion_{c:02d}_{c:02d}"] = tp
    n = len(truth)
    figures["macro_f1"] = sum(f1s) / len(classes)
    figures["micro_f1"] = sum(t == p for t, p in zip(truth, predicted, strict=True)) / n
    figures["log_loss"] = (
        -sum(math.log(p[t]) for t, p in zip(truth, probabilities, strict=True)) / n
    )
    figures["brier_score"] = (
        sum(
            sum((q - (k == t)) ** 2 for k, q in enumerate(p))
            for t, p in zip(truth, probabilities, strict=True)
        )
        / n
    )
    return figures


def test_multiclass_and_regression_models_are_joined_and_monitored(
    run: Run, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"
    store = ModelStore(model_dir)
    species_data = make_dataset(ModelTask.MULTICLASS, 3_000, seed=7)
    species, species_meta = train_multiclass_model(SPECIES, "v1", species_data)
    store.save(species, species_meta)
    price_data = make_dataset(ModelTask.REGRESSION, 3_000, seed=8)
    price, price_meta = train_model(PRICE, "v1", ModelTask.REGRESSION, price_data)
    store.save(price, price_meta)
    assert price_meta.baseline.residual is not None
    settings = _settings(run, model_dir)

    live = make_dataset(ModelTask.MULTICLASS, ROWS, seed=70)
    probabilities = species.predict_proba_batch(live.rows).tolist()
    truth = live.targets.astype(int).tolist()
    drifted = make_dataset(ModelTask.REGRESSION, ROWS, seed=80)
    values = price.predict_batch(drifted.rows).tolist()
    # Labels 1.0 above what the model learnt: its residuals shift away from the training ones.
    actual = (drifted.targets + 1.0).tolist()
    names = live.feature_names
    start = int(time.time() * 1000) - 60_000
    tag = uuid.uuid4().hex[:6]
    for i in range(ROWS):
        ts = start + i * 10
        p = probabilities[i]
        best = max(range(len(p)), key=p.__getitem__)
        features = dict(zip(names, live.rows[i].tolist(), strict=True))
        event = _event(
            f"s-{tag}-{i}", SPECIES, ts, features,
            prediction=float(best), confidence=p[best], class_probabilities=p,
        )  # fmt: skip
        run.send_prediction(event)
        run.send_outcome(OutcomeEvent(event.prediction_id, float(truth[i]), ts + 500, "it"))
        features = dict(zip(names, drifted.rows[i].tolist(), strict=True))
        regression = _event(
            f"r-{tag}-{i}", PRICE, ts, features, prediction=values[i], confidence=None
        )
        if i % 2:
            # Half the regressor's events come from a producer that predates the new field.
            run.produce(
                run.topics.predictions, regression.prediction_id.encode(), _v3_bytes(regression)
            )
        else:
            run.send_prediction(regression)
        run.send_outcome(OutcomeEvent(regression.prediction_id, actual[i], ts + 500, "it"))
    run.flush()

    joined = (
        "SELECT model_name, count(), countIf(length(class_probabilities) = 3) FROM feedback FINAL "
        "WHERE status = 'joined' GROUP BY model_name ORDER BY model_name"
    )
    assert wait_for(lambda: run.query(joined) == [(PRICE, ROWS, 0), (SPECIES, ROWS, ROWS)], 120), (
        run.query(joined),
        run.worker_log("worker-0"),
    )
    stored = run.query(
        f"SELECT class_probabilities FROM feedback FINAL WHERE prediction_id = 's-{tag}-5'"
    )
    assert stored[0][0] == pytest.approx(probabilities[5])

    config = MetricsConfig(snapshot_interval_ms=500, guard_policy=TEST_POLICY)
    window = "count_10000"
    with metrics_service(settings, config):
        assert wait_for(
            lambda: (
                (found := _latest(run, SPECIES, "labelled_count_last_n", window)) is not None
                and found[0] == ROWS
                and (found := _latest(run, PRICE, "labelled_count_last_n", window)) is not None
                and found[0] == ROWS
            ),
            90,
        ), run.query("SELECT model_name, metric, value FROM performance_metrics LIMIT 20")

    expected = _reference_multiclass(truth, probabilities)
    for name, value in expected.items():
        found = _latest(run, SPECIES, f"{name}_last_n", window)
        if value == 0 and name.startswith("confusion_"):
            assert found is None, name  # empty cells are not written
            continue
        assert found is not None, name
        assert found[0] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    ece = _latest(run, SPECIES, "expected_calibration_error_last_n", window)
    assert ece is not None and 0.0 <= ece[0] < 0.2
    cells = run.query(
        "SELECT sum(value) FROM (SELECT metric, argMax(value, (window_end, computed_at)) AS value "
        f"FROM performance_metrics FINAL WHERE model_name = '{SPECIES}' "
        f"AND labels['window'] = '{window}' AND startsWith(metric, 'confusion_') GROUP BY metric)"
    )
    assert cells[0][0] == ROWS

    residual = [a - v for a, v in zip(actual, values, strict=True)]
    mean_truth = sum(actual) / ROWS
    reference = {
        "mae": sum(abs(r) for r in residual) / ROWS,
        "rmse": math.sqrt(sum(r * r for r in residual) / ROWS),
        "r2": 1 - sum(r * r for r in residual) / sum((a - mean_truth) ** 2 for a in actual),
        "residual_mean": sum(residual) / ROWS,
    }
    for name, value in reference.items():
        found = _latest(run, PRICE, f"{name}_last_n", window)
        assert found is not None, name
        assert found[0] == pytest.approx(value, rel=1e-9), name
    psi = _latest(run, PRICE, "residual_psi_last_n", window)
    assert psi is not None and psi[0] > 0.25  # labels shifted by ~2 residual SDs
    assert _latest(run, PRICE, "macro_f1_last_n", window) is None
    assert float(np.std(residual)) == pytest.approx(
        _latest(run, PRICE, "residual_std_last_n", window)[0],  # type: ignore[index]
        rel=1e-9,
    )
