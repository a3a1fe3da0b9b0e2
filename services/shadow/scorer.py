"""Shadow answers for answered requests: the scoring itself, with no Kafka in sight.

Each shadow answer reuses the request's prediction_id, routing key and timestamp (so a
replayed batch lands as the same ClickHouse row, not a second one); its latency is the shadow
model's own scoring time, measured here as the scoring thread's CPU time: the scorer runs at
idle CPU priority, so the time it waits for a core while requests have it is not the model's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from safeloop.schemas.events import ErrorKind, ModelConfig, PredictionEvent, Route
from safeloop.services.models.answer import Answer, answer
from safeloop.services.models.exceptions import ModelError
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.serving.flags import ModelFlags, set_current_flags
from safeloop.services.shadow.agreement import ShadowAgreement

logger = logging.getLogger(__name__)

LoadModel = Callable[[str, str], LoadedModel]
ConfigOf = Callable[[str], ModelConfig | None]


@dataclass(slots=True)
class ShadowCounts:
    """Totals since start, for logs and tests."""

    scored: int = 0
    failed: int = 0
    # Requests of a model with a shadow whose version could not be loaded.
    unloadable: int = 0


class ShadowModels:
    """Shadow versions loaded on first use and kept; a version that fails to load is noted
    once (versions are immutable, so it is not retried)."""

    def __init__(self, load: LoadModel) -> None:
        self._load = load
        self._loaded: dict[tuple[str, str], LoadedModel] = {}
        self.unloadable: dict[tuple[str, str], str] = {}

    def get(self, model_name: str, version: str) -> LoadedModel | None:
        key = (model_name, version)
        loaded = self._loaded.get(key)
        if loaded is not None or key in self.unloadable:
            return loaded
        try:
            loaded = self._load(model_name, version)
        except (ModelError, ValueError) as exc:
            self.unloadable[key] = str(exc)
            logger.error("shadow %s %s cannot be loaded: %s", model_name, version, exc)
            return None
        self._loaded[key] = loaded
        logger.info("loaded shadow %s %s", model_name, version)
        return loaded


class ShadowScorer:
    """Scores every answered, non-shadow request of a model whose config has a shadow on."""

    def __init__(self, models: ShadowModels, config_of: ConfigOf, scorer_id: str) -> None:
        self._models = models
        self._config_of = config_of
        self.scorer_id = scorer_id
        self.counts = ShadowCounts()
        # Production's and the shadow's answers side by side, for performance_metrics.
        self.agreement = ShadowAgreement()
        self._flags: dict[str, tuple[ModelConfig, ModelFlags]] = {}

    def score(self, events: Sequence[PredictionEvent]) -> list[PredictionEvent]:
        """The shadow answers owed for `events` (none for shadow rows and failed requests)."""
        answers = []
        for event in events:
            if event.route is Route.SHADOW or event.error is not None:
                continue
            config = self._config_of(event.model_name)
            if config is None or not config.shadow_enabled or not config.shadow_version:
                continue
            if config.shadow_version == event.model_version:
                continue  # the shadow answered this request itself
            loaded = self._models.get(event.model_name, config.shadow_version)
            if loaded is None:
                self.counts.unloadable += 1
                continue
            answer = self._answer(event, loaded, self._flags_of(event.model_name, config))
            self.agreement.add(event, answer, loaded.metadata.task.value)
            answers.append(answer)
        return answers

    def _flags_of(self, model_name: str, config: ModelConfig) -> ModelFlags:
        cached = self._flags.get(model_name)
        if cached is None or cached[0] is not config:
            cached = (config, ModelFlags.from_config(config))
            self._flags[model_name] = cached
        return cached[1]

    def _answer(
        self, event: PredictionEvent, loaded: LoadedModel, flags: ModelFlags
    ) -> PredictionEvent:
        started_ns = time.thread_time_ns()
        answered: Answer | None = None
        error: str | None = None
        set_current_flags(flags)
        try:
            answered = answer(loaded, event.features)
        except Exception as exc:  # a failing shadow is recorded in its answer, never raised
            error = f"{type(exc).__name__}: {exc}"
            logger.debug("shadow %s/%s failed: %s", loaded.name, loaded.version, error)
        latency_ms = (time.thread_time_ns() - started_ns) / 1e6
        if error is None:
            self.counts.scored += 1
        else:
            self.counts.failed += 1
        return PredictionEvent(
            prediction_id=event.prediction_id,
            model_name=event.model_name,
            model_version=loaded.version,
            timestamp=event.timestamp,
            features=event.features,
            prediction=None if answered is None else answered.prediction,
            confidence=None if answered is None else answered.confidence,
            latency_ms=latency_ms,
            route=Route.SHADOW,
            replica_id=self.scorer_id,
            routing_key=event.routing_key,
            routing_hash_version=event.routing_hash_version,
            error=error,
            error_kind=None if error is None else ErrorKind.SERVER,
            class_probabilities=[] if answered is None else answered.class_probabilities,
            segments=event.segments,
        )
