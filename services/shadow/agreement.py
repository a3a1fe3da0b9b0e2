"""Shadow versus production side by side, from the pairs the scorer holds anyway: the request's
production answer (in the consumed event) and the shadow's answer (just computed).

Rows are `services/metrics/shadow.py`'s figures over the last `window_pairs` pairs per
(model, shadow version), keyed by the shadow's version and route, for `performance_metrics`.
"""

from __future__ import annotations

import math
from collections import deque

from safeloop.schemas.events import PredictionEvent, Route
from safeloop.schemas.tables import MetricRow
from safeloop.services.metrics.keyed import WindowKey
from safeloop.services.metrics.performance import Task
from safeloop.services.metrics.rows import RowContext, shadow_rows
from safeloop.services.metrics.shadow import compare_shadow

# (timestamp ms, production answer, shadow answer; NaN when the shadow failed)
_Pair = tuple[int, float, float]


class ShadowAgreement:
    """The last `window_pairs` (production, shadow) answers per model and shadow version."""

    def __init__(self, window_pairs: int = 1_000) -> None:
        self.window_pairs = window_pairs
        self._pairs: dict[tuple[str, str], deque[_Pair]] = {}
        self._tasks: dict[tuple[str, str], Task] = {}

    def add(self, production: PredictionEvent, shadow: PredictionEvent, task: str) -> None:
        if production.prediction is None:
            return
        key = (shadow.model_name, shadow.model_version)
        pairs = self._pairs.get(key)
        if pairs is None:
            pairs = self._pairs[key] = deque(maxlen=self.window_pairs)
        answer = math.nan if shadow.prediction is None else shadow.prediction
        pairs.append((production.timestamp, production.prediction, answer))
        self._tasks[key] = Task(task)

    def rows(self) -> list[MetricRow]:
        """Agreement, score differences and pair counts of every window holding pairs."""
        rows: list[MetricRow] = []
        labels = {"window": f"count_{self.window_pairs}", "source": "shadow-scorer"}
        for (model, version), pairs in sorted(self._pairs.items()):
            if not pairs:
                continue
            stamps = [pair[0] for pair in pairs]
            comparison = compare_shadow(
                self._tasks[(model, version)],
                [pair[1] for pair in pairs],
                [pair[2] for pair in pairs],
            )
            context = RowContext(
                WindowKey(model, version, Route.SHADOW), min(stamps), max(stamps), labels
            )
            rows += shadow_rows(context, comparison)
        return rows
