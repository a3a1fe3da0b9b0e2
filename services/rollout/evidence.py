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
from safeloop.services.metrics.windows import TIMESTAMP_COLUMN, CountWindow
from safeloop.services.rollout.gate import GateEvidence
from safeloop.services.rollout.machine import RolloutState
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
                self._health[side].append(health_batch(mine)[1])
                if self.task is Task.CLASSIFICATION:
                    self._scores[side].append(_score_batch(mine))

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
                self._feedback[side].append(feedback_batch(mine, ScoreConvention.PROBABILITY)[1])

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
        )

    def _log_latency(self, side: Route) -> MeanSummary | None:
        window = self._health[side]
        if not len(window):
            return None
        latency = window.view()["latency_ms"]
        # A 0 ms answer (a cached or failed one) has no logarithm: floor at a microsecond.
        return MeanSummary.of(np.log(np.maximum(latency, 1e-3)))

    def _estimate(self, side: Route) -> PerformanceEstimate | None:
        window = self._scores[side]
        if not len(window):
            return None
        scores = window.view()["score"]
        return estimate_performance(np.clip(scores[~np.isnan(scores)], 0.0, 1.0))


SCORE_COLUMNS = {TIMESTAMP_COLUMN: np.int64, "score": np.float64}


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
