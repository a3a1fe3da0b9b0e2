"""The retraining loop against the real broker and ClickHouse: a `should_retrain` decision on the
`retraining` topic -> a candidate trained on the labelled window and registered with its
lineage -> shadow (scored by the real shadow scorer) -> the canary rollout started on two
replicas; with the approval gate, held until `safeloop retrain approve`, across a restart.

With an embedded MLflow registry and the metrics service driving the rollout, the loop closes
by itself: the candidate is MLflow's next version, promoted with the champion alias moved to
it; a candidate worse on live traffic is rolled back, and `retraining_steps` says so."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _metrics_harness import (
    MODEL,
    TEST_POLICY,
    FeedbackPublisher,
    Fleet,
    Traffic,
    fleet,
    metrics_service,
    metrics_settings,
    settings_env,
    wait_for,
)
from mlflow.tracking import MlflowClient

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.infra.kafka.clients import make_producer
from safeloop.infra.settings import Settings
from safeloop.schemas.events import (
    FeedbackRecord,
    FeedbackStatus,
    RetrainingDecision,
    Route,
    Urgency,
)
from safeloop.schemas.tables import FEEDBACK
from safeloop.services.cli.main import main
from safeloop.services.models.open_store import open_model_store
from safeloop.services.models.store import ModelStore
from safeloop.services.models.store_protocol import CHAMPION_ALIAS
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model
from safeloop.services.monitor.service import MetricsConfig
from safeloop.services.retrain_loop.service import RetrainService
from safeloop.services.retrain_loop.step_log import StepLog
from safeloop.services.retrain_loop.wiring import build_retrain_service
from safeloop.services.retraining.candidate import candidate_version
from safeloop.services.retraining.loop_policy import LoopPolicy
from safeloop.services.retraining.publisher import RetrainingPublisher
from safeloop.services.rollout.plan import RolloutPlan
from safeloop.services.serving.replica import Replica
from safeloop.services.shadow.wiring import build_shadow_scorer

pytestmark = pytest.mark.integration

POLICY = LoopPolicy(
    shadow_bake_ms=1_000,
    shadow_deadline_ms=120_000,
    min_shadow_pairs=50,
    min_agreement=0.7,
    # 120 held-out rows: candidate and production learned the same relation, within noise.
    performance_tolerance=0.1,
)
PLAN = RolloutPlan(steps_percent=(50.0, 100.0), bake_ms=300, min_sample_per_step=25)
Cli = Callable[..., tuple[int, str]]


@pytest.fixture
def settings(stack, tmp_path: Path) -> Settings:  # type: ignore[no-untyped-def]
    return metrics_settings(stack.fresh("retrain"), tmp_path / "models")


@pytest.fixture
def replicas(settings: Settings) -> Iterator[Fleet]:
    with fleet(settings, local_guard=False) as started:
        yield started


@pytest.fixture
def cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(argv))
        return code, capsys.readouterr().out

    return run


def _label_window(settings: Settings, count: int = 600, version: str = "v1") -> None:
    """Joined feedback of the last hour, labelled by the relation the models learned."""
    data = make_dataset(ModelTask.CLASSIFICATION, count, seed=11)
    now_ms = time.time_ns() // 1_000_000
    records = [
        FeedbackRecord(
            prediction_id=f"lab-{i}",
            model_name=MODEL,
            model_version=version,
            route=Route.PRODUCTION,
            replica_id="r",
            features=dict(zip(data.feature_names, row.tolist(), strict=True)),
            prediction=0.5,
            confidence=0.5,
            prediction_timestamp=now_ms - (count - i) * 5_000,
            status=FeedbackStatus.JOINED,
            ground_truth=float(target),
            outcome_timestamp=now_ms,
            label_delay_ms=1.0,
            outcome_source="it",
            emitted_at=now_ms,
        )
        for i, (row, target) in enumerate(zip(data.rows, data.targets, strict=True))
    ]
    client = clickhouse_client(settings)
    insert_idempotent(client, FEEDBACK, FEEDBACK.rows(records))


def _decide(settings: Settings, version: str = "v1") -> RetrainingDecision:
    now_ms = time.time_ns() // 1_000_000
    decision = RetrainingDecision(
        decision_id=f"{MODEL}:{version}:{now_ms}",
        model_name=MODEL,
        model_version=version,
        timestamp=now_ms,
        should_retrain=True,
        urgency=Urgency.CRITICAL,
        reason="performance dropped 7.0% (critical at 5.0%); major drift",
        max_psi=0.4,
        performance_drop=0.07,
        drifted_features=["age"],
    )
    publisher = RetrainingPublisher(
        make_producer(settings), settings.topics.retraining, clickhouse_client(settings)
    )
    publisher.publish([decision])
    return decision


@contextmanager
def _running(thread_target: Callable[[threading.Event], None], name: str) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=thread_target, args=(stop,), name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def _loop(settings: Settings, policy: LoopPolicy, plan: RolloutPlan = PLAN) -> RetrainService:
    return build_retrain_service(
        settings, policy, plan, group=f"it-retrain-{uuid.uuid4().hex[:6]}", tick_ms=200
    )


def _stages(settings: Settings, run_id: str) -> list[str]:
    rows = (
        clickhouse_client(settings)
        .query(
            "SELECT stage FROM retraining_steps FINAL WHERE run_id = {r:String} ORDER BY step",
            parameters={"r": run_id},
        )
        .result_rows
    )
    return [str(row[0]) for row in rows]


def _canary_on(replicas: Fleet, version: str) -> bool:
    return all(
        c is not None and c.canary_version == version and c.canary_enabled
        for c in replicas.configs()
    )


def test_a_decision_becomes_a_shadowed_candidate_then_a_canary(replicas: Fleet) -> None:
    settings = replicas.settings
    _label_window(settings)
    scorer = build_shadow_scorer(settings, "shadow-it", group=f"it-sh-{uuid.uuid4().hex[:6]}")
    loop = _loop(settings, POLICY)
    traffic = Traffic(replicas, 200).start()
    try:
        with _running(scorer.run, "shadow-scorer"), _running(loop.run, "retrain"):
            decision = _decide(settings)
            version = candidate_version("v1", decision.decision_id)
            assert wait_for(lambda: _canary_on(replicas, version), 120), (
                f"no canary: {loop.active} {loop.finished} {loop.counts}"
            )
    finally:
        traffic.stop()
    stages = _stages(settings, decision.decision_id)
    assert stages == ["received", "registered", "shadowing", "approved", "canary"], stages
    run = StepLog(clickhouse_client(settings)).find(decision.decision_id)
    assert run is not None and run.candidate_version == version
    assert int(run.figures["shadow_pairs"]) >= POLICY.min_shadow_pairs
    assert float(run.figures["shadow_agreement"]) >= POLICY.min_agreement
    # The candidate is in the registry with its lineage and its own training baseline.
    metadata = ModelStore(settings.models_path).load_metadata(MODEL, version)
    lineage = metadata.lineage
    assert lineage["decision_id"] == decision.decision_id
    assert lineage["half_life_ms"] == f"{settings.retrain_half_life_ms:g}"
    assert int(lineage["training_rows"]) + int(lineage["evaluation_rows"]) == 600
    assert int(lineage["window_from_ms"]) < int(lineage["train_from_ms"])
    assert metadata.training_rows == 480
    # The canary is the existing rollout: its first step, recorded as a rollout in control_log.
    assert all(c is not None and c.canary_basis_points == 5_000 for c in replicas.configs())
    assert all(c is not None and not c.shadow_enabled for c in replicas.configs())
    kinds = (
        clickhouse_client(settings)
        .query(
            "SELECT kind, issuer FROM control_log WHERE model_name = {m:String} "
            "AND entry_type = 'command' ORDER BY sequence",
            parameters={"m": MODEL},
        )
        .result_rows
    )
    assert [k for k, _ in kinds] == ["set_shadow", "set_shadow", "set_canary"]
    assert {issuer for _, issuer in kinds} == {"safeloop-retrain"}


def test_the_approval_gate_holds_the_candidate_across_a_restart_until_approved(
    replicas: Fleet, cli: Cli
) -> None:
    settings = replicas.settings
    _label_window(settings)
    gated = LoopPolicy(
        shadow_bake_ms=POLICY.shadow_bake_ms,
        shadow_deadline_ms=POLICY.shadow_deadline_ms,
        min_shadow_pairs=POLICY.min_shadow_pairs,
        min_agreement=POLICY.min_agreement,
        performance_tolerance=POLICY.performance_tolerance,
        approval=True,
    )
    scorer = build_shadow_scorer(settings, "shadow-it", group=f"it-sh-{uuid.uuid4().hex[:6]}")
    first = _loop(settings, gated)
    traffic = Traffic(replicas, 200).start()
    try:
        with _running(scorer.run, "shadow-scorer"):
            with _running(first.run, "retrain"):
                decision = _decide(settings)
                assert wait_for(
                    lambda: "awaiting_approval" in _stages(settings, decision.decision_id), 120
                ), f"{first.active} {first.counts}"
                # Held: however long it waits, no canary.
                wait_for(lambda: False, 1.0)
                assert not any(c is not None and c.canary_version for c in replicas.configs())
            code, out = cli("retrain", "status", MODEL)
            assert code == 0 and "awaiting_approval" in out, out
            # The loop is down; the approval is recorded and waits for it.
            code, out = cli("retrain", "approve", MODEL, "--reason", "checked the lineage")
            assert code == 0 and "approved" in out, out
            code, out = cli("retrain", "approve", MODEL)
            assert code != 0  # nothing waits any more
            second = _loop(settings, gated)
            version = candidate_version("v1", decision.decision_id)
            with _running(second.run, "retrain-again"):
                assert wait_for(lambda: _canary_on(replicas, version), 60), (
                    f"{second.active} {second.counts}"
                )
    finally:
        traffic.stop()
    assert _stages(settings, decision.decision_id) == [
        "received",
        "registered",
        "shadowing",
        "awaiting_approval",
        "approved",
        "canary",
    ]
    actors = (
        clickhouse_client(settings)
        .query(
            "SELECT actor, reason FROM retraining_steps FINAL WHERE run_id = {r:String} "
            "AND stage = 'approved'",
            parameters={"r": decision.decision_id},
        )
        .result_rows
    )
    assert len(actors) == 1 and "@" in actors[0][0] and "checked the lineage" in actors[0][1]
    # The restarted loop resumed the run: the decision, delivered again, started no second one.
    assert second.counts.runs_started == 0


# -- MLflow as the registry: the loop closes by itself ------------------------------------------

METRICS = MetricsConfig(snapshot_interval_ms=1_000, rollout_tick_ms=100, guard_policy=TEST_POLICY)
# Live labels judge the canary: a candidate worse on live traffic is stopped at its first gate.
LABELLED_PLAN = dataclasses.replace(PLAN, require_labels=True, min_labelled_per_step=40)


@pytest.fixture
def mlflow_replicas(stack, tmp_path: Path) -> Iterator[Fleet]:  # type: ignore[no-untyped-def]
    """Two replicas serving `churn` from an embedded MLflow registry holding version 1."""
    settings = dataclasses.replace(
        metrics_settings(stack.fresh("retrain_mlflow"), tmp_path / "models"),
        model_store="mlflow",
        state_dir=tmp_path / "state",
    )
    dataset = make_dataset(ModelTask.CLASSIFICATION, 2000, seed=0)
    store = open_model_store(settings)
    assert store.save(*train_model(MODEL, "v1", ModelTask.CLASSIFICATION, dataset)) == "1"
    replicas = [Replica(settings, f"replica-{i}-{uuid.uuid4().hex[:4]}") for i in range(2)]
    for replica in replicas:
        replica.start()
    try:
        for replica in replicas:
            assert replica.wait_ready(60), f"{replica.replica_id} never caught up"
        yield Fleet(settings, replicas, flaky=None)  # type: ignore[arg-type]
    finally:
        for replica in replicas:
            replica.stop()


def _serving(replicas: Fleet, production: str) -> Callable[[], bool]:
    def serving() -> bool:
        return all(
            c is not None and c.production_version == production and c.canary_version is None
            for c in replicas.configs()
        )

    return serving


def _finished(loop: RetrainService, run_id: str) -> Callable[[], bool]:
    return lambda: run_id in loop.finished


def test_with_mlflow_the_loop_closes_by_itself_and_moves_the_champion(
    mlflow_replicas: Fleet,
) -> None:
    settings = mlflow_replicas.settings
    _label_window(settings, version="1")
    scorer = build_shadow_scorer(settings, "shadow-it", group=f"it-sh-{uuid.uuid4().hex[:6]}")
    loop = _loop(settings, POLICY)
    traffic = Traffic(mlflow_replicas, 200).start()
    try:
        with (
            metrics_service(settings, METRICS) as service,
            _running(scorer.run, "shadow-scorer"),
            _running(loop.run, "retrain"),
        ):
            decision = _decide(settings, "1")
            assert wait_for(_finished(loop, decision.decision_id), 180), (
                f"not finished: {loop.active} {loop.counts} {service.rollouts.state_of(MODEL)}"
            )
            # Version 2 is MLflow's number for the candidate; every replica serves it.
            assert wait_for(_serving(mlflow_replicas, "2"), 30), mlflow_replicas.configs()
            store = open_model_store(settings)
            assert wait_for(lambda: store.alias_version(MODEL, CHAMPION_ALIAS) == "2", 60)
    finally:
        traffic.stop()
    assert _stages(settings, decision.decision_id) == [
        "received",
        "registered",
        "shadowing",
        "approved",
        "canary",
        "promoted",
    ]
    run = loop.finished[decision.decision_id]
    assert run.candidate_version == "2" and run.stage.value == "promoted"
    assert store.versions(MODEL) == ["1", "2"]
    # The candidate's lineage is on its MLflow model version, where MLflow's UI shows it.
    tags = store.version_tags(MODEL, "2")
    assert tags["safeloop.lineage.decision_id"] == decision.decision_id
    assert tags["safeloop.lineage.half_life_ms"] == f"{settings.retrain_half_life_ms:g}"
    assert int(tags["safeloop.lineage.window_from_ms"]) < int(
        tags["safeloop.lineage.train_from_ms"]
    )
    assert tags["safeloop.trained_as"] == candidate_version("1", decision.decision_id)
    # ... and the champion alias moved to it with the promotion's control command.
    assert tags["safeloop.control_kind"] == "promote"
    assert tags["safeloop.previous_champion"] == "1"
    client = MlflowClient(settings.mlflow_uri)
    version = client.get_model_version(MODEL, "2")
    assert client.get_run(version.run_id).data.metrics["holdout_accuracy"] > 0.5
    assert store.load_metadata(MODEL, "2").lineage["decision_id"] == decision.decision_id


def test_with_mlflow_a_candidate_worse_on_live_traffic_is_rolled_back(
    mlflow_replicas: Fleet,
) -> None:
    settings = mlflow_replicas.settings
    _label_window(settings, version="1")
    scorer = build_shadow_scorer(settings, "shadow-it", group=f"it-sh-{uuid.uuid4().hex[:6]}")
    loop = _loop(settings, POLICY, LABELLED_PLAN)
    # Its history promised as much as production's; live, the candidate is right 40 % of the time.
    labels = FeedbackPublisher(settings, production_right=0.9, canary_right=0.4)
    traffic = Traffic(mlflow_replicas, 200, on_prediction=labels).start()
    try:
        with (
            metrics_service(settings, METRICS) as service,
            _running(scorer.run, "shadow-scorer"),
            _running(loop.run, "retrain"),
        ):
            decision = _decide(settings, "1")
            assert wait_for(_finished(loop, decision.decision_id), 180), (
                f"not finished: {loop.active} {loop.counts} {service.rollouts.state_of(MODEL)}"
            )
            assert wait_for(_serving(mlflow_replicas, "1"), 30), mlflow_replicas.configs()
    finally:
        traffic.stop()
        labels.close()
    stages = _stages(settings, decision.decision_id)
    assert stages == ["received", "registered", "shadowing", "approved", "canary", "rolled_back"]
    reason = (
        clickhouse_client(settings)
        .query(
            "SELECT reason FROM retraining_steps FINAL WHERE run_id = {r:String} "
            "AND stage = 'rolled_back'",
            parameters={"r": decision.decision_id},
        )
        .result_rows[0][0]
    )
    assert reason.startswith("rolled back:") and "accuracy" in reason, reason
    # The champion never left version 1; the candidate stays registered, for the record.
    assert open_model_store(settings).alias_version(MODEL, CHAMPION_ALIAS) in (None, "1")
    assert open_model_store(settings).versions(MODEL) == ["1", "2"]
