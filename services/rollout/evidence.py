"""The current step's traffic of one rollout: canary and production health and feedback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from safeloop.schemas.events import FeedbackRecord, PredictionEvent, Route
from safeloop.services.metrics.columns import (
    ScoreConvention,
    feedback_batch,
    health_batch,
    positive_score,
)
from safeloop.services.metrics.estimation import PerformanceEstimate, estimate_performance
from safeloop.services.metrics.health import HEALTH_COLUMNS, health_of_window
from safeloop.services.metrics.performance import FEEDBACK_COLUMNS, Task, performance_of_window
from safeloop.services.metrics.segments import (
    SEGMENT_COLUMN,
    SegmentCodes,
    correct_answers,
    dense_counts,
    explode,
)
from safeloop.services.metrics.windows import TIMESTAMP_COLUMN, CountWindow
from safeloop.services.rollout.gate import GateEvidence
from safeloop.services.rollout.machine import RolloutState
from safeloop.services.rollout.segment_gate import SegmentEvidence, SegmentSide
from safeloop.services.rollout.sequential import MeanSummary

MAX_STEP_ROWS = 200_000


class StepEvidence:
    """Requests and labels of one step: predictions made since the step began, per side."""

    def __init__(self, state: RolloutState, task: Task, max_rows: int = MAX_STEP_ROWS) -> None:
        self.model_name = state.model_name
        self.candidate = state.candidate_version
        self.production = state.known_good_version
        self.since_ms = state.step_started_ms
        self.task = task
        self._health = {
            route: CountWindow(max_rows, HEALTH_COLUMNS)
            for route in (Route.CANARY, Route.PRODUCTION)
        }
        self._feedback = {
            route: CountWindow(max_rows, FEEDBACK_COLUMNS)
            for route in (Route.CANARY, Route.PRODUCTION)
        }
        # P(y=1) of each prediction, for the label-free estimate (classification only).
        self._scores = {
            route: CountWindow(max_rows, SCORE_COLUMNS)
            for route in (Route.CANARY, Route.PRODUCTION)
        }
        # One row per (request, segment it is in): the per-segment comparison's input.
        self._codes = SegmentCodes()
        self._segment_health = {
            route: CountWindow(max_rows, SEGMENT_HEALTH_COLUMNS)
            for route in (Route.CANARY, Route.PRODUCTION)
        }
        self._segment_answers = {
            route: CountWindow(max_rows, SEGMENT_ANSWER_COLUMNS)
            for route in (Route.CANARY, Route.PRODUCTION)
        }

    def _side(self, route: Route, version: str) -> Route | None:
        if route is Route.CANARY and version == self.candidate:
            return Route.CANARY
        if route is Route.PRODUCTION and version == self.production:
            return Route.PRODUCTION
        return None

    def add_predictions(self, events: Sequence[PredictionEvent]) -> None:
        for side in (Route.CANARY, Route.PRODUCTION):
            mine = [
                e
                for e in events
                if e.model_name == self.model_name
                and e.timestamp >= self.since_ms
                and self._side(e.route, e.model_version) is side
            ]
            if mine:
                batch = health_batch(mine)[1]
                self._health[side].append(batch)
                if self.task is Task.CLASSIFICATION:
                    self._scores[side].append(_score_batch(mine))
                rows, codes = explode([e.segments for e in mine], self._codes)
                if rows.shape[0]:
                    self._segment_health[side].append(
                        {
                            TIMESTAMP_COLUMN: batch[TIMESTAMP_COLUMN][rows],
                            SEGMENT_COLUMN: codes,
                            "log_latency": _log_latency(batch["latency_ms"][rows]),
                            "error": batch["error"][rows],
                        }
                    )

    def add_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        for side in (Route.CANARY, Route.PRODUCTION):
            mine = [
                r
                for r in records
                if r.model_name == self.model_name
                and r.prediction_timestamp >= self.since_ms
                and self._side(r.route, r.model_version) is side
            ]
            if mine:
                batch = feedback_batch(mine, ScoreConvention.PROBABILITY)[1]
                self._feedback[side].append(batch)
                rows, codes = explode([r.segments for r in mine], self._codes)
                if rows.shape[0] and self.task is not Task.REGRESSION:
                    self._segment_answers[side].append(
                        {
                            TIMESTAMP_COLUMN: batch[TIMESTAMP_COLUMN][rows],
                            SEGMENT_COLUMN: codes,
                            "correct": _correct(batch)[rows],
                        }
                    )

    def evidence(self) -> GateEvidence:
        canary_feedback = self._feedback[Route.CANARY]
        production_feedback = self._feedback[Route.PRODUCTION]
        return GateEvidence(
            canary_log_latency=self._log_latency(Route.CANARY),
            production_log_latency=self._log_latency(Route.PRODUCTION),
            canary_estimate=self._estimate(Route.CANARY),
            production_estimate=self._estimate(Route.PRODUCTION),
            canary=health_of_window(self._health[Route.CANARY].view()),
            production=health_of_window(self._health[Route.PRODUCTION].view()),
            canary_performance=performance_of_window(self.task, canary_feedback.view())
            if len(canary_feedback)
            else None,
            production_performance=performance_of_window(self.task, production_feedback.view())
            if len(production_feedback)
            else None,
            segments=self._segments(),
        )

    def _segments(self) -> SegmentEvidence | None:
        size = len(self._codes)
        if size == 0:
            return None
        sides = {}
        for side in (Route.CANARY, Route.PRODUCTION):
            health = self._segment_health[side].view()
            answers = self._segment_answers[side].view()
            correct = answers["correct"]
            sides[side] = SegmentSide(
                dense_counts(health[SEGMENT_COLUMN], health["error"], health["log_latency"], size),
                dense_counts(answers[SEGMENT_COLUMN], correct == 1.0, correct, size)
                if self.task is not Task.REGRESSION
                else None,
            )
        labels = tuple(self._codes.label(code) for code in range(size))
        return SegmentEvidence(labels, sides[Route.CANARY], sides[Route.PRODUCTION])

    def _log_latency(self, side: Route) -> MeanSummary | None:
        window = self._health[side]
        if not len(window):
            return None
        return MeanSummary.of(_log_latency(window.view()["latency_ms"]))

    def _estimate(self, side: Route) -> PerformanceEstimate | None:
        window = self._scores[side]
        if not len(window):
            return None
        scores = window.view()["score"]
        return estimate_performance(np.clip(scores[~np.isnan(scores)], 0.0, 1.0))


SCORE_COLUMNS = {TIMESTAMP_COLUMN: np.int64, "score": np.float64}
SEGMENT_HEALTH_COLUMNS = {
    TIMESTAMP_COLUMN: np.int64,
    SEGMENT_COLUMN: np.int64,
    "log_latency": np.float64,
    "error": np.bool_,
}
# correct: 1.0 or 0.0 for a labelled row, NaN without a label.
SEGMENT_ANSWER_COLUMNS = {
    TIMESTAMP_COLUMN: np.int64,
    SEGMENT_COLUMN: np.int64,
    "correct": np.float64,
}


def _log_latency(latency_ms: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    # A 0 ms answer (a cached or failed one) has no logarithm: floor at a microsecond.
    logs: npt.NDArray[np.float64] = np.log(np.maximum(latency_ms, 1e-3))
    return logs


def _correct(batch: dict[str, npt.NDArray[Any]]) -> npt.NDArray[np.float64]:
    right = correct_answers(
        batch["score"],
        batch["ground_truth"],
        batch["true_class_probability"],
        batch["top_probability"],
    )
    labelled = ~(np.isnan(batch["ground_truth"]) | np.isnan(batch["score"]))
    return np.where(labelled, right.astype(np.float64), np.nan)


def _score_batch(events: Sequence[PredictionEvent]) -> dict[str, npt.NDArray[Any]]:
    count = len(events)
    return {
        TIMESTAMP_COLUMN: np.fromiter((e.timestamp for e in events), np.int64, count),
        "score": np.fromiter(
            (
                positive_score(e.prediction, e.confidence, ScoreConvention.PROBABILITY)
                for e in events
            ),
            np.float64,
            count,
        ),
    }
