"""What a model predicts, which decides its confidence and its baseline metric."""

from __future__ import annotations

from enum import StrEnum


class ModelTask(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    # Classes 0..K-1; the model also gives every class's probability (`predict_proba`).
    MULTICLASS = "multiclass"


def confidence_of(task: ModelTask, score: float) -> float | None:
    """Classification: probability of the predicted class; regression has none."""
    if task is ModelTask.CLASSIFICATION:
        return max(score, 1.0 - score)
    return None
