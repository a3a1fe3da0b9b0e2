"""Shadow scoring off the request path, against the real broker, the stream processor and
ClickHouse: the scorer's answers land beside production's under the same prediction_id, while
the replica never calls the shadow model."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest
from _metrics_harness import FEATURES, MODEL, metrics_settings, publish, wait_for
from _stream_harness import new_run

from safeloop.infra.kafka.clients import make_consumer
from safeloop.infra.portcheck import free_port
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.schemas.events import CommandKind, Route
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.store import ModelStore
from safeloop.services.serving.replica import Replica, load_catalog
from safeloop.services.shadow.wiring import build_shadow_scorer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# The policy field of /proc/<pid>/task/<tid>/stat (field 41; 5 is SCHED_IDLE).
STAT_POLICY_FIELD = 41


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

        # The processor lands them: a minute or more on a loaded 2-core box.
        assert wait_for(lambda: len(pairs()) >= 30, 180), run.worker_log("worker-0")
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


def _thread_policies(pid: int) -> dict[int, int]:
    """Scheduling policy of every thread of `pid` (threads that end while read are skipped)."""
    policies = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:
            continue
        # Fields after the command name (which may hold spaces) start at field 3.
        fields = stat[stat.rindex(")") + 2 :].split()
        policies[int(tid)] = int(fields[STAT_POLICY_FIELD - 3])
    return policies


def test_the_scorer_process_runs_at_idle_priority_and_still_lands_shadow_answers(
    settings: Settings, tmp_path: Path
) -> None:
    """`safeloop shadow-scorer` with no flag: SCHED_IDLE for the process and every thread it
    started (librdkafka's included), so it never takes a core from requests; answers still
    come, under the requests' prediction_ids."""
    replica = Replica(settings, "replica-idle-shadow", catalog=load_catalog(
        ModelStore(settings.models_path), [MODEL]
    ))  # fmt: skip
    replica.start()
    log_path = tmp_path / "shadow-scorer.log"
    reader = make_consumer(settings, f"it-shadow-read-{uuid.uuid4().hex[:6]}", **{
        "auto.offset.reset": "earliest"
    })  # fmt: skip
    reader.subscribe([settings.topics.predictions])
    with log_path.open("wb") as log:
        scorer = subprocess.Popen(
            [sys.executable, "-m", "safeloop.services.cli.main", "shadow-scorer",
             "--scorer-id", "shadow-idle-it"],
            cwd=REPO, env={**os.environ, **settings.to_env()}, stdout=log, stderr=log,
        )  # fmt: skip
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
        assert wait_for(
            lambda: "shadow scorer shadow-idle-it running" in log_path.read_text(), 60
        ), log_path.read_text()[-3000:]
        assert "CPU priority idle: SCHED_IDLE" in log_path.read_text()
        assert os.sched_getscheduler(scorer.pid) == os.SCHED_IDLE
        policies = _thread_policies(scorer.pid)
        assert len(policies) > 1, "the scorer runs librdkafka threads too"
        assert set(policies.values()) == {os.SCHED_IDLE}, policies
        answered: set[str] = set()
        shadowed: set[str] = set()

        def shadowed_enough() -> bool:
            # Keep sending: the scorer's group starts at the end of the topic.
            for _ in range(10):
                answered.add(
                    replica.predictor.predict(MODEL, uuid.uuid4().hex, FEATURES).prediction_id
                )
            for message in reader.consume(500, 0.2):
                if message.error() is not None:
                    continue
                event = PREDICTION_CODEC.decode(message.value())
                if event.route is Route.SHADOW and event.replica_id == "shadow-idle-it":
                    assert event.model_version == "v2"
                    shadowed.add(event.prediction_id)
            return len(shadowed) >= 30

        assert wait_for(shadowed_enough, 90), (len(shadowed), log_path.read_text()[-3000:])
        assert shadowed <= answered
        # Threads started while it worked (new broker connections) are idle too.
        assert set(_thread_policies(scorer.pid).values()) == {os.SCHED_IDLE}
    finally:
        scorer.terminate()
        try:
            scorer.wait(30)
        except subprocess.TimeoutExpired:
            scorer.kill()
            scorer.wait(30)
        reader.close()
        replica.stop()
    assert scorer.returncode == 0, log_path.read_text()[-3000:]
