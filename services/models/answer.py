"""One model's answer to one request, shaped by its task: what replicas and shadows publish."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.task import ModelTask, confidence_of


@runtime_checkable
class ClassProbabilityModel(Protocol):
    """A multi-class model: P(class k) at index k for one row."""

    def predict_proba(self, features: Mapping[str, float]) -> Sequence[float]: ...


@dataclass(frozen=True, slots=True)
class Answer:
    """prediction: P(y=1), the class index, or the value; class_probabilities: multi-class only."""

    prediction: float
    confidence: float | None
    class_probabilities: list[float] = field(default_factory=list)


def answer(loaded: LoadedModel, features: Mapping[str, float]) -> Answer:
    """Score one row; a multi-class model's answer is its most likely class and probabilities.

    Raises whatever the model raises, and ValueError for probabilities that are not ones.
    """
    model = loaded.model
    task = loaded.metadata.task
    if task is not ModelTask.MULTICLASS:
        score = float(model.predict(features))
        return Answer(score, confidence_of(task, score))
    if not isinstance(model, ClassProbabilityModel):
        raise TypeError(f"multi-class model {loaded.name} {loaded.version} has no predict_proba")
    probabilities = [float(p) for p in model.predict_proba(features)]
    if len(probabilities) < 2 or not all(0.0 <= p <= 1.0 for p in probabilities):
        raise ValueError(f"class probabilities must be 2+ values in [0, 1], got {probabilities}")
    if not math.isclose(math.fsum(probabilities), 1.0, abs_tol=1e-6):
        raise ValueError(f"class probabilities sum to {math.fsum(probabilities)}, not 1")
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return Answer(float(best), probabilities[best], probabilities)
