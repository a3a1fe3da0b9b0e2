"""Shadow scoring off the request path, against the real broker, the stream processor and
ClickHouse: the scorer's answers land beside production's under the same prediction_id, while
the replica never calls the shadow model."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest
from _metrics_harness import FEATURES, MODEL, metrics_settings, publish, wait_for
from _stream_harness import new_run

from safeloop.infra.portcheck import free_port
from safeloop.infra.settings import Settings
from safeloop.schemas.events import CommandKind
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.store import ModelStore
from safeloop.services.serving.replica import Replica, load_catalog
from safeloop.services.shadow.wiring import build_shadow_scorer

pytestmark = pytest.mark.integration


class CountingModel:
    """The replica's copy of the shadow version: counts every call it gets."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.calls = 0

    def predict(self, features: Mapping[str, float]) -> float:
        self.calls += 1
        return float(self._inner.predict(features))  # type: ignore[attr-defined]


@pytest.fixture
def settings(stack, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return metrics_settings(stack.fresh("shadow"), tmp_path / "models")


def test_shadow_answers_land_with_the_production_id_off_the_request_path(
    settings: Settings, tmp_path: Path
) -> None:
    store = ModelStore(settings.models_path)
    catalog = load_catalog(store, [MODEL])
    shadow_in_replica = CountingModel(store.load(MODEL, "v2").model)
    metadata = store.load_metadata(MODEL, "v2")
    catalog.add(LoadedModel(shadow_in_replica, metadata))  # type: ignore[arg-type]
    replica = Replica(settings, "replica-shadow", catalog=catalog)
    replica.start()
    (tmp_path / "stream").mkdir()
    run = new_run(settings, tmp_path / "stream")
    stop = threading.Event()
    scorer = build_shadow_scorer(settings, "shadow-it", group=f"it-shadow-{uuid.uuid4().hex[:6]}")
    thread = threading.Thread(target=scorer.run, args=(stop,), name="shadow-scorer", daemon=True)
    try:
        assert replica.wait_ready(30)
        sequence = publish(
            settings,
            CommandKind.SET_SHADOW,
            lambda c: dataclasses.replace(c, shadow_version="v2", shadow_enabled=True),
        )
        assert wait_for(
            lambda: (a := replica.state.applied(MODEL)) is not None and a.sequence >= sequence
        )
        run.start_worker(0, free_port())
        thread.start()
        assert scorer.ready.wait(30), "the scorer's consumer group never assigned partitions"
        answered: dict[str, float] = {}

        def shadowed_enough() -> bool:
            # Keep sending: the scorer's group starts at the end of the topic.
            for _ in range(10):
                answer = replica.predictor.predict(MODEL, uuid.uuid4().hex, FEATURES)
                answered[answer.prediction_id] = answer.prediction
            return scorer.published >= 30

        assert wait_for(shadowed_enough, 60), f"scorer published {scorer.published}"
        client = run.client()

        def pairs() -> list[tuple[str, str, str, float | None]]:
            return list(
                client.query(
                    "SELECT s.prediction_id, s.model_version, s.replica_id, s.prediction "
                    "FROM predictions AS s INNER JOIN predictions AS p "
                    "ON s.prediction_id = p.prediction_id "
                    "WHERE s.route = 'shadow' AND p.route = 'production'"
                ).result_rows
            )

        assert wait_for(lambda: len(pairs()) >= 30, 60), run.worker_log("worker-0")
        found = pairs()
        assert all(pid in answered for pid, *_ in found)
        assert {(version, scorer_id) for _, version, scorer_id, _ in found} == {("v2", "shadow-it")}
        assert all(prediction is not None for *_, prediction in found)
        # Every request was answered by production v1; the replica never touched v2.
        assert shadow_in_replica.calls == 0
        production = client.query(
            "SELECT count() FROM predictions WHERE route = 'production' AND model_version = 'v1'"
        ).result_rows[0][0]
        assert production >= len(found)
        # Agreement with production, side by side, written by the scorer every few seconds.

        def agreement() -> list[tuple[str, float]]:
            return list(
                client.query(
                    "SELECT metric, value FROM performance_metrics WHERE model_version = 'v2' "
                    "AND route = 'shadow' AND metric IN "
                    "('shadow_agreement_rate', 'shadow_pair_count')"
                ).result_rows
            )

        assert wait_for(lambda: len({m for m, _ in agreement()}) == 2, 30)
        figures = dict(agreement())
        assert 0.0 <= figures["shadow_agreement_rate"] <= 1.0
        assert figures["shadow_pair_count"] >= 1
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(30)
        run.stop_all()
        replica.stop()
