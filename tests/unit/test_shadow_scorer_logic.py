"""The shadow scorer's logic: which events are owed a shadow answer and what it looks like."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from safeloop.schemas.events import ErrorKind, ModelConfig, PredictionEvent, Route
from safeloop.services.metrics.baseline import ModelBaseline
from safeloop.services.models.exceptions import ModelNotFoundError
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.task import ModelTask
from safeloop.services.serving.flags import current_flags
from safeloop.services.shadow.scorer import ShadowModels, ShadowScorer

FEATURES = ("age", "income")


class FlagScaled:
    """P(y=1) = the `scale` flag times age: proves flags and features reach the model."""

    def predict(self, features: Mapping[str, float]) -> float:
        return current_flags().get_number("scale", 1.0) * features["age"]


class Exploding:
    def predict(self, features: Mapping[str, float]) -> float:
        raise RuntimeError("shadow exploded")


def loaded(model: object, version: str) -> LoadedModel:
    rng = np.random.default_rng(0)
    metadata = ModelMetadata(
        name="churn",
        version=version,
        task=ModelTask.CLASSIFICATION,
        kind="logistic",
        feature_names=FEATURES,
        created_at_ms=0,
        training_rows=10,
        baseline=ModelBaseline.from_training_data({f: rng.normal(size=50) for f in FEATURES}),
        primary_metric="accuracy",
        metrics={"accuracy": 0.5},
    )
    return LoadedModel(model, metadata)  # type: ignore[arg-type]


def event(
    index: int, route: Route = Route.PRODUCTION, error: str | None = None, version: str = "v1"
) -> PredictionEvent:
    return PredictionEvent(
        prediction_id=f"p{index}",
        model_name="churn",
        model_version=version,
        timestamp=1_700_000_000_000 + index,
        features={"age": 0.4, "income": 1.0},
        prediction=None if error else 0.7,
        confidence=None if error else 0.7,
        latency_ms=0.3,
        route=route,
        replica_id="replica-a",
        routing_key=f"user-{index}",
        routing_hash_version=1,
        error=error,
        error_kind=ErrorKind.CLIENT if error else None,
    )


class Store:
    def __init__(self) -> None:
        self.loads: list[tuple[str, str]] = []

    def load(self, name: str, version: str) -> LoadedModel:
        self.loads.append((name, version))
        if version == "v-bad":
            return loaded(Exploding(), version)
        if version == "v-gone":
            raise ModelNotFoundError(name, version)
        return loaded(FlagScaled(), version)


def scorer(config: ModelConfig | None, store: Store | None = None) -> ShadowScorer:
    return ShadowScorer(ShadowModels((store or Store()).load), lambda name: config, "shadow-1")


SHADOW_ON = ModelConfig("v1", shadow_version="v3", shadow_enabled=True, flags={"scale": "2"})


def test_answers_reuse_the_request_identity_and_carry_the_shadows_own_figures() -> None:
    [answer] = scorer(SHADOW_ON).score([event(1)])
    assert (answer.prediction_id, answer.routing_key, answer.timestamp) == (
        "p1",
        "user-1",
        1_700_000_000_001,
    )
    assert (answer.model_version, answer.route, answer.replica_id) == (
        "v3",
        Route.SHADOW,
        "shadow-1",
    )
    assert answer.prediction == 0.8  # flags reached the model: 2 x age
    assert answer.confidence == 0.8
    assert answer.error is None and answer.latency_ms >= 0.0


def test_only_answered_requests_of_shadowed_models_are_scored() -> None:
    events = [
        event(1),
        event(2, route=Route.CANARY, version="v2"),
        event(3, route=Route.SHADOW, version="v3"),  # a shadow answer: never re-scored
        event(4, error="missing features: age"),  # nothing to compare with
        event(5, version="v3"),  # the shadow version served this one itself
    ]
    answers = scorer(SHADOW_ON).score(events)
    assert [a.prediction_id for a in answers] == ["p1", "p2"]
    assert scorer(ModelConfig("v1", shadow_version="v3")).score(events) == []  # shadow off
    assert scorer(None).score(events) == []  # no command for the model


def test_a_failing_shadow_is_an_answer_with_its_error() -> None:
    config = ModelConfig("v1", shadow_version="v-bad", shadow_enabled=True)
    shadow = scorer(config)
    [answer] = shadow.score([event(1)])
    assert answer.prediction is None and answer.confidence is None
    assert answer.error is not None and "shadow exploded" in answer.error
    assert answer.error_kind is ErrorKind.SERVER
    assert (shadow.counts.scored, shadow.counts.failed) == (0, 1)


def test_a_shadow_version_is_loaded_once_and_an_unloadable_one_is_skipped() -> None:
    store = Store()
    shadow = scorer(SHADOW_ON, store)
    shadow.score([event(1), event(2)])
    shadow.score([event(3)])
    assert store.loads == [("churn", "v3")]
    gone = scorer(ModelConfig("v1", shadow_version="v-gone", shadow_enabled=True), store)
    assert gone.score([event(1), event(2)]) == []
    assert gone.counts.unloadable == 2
    assert store.loads.count(("churn", "v-gone")) == 1


def test_agreement_rows_put_production_and_shadow_side_by_side() -> None:
    shadow = scorer(SHADOW_ON)  # the shadow answers 0.8 (2 x age); production said 0.7
    shadow.score([event(1), event(2), event(3)])
    rows = {row.metric: row for row in shadow.agreement.rows()}
    assert rows["shadow_pair_count"].value == 3
    assert rows["shadow_agreement_rate"].value == 1.0  # both above 0.5
    assert rows["shadow_mean_difference"].value == pytest.approx(0.1)
    row = rows["shadow_agreement_rate"]
    assert (row.model_version, row.route) == ("v3", "shadow")
    assert (row.window_start_ms, row.window_end_ms) == (1_700_000_000_001, 1_700_000_000_003)
