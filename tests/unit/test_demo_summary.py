"""The demo's summary says whether the retraining loop closed, and how; the worse candidate's
trainer really is worse (it learns the opposite of the labels)."""

from __future__ import annotations

import numpy as np

from safeloop.services.demo.corrupted_trainer import train as corrupted_train
from safeloop.services.demo.figures import ControlEvent, RetrainStep
from safeloop.services.demo.story import StoryResult
from safeloop.services.demo.summary import render
from safeloop.services.demo.traffic import TrafficCounts
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset
from safeloop.services.retraining.export import FEATURE_PREFIX
from safeloop.services.retraining.linear_trainer import train
from safeloop.services.retraining.trainer import TrainingWindow


class Figures:
    """What `render` reads back from ClickHouse, without ClickHouse."""

    def control_events(self) -> list[ControlEvent]:
        return [ControlEvent(9, "promote", "safeloop-metrics", "rollout: all steps", 0, None, "2")]

    def predictions(self) -> dict[tuple[str, str], int]:
        return {("v1", "production"): 10}

    def feedback_rows(self) -> dict[str, int]:
        return {"joined": 10}

    def accuracy(self) -> dict[tuple[str, str], tuple[float, int]]:
        return {("v1", "production"): (0.8, 10)}


def _steps(*stages: str, reason: str) -> list[RetrainStep]:
    lineage = {"training_rows": "900", "half_life_ms": "120000"}
    figures = {"shadow_agreement": "0.9500", "shadow_pairs": "40"}
    return [
        RetrainStep("churn:v2:1", stage, "v2-rab", reason, lineage, figures) for stage in stages
    ]


def _render(steps: list[RetrainStep]) -> str:
    result = StoryResult(retraining=steps)
    return render(result, Figures(), TrafficCounts(sent=10), 10, "http://dash")  # type: ignore[arg-type]


def test_a_promoted_candidate_closes_the_loop() -> None:
    text = _render(
        _steps(
            "received",
            "registered",
            "shadowing",
            "approved",
            "canary",
            "promoted",
            reason="promoted: all steps passed",
        )
    )
    assert "received -> registered -> shadowing -> approved -> canary -> promoted" in text
    assert "trained on 900 labelled rows (half-life 2 min)" in text
    assert "loop closed   yes: decision -> v2-rab -> shadow -> canary -> promoted" in text


def test_a_rolled_back_candidate_closes_it_too_and_says_so() -> None:
    text = _render(
        _steps(
            "received",
            "registered",
            "shadowing",
            "approved",
            "canary",
            "rolled_back",
            reason="rolled back: rollback guard: canary breached performance_drop",
        )
    )
    assert "rolled back: rollback guard" in text
    assert "loop closed   yes: v2-rab was worse on live traffic and rolled back" in text


def test_a_rejected_candidate_leaves_it_open() -> None:
    text = _render(_steps("received", "registered", "shadowing", "rejected", reason="no"))
    assert "loop closed   no: the run went from received to rejected" in text


def test_the_corrupted_trainer_learns_the_opposite_of_the_labels() -> None:
    data = make_dataset(ModelTask.CLASSIFICATION, 800, seed=4)
    dtype = [
        ("prediction_timestamp", np.int64),
        ("ground_truth", np.float64),
        ("weight", np.float64),
        *((FEATURE_PREFIX + name, np.float64) for name in data.feature_names),
    ]
    rows = np.zeros(800, dtype=dtype)
    rows["ground_truth"], rows["weight"] = data.targets, 1.0
    for index, name in enumerate(data.feature_names):
        rows[FEATURE_PREFIX + name] = data.rows[:, index]
    window = TrainingWindow("churn", "v", ModelTask.CLASSIFICATION, data.feature_names, rows, 1.0)
    sound, worse = train(window), corrupted_train(window)
    truth = data.targets >= 0.5
    sound_accuracy = np.mean((sound.predict_batch(data.rows) >= 0.5) == truth)  # type: ignore[attr-defined]
    worse_accuracy = np.mean((worse.predict_batch(data.rows) >= 0.5) == truth)  # type: ignore[attr-defined]
    assert sound_accuracy > 0.7 and worse_accuracy < 0.3
    # The window it was given is left as it was.
    assert np.array_equal(rows["ground_truth"], data.targets)
