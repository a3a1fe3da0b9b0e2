"""The retraining loop's state machine, its persistence, candidate building and the process
around it (with fakes for the world): decision -> candidate -> shadow -> canary -> outcome."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from safeloop.schemas.events import (
    FeedbackRecord,
    FeedbackStatus,
    RetrainingDecision,
    Route,
    Urgency,
)
from safeloop.services.models.linear import LogisticModel
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model
from safeloop.services.retrain_loop.service import RetrainService
from safeloop.services.retraining import machine
from safeloop.services.retraining.candidate import CandidateSpec, build_candidate, candidate_version
from safeloop.services.retraining.exceptions import (
    CandidateError,
    RetrainingPolicyError,
    RunTransitionError,
    TrainerLoadError,
)
from safeloop.services.retraining.export import weighted_export
from safeloop.services.retraining.linear_trainer import ENTRY_POINT, train
from safeloop.services.retraining.loop_policy import LoopPolicy
from safeloop.services.retraining.machine import (
    Evaluation,
    RetrainRun,
    RolloutPhase,
    ShadowEvidence,
    Stage,
    StartCanary,
    StartShadow,
    StopShadow,
    Trained,
    TrainingFailed,
)
from safeloop.services.retraining.persist import run_from_json, run_to_json, step_of
from safeloop.services.retraining.trainer import TrainingWindow, load_trainer

POLICY = LoopPolicy(shadow_bake_ms=1_000, shadow_deadline_ms=10_000, min_shadow_pairs=100)
GOOD = Evaluation("accuracy", True, candidate=0.80, production=0.70, rows=200)
WORSE = Evaluation("accuracy", True, candidate=0.60, production=0.70, rows=200)


def _decision(decision_id: str = "churn:v1:1000", should: bool = True) -> RetrainingDecision:
    return RetrainingDecision(
        decision_id=decision_id,
        model_name="churn",
        model_version="v1",
        timestamp=1_000,
        should_retrain=should,
        urgency=Urgency.CRITICAL if should else Urgency.NONE,
        reason="performance dropped 8.0%",
        max_psi=0.4,
        performance_drop=0.08,
        drifted_features=["age"],
    )


def _shadowing(evaluation: Evaluation = GOOD, now_ms: int = 2_000) -> RetrainRun:
    run = machine.begin(_decision(), 1_000)
    run = machine.on_trained(
        run, Trained("v1-rabc", {"decision_id": run.run_id}, evaluation), 1_500
    ).run
    return machine.start_shadow(run, now_ms).run


# -- the state machine --------------------------------------------------------------------


def test_a_decision_not_asking_for_retraining_starts_no_run() -> None:
    with pytest.raises(RunTransitionError):
        machine.begin(_decision(should=False), 1_000)


def test_training_registers_the_candidate_with_its_lineage_then_shadow_starts() -> None:
    run = machine.begin(_decision(), 1_000)
    assert (run.stage, run.step, run.run_id) == (Stage.RECEIVED, 0, "churn:v1:1000")
    trained = machine.on_trained(run, Trained("v1-rabc", {"half_life_ms": "5"}, GOOD), 1_200)
    assert trained.effects == ()
    registered = trained.run
    assert (registered.stage, registered.step) == (Stage.REGISTERED, 1)
    assert registered.candidate_version == "v1-rabc"
    assert registered.lineage == {"half_life_ms": "5"}
    shadow = machine.start_shadow(registered, 1_300)
    assert shadow.run.stage is Stage.SHADOWING and shadow.run.stage_started_ms == 1_300
    assert shadow.effects == (StartShadow("churn", "v1-rabc"),)


def test_a_failed_training_ends_the_run() -> None:
    run = machine.begin(_decision(), 1_000)
    failed = machine.on_trained(run, TrainingFailed("12 rows"), 1_100).run
    assert failed.stage is Stage.FAILED and failed.stage.finished
    assert "12 rows" in failed.reason


def test_shadow_waits_for_its_bake_time_and_its_pairs() -> None:
    run = _shadowing()
    early = machine.judge_shadow(run, POLICY, ShadowEvidence(500, 0.95), 2_500)
    assert early.run.stage is Stage.SHADOWING and early.run.step == run.step
    few = machine.judge_shadow(run, POLICY, ShadowEvidence(50, 0.95), 5_000)
    assert few.run.stage is Stage.SHADOWING and few.effects == ()
    assert few.run.figures["shadow_pairs"] == "50"


def test_an_acceptable_candidate_is_approved_then_its_canary_starts() -> None:
    run = _shadowing()
    judged = machine.judge_shadow(run, POLICY, ShadowEvidence(500, 0.9), 3_001)
    assert judged.run.stage is Stage.APPROVED and judged.effects == ()
    assert "agreement 90.0%" in judged.run.reason
    canary = machine.start_canary(judged.run, 3_002)
    assert canary.run.stage is Stage.CANARY
    assert canary.effects[0] == StopShadow("churn", "v1-rabc")
    assert isinstance(canary.effects[1], StartCanary) and canary.effects[1].version == "v1-rabc"


def test_low_agreement_rejects_and_turns_the_shadow_off() -> None:
    judged = machine.judge_shadow(_shadowing(), POLICY, ShadowEvidence(500, 0.5), 2_100)
    # Failing evidence does not wait for the bake time.
    assert judged.run.stage is Stage.REJECTED
    assert judged.effects == (StopShadow("churn", "v1-rabc"),)
    assert "agreement 50.0% below 70.0%" in judged.run.reason


def test_a_candidate_estimated_worse_than_production_is_rejected() -> None:
    judged = machine.judge_shadow(_shadowing(WORSE), POLICY, ShadowEvidence(500, 0.95), 3_500)
    assert judged.run.stage is Stage.REJECTED
    assert "accuracy worse than production's by 0.1" in judged.run.reason


def test_lower_is_better_metrics_are_compared_the_right_way_round() -> None:
    better = Evaluation("rmse", False, candidate=0.4, production=0.5, rows=10)
    worse = Evaluation("rmse", False, candidate=0.6, production=0.5, rows=10)
    assert better.shortfall() == pytest.approx(-0.1)
    assert worse.shortfall() == pytest.approx(0.1)
    assert Evaluation("rmse", False, 0.6, None, 10).shortfall() is None


def test_too_few_pairs_by_the_deadline_rejects() -> None:
    judged = machine.judge_shadow(_shadowing(), POLICY, ShadowEvidence(10, 0.99), 12_000)
    assert judged.run.stage is Stage.REJECTED and "10 of 100 shadow pairs" in judged.run.reason


def test_the_approval_gate_holds_until_a_person_approves() -> None:
    gated = dataclasses.replace(POLICY, approval=True)
    waiting = machine.judge_shadow(_shadowing(), gated, ShadowEvidence(500, 0.9), 3_001).run
    assert waiting.stage is Stage.AWAITING_APPROVAL
    with pytest.raises(RunTransitionError):
        machine.start_canary(waiting, 3_002)
    approved = machine.approve(waiting, "ana@host", "looked fine", 4_000).run
    assert approved.stage is Stage.APPROVED and approved.actor == "ana@host"
    assert "approved by ana@host: looked fine" in approved.reason
    with pytest.raises(RunTransitionError):
        machine.approve(approved, "ana@host", "again", 4_001)


def test_a_person_can_reject_a_waiting_candidate() -> None:
    gated = dataclasses.replace(POLICY, approval=True)
    waiting = machine.judge_shadow(_shadowing(), gated, ShadowEvidence(500, 0.9), 3_001).run
    rejected = machine.reject(waiting, "ana@host", "not before the sale", 4_000)
    assert rejected.run.stage is Stage.REJECTED
    assert rejected.effects == (StopShadow("churn", "v1-rabc"),)


def test_the_rollout_outcome_ends_the_run() -> None:
    approved = machine.judge_shadow(_shadowing(), POLICY, ShadowEvidence(500, 0.9), 3_001).run
    canary = machine.start_canary(approved, 3_002).run
    running = machine.on_rollout(canary, RolloutPhase.RUNNING, "step 2", 4_000)
    assert running.run == canary
    assert (
        machine.on_rollout(canary, RolloutPhase.PROMOTED, "ok", 5_000).run.stage is Stage.PROMOTED
    )
    back = machine.on_rollout(canary, RolloutPhase.ROLLED_BACK, "worse", 5_000).run
    assert back.stage is Stage.ROLLED_BACK and back.stage.finished


def test_loop_policy_refuses_nonsense() -> None:
    with pytest.raises(RetrainingPolicyError):
        LoopPolicy(shadow_bake_ms=10, shadow_deadline_ms=5)
    with pytest.raises(RetrainingPolicyError):
        LoopPolicy(min_agreement=1.5)


# -- persistence --------------------------------------------------------------------------


def test_a_run_round_trips_through_json_and_its_row() -> None:
    run = dataclasses.replace(_shadowing(), figures={"shadow_pairs": "3"})
    assert run_from_json(run_to_json(run)) == run
    row = step_of(run)
    assert (row.run_id, row.stage, row.step, row.candidate_version) == (
        run.run_id,
        "shadowing",
        2,
        "v1-rabc",
    )
    fresh = machine.begin(_decision(), 1)
    assert run_from_json(run_to_json(fresh)) == fresh


# -- trainer entry point and candidate ----------------------------------------------------


def test_the_trainer_is_loaded_from_module_colon_function() -> None:
    assert load_trainer(ENTRY_POINT) is train
    for bad in ("no_colon", "safeloop.nope:train", "safeloop.services.retraining.linear_trainer:x"):
        with pytest.raises(TrainerLoadError):
            load_trainer(bad)


def _records(count: int, *, seed: int, now_ms: int) -> list[FeedbackRecord]:
    data = make_dataset(ModelTask.CLASSIFICATION, count, seed=seed)
    return [
        FeedbackRecord(
            prediction_id=f"p{seed}-{i}",
            model_name="churn",
            model_version="v1",
            route=Route.PRODUCTION,
            replica_id="r",
            features=dict(zip(data.feature_names, row.tolist(), strict=True)),
            prediction=0.5,
            confidence=0.5,
            prediction_timestamp=now_ms - (count - i) * 1_000,
            status=FeedbackStatus.JOINED,
            ground_truth=float(target),
            outcome_timestamp=now_ms,
            label_delay_ms=1.0,
            outcome_source="test",
            emitted_at=now_ms,
        )
        for i, (row, target) in enumerate(zip(data.rows, data.targets, strict=True))
    ]


def _spec(min_rows: int = 50) -> CandidateSpec:
    features = tuple(make_dataset(ModelTask.CLASSIFICATION, 1).feature_names)
    return CandidateSpec(
        "churn",
        "churn:v1:1000",
        "v1",
        ModelTask.CLASSIFICATION,
        features,
        60_000.0,
        min_rows=min_rows,
    )


def test_a_candidate_is_trained_on_older_rows_and_scored_beside_production_on_the_newest() -> None:
    now_ms = 10_000_000
    spec = _spec()
    rows = weighted_export(
        _records(1_000, seed=3, now_ms=now_ms), now_ms, spec.half_life_ms, spec.feature_names
    )
    # A production model that learned nothing: the candidate must beat it on fresh rows.
    weak, metadata = train_model(
        "churn", "v1", ModelTask.CLASSIFICATION, make_dataset(ModelTask.CLASSIFICATION, 200, seed=1)
    )
    blank = LogisticModel("v1", spec.feature_names, np.zeros(len(spec.feature_names)), 0.0)
    candidate = build_candidate(
        spec, rows, train, LoadedModel(blank, metadata), now_ms=now_ms, lineage={"decision_id": "d"}
    )
    version = candidate_version("v1", "churn:v1:1000")
    assert candidate.model.version == version == candidate.metadata.version
    evaluation = candidate.evaluation
    assert evaluation.metric == "accuracy" and evaluation.rows == 200
    assert evaluation.production is not None and evaluation.candidate > evaluation.production + 0.05
    lineage = candidate.metadata.lineage
    assert lineage["decision_id"] == "d" and lineage["retraining_run"] == "churn:v1:1000"
    assert lineage["training_rows"] == "800" and lineage["half_life_ms"] == "60000"
    assert int(lineage["train_to_ms"]) < int(lineage["evaluation_to_ms"])
    assert set(candidate.metadata.baseline.features) == set(spec.feature_names)
    assert weak.version == "v1"


def test_too_few_rows_or_a_failing_trainer_fail_the_candidate() -> None:
    now_ms = 10_000_000
    spec = _spec(min_rows=500)
    rows = weighted_export(_records(100, seed=3, now_ms=now_ms), now_ms, 1.0, spec.feature_names)
    with pytest.raises(CandidateError, match="100 complete labelled rows"):
        build_candidate(spec, rows, train, None, now_ms=now_ms, lineage={})

    def broken(window: TrainingWindow) -> LogisticModel:
        raise RuntimeError("out of memory")

    with pytest.raises(CandidateError, match="RuntimeError: out of memory"):
        build_candidate(_spec(), rows, broken, None, now_ms=now_ms, lineage={})


def test_recency_weights_steer_the_shipped_trainer() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 1))
    # Old rows say y = 1 when x > 0, new rows say the opposite; weights favour the new.
    y = np.where(np.arange(400) < 200, x[:, 0] > 0, x[:, 0] <= 0).astype(np.float64)
    dtype = [
        ("prediction_timestamp", np.int64),
        ("ground_truth", np.float64),
        ("weight", np.float64),
        ("feature_x", np.float64),
    ]
    rows = np.empty(400, dtype=dtype)
    rows["prediction_timestamp"] = np.arange(400)
    rows["ground_truth"] = y
    rows["feature_x"] = x[:, 0]
    rows["weight"] = np.where(np.arange(400) < 200, 0.01, 1.0)
    model = train(TrainingWindow("m", "v2", ModelTask.CLASSIFICATION, ("x",), rows, 1.0))
    assert model.weights[0] < 0


# -- the process, with the world faked ------------------------------------------------------


class FakeSteps:
    def __init__(self) -> None:
        self.rows: list[RetrainRun] = []

    def record(self, run: RetrainRun) -> None:
        if not any(r.run_id == run.run_id and r.step == run.step for r in self.rows):
            self.rows.append(run)

    def runs(self, model_name: str = "", run_id: str = "") -> list[RetrainRun]:
        latest: dict[str, RetrainRun] = {}
        for run in self.rows:
            if model_name and run.model_name != model_name:
                continue
            if run_id and run.run_id != run_id:
                continue
            if run.run_id not in latest or latest[run.run_id].step < run.step:
                latest[run.run_id] = run
        return list(latest.values())

    def find(self, run_id: str) -> RetrainRun | None:
        found = self.runs(run_id=run_id)
        return found[0] if found else None


class FakeActions:
    def __init__(self) -> None:
        self.performed: list[object] = []
        self.trained = 0
        self.evidence = ShadowEvidence(0, None)
        self.rollout: tuple[RolloutPhase, str] | None = None
        self.production = "v1"
        self.refreshed = 0

    def refresh(self) -> None:
        self.refreshed += 1

    def close(self) -> None:
        pass

    def production_version(self, model_name: str) -> str | None:
        return self.production

    def train(self, run: RetrainRun, now_ms: int) -> Trained:
        self.trained += 1
        return Trained("v1-rnew", {"decision_id": run.run_id}, GOOD)

    def shadow_evidence(self, run: RetrainRun) -> ShadowEvidence:
        return self.evidence

    def rollout_phase(self, run: RetrainRun) -> tuple[RolloutPhase, str] | None:
        return self.rollout

    def perform(self, effect: object, now_ms: int) -> None:
        self.performed.append(effect)


def _service(steps: FakeSteps, actions: FakeActions, policy: LoopPolicy = POLICY) -> RetrainService:
    clock = iter(range(1_000, 10_000_000, 1))
    return RetrainService(steps, actions, policy, clock=lambda: next(clock))


def test_the_process_closes_the_loop_and_records_every_step() -> None:
    steps, actions = FakeSteps(), FakeActions()
    service = _service(steps, actions)
    assert service.accept(_decision()) is not None
    assert service.accept(_decision("churn:v1:2000")) is None  # one run per model at a time
    assert service.accept(_decision("x", should=False)) is None
    service.tick(1_000)
    assert service.active["churn"].stage is Stage.SHADOWING
    assert actions.performed == [StartShadow("churn", "v1-rnew")]
    actions.evidence = ShadowEvidence(500, 0.9)
    service.tick(1_500)  # not baked yet
    assert service.active["churn"].stage is Stage.SHADOWING
    service.tick(5_000)
    assert service.active["churn"].stage is Stage.CANARY
    assert isinstance(actions.performed[-1], StartCanary)
    actions.rollout = (RolloutPhase.PROMOTED, "last step passed")
    service.tick(9_000)
    assert "churn" not in service.active
    assert [r.stage for r in steps.rows] == [
        Stage.RECEIVED,
        Stage.REGISTERED,
        Stage.SHADOWING,
        Stage.APPROVED,
        Stage.CANARY,
        Stage.PROMOTED,
    ]
    assert service.counts.decisions_skipped == 1
    assert actions.refreshed >= 4  # the control topic is caught up with on every tick


def test_a_decision_about_a_version_no_longer_in_production_is_moot() -> None:
    steps, actions = FakeSteps(), FakeActions()
    actions.production = "v2"
    service = _service(steps, actions)
    assert service.accept(_decision()) is None
    assert service.counts.decisions_skipped == 1 and steps.rows == []


def test_a_restarted_process_resumes_from_the_recorded_stage() -> None:
    steps, actions = FakeSteps(), FakeActions()
    first = _service(steps, actions)
    first.accept(_decision())
    first.tick(1_000)
    assert first.active["churn"].stage is Stage.SHADOWING
    # The process dies; a new one reads the recorded steps and does not retrain.
    again = FakeActions()
    again.evidence = ShadowEvidence(500, 0.9)
    second = _service(steps, again)
    second.resume()
    assert second.active["churn"].stage is Stage.SHADOWING
    second.accept(_decision())  # redelivered after the crash: no second run
    assert second.counts.runs_started == 0
    second.tick(10_000)
    assert again.trained == 0
    assert second.active["churn"].stage is Stage.CANARY


def test_the_process_acts_on_a_persons_approval_and_rejection() -> None:
    gated = dataclasses.replace(POLICY, approval=True)
    steps, actions = FakeSteps(), FakeActions()
    service = _service(steps, actions, gated)
    service.accept(_decision())
    service.tick(1_000)
    actions.evidence = ShadowEvidence(500, 0.9)
    service.tick(5_000)
    waiting = service.active["churn"]
    assert waiting.stage is Stage.AWAITING_APPROVAL
    service.tick(6_000)
    assert service.active["churn"].stage is Stage.AWAITING_APPROVAL  # held
    steps.record(machine.approve(waiting, "ana@host", "ok", 7_000).run)  # the CLI's row
    service.tick(8_000)
    assert service.active["churn"].stage is Stage.CANARY

    steps2, actions2 = FakeSteps(), FakeActions()
    service2 = _service(steps2, actions2, gated)
    service2.accept(_decision())
    service2.tick(1_000)
    actions2.evidence = ShadowEvidence(500, 0.9)
    service2.tick(5_000)
    steps2.record(machine.reject(service2.active["churn"], "ana@host", "no", 7_000).run)
    service2.tick(8_000)
    assert "churn" not in service2.active
    assert actions2.performed[-1] == StopShadow("churn", "v1-rnew")


def test_after_a_rolled_back_run_the_same_version_waits_before_retraining_again() -> None:
    now = [1_000]
    steps, actions = FakeSteps(), FakeActions()
    policy = dataclasses.replace(POLICY, retry_after_ms=60_000)
    service = RetrainService(steps, actions, policy, clock=lambda: now[0])
    service.accept(_decision())
    actions.evidence = ShadowEvidence(500, 0.9)
    service.tick(1_000)
    service.tick(5_000)
    actions.rollout = (RolloutPhase.ROLLED_BACK, "canary accuracy lower")
    service.tick(9_000)
    assert service.finished["churn:v1:1000"].stage is Stage.ROLLED_BACK
    # A fresh decision about v1 within the minute starts nothing; one after it does.
    now[0] = 9_000 + 59_999
    assert service.accept(_decision("churn:v1:2000")) is None
    assert service.counts.decisions_skipped == 1
    # ... also in a restarted process, which knows the ended run from its recorded steps.
    restarted = RetrainService(steps, FakeActions(), policy, clock=lambda: now[0])
    restarted.resume()
    assert restarted.accept(_decision("churn:v1:2000")) is None
    now[0] = 9_000 + 60_000
    assert service.accept(_decision("churn:v1:3000")) is not None


def test_a_promoted_run_does_not_hold_back_the_next_one() -> None:
    now = [1_000]
    steps, actions = FakeSteps(), FakeActions()
    service = RetrainService(steps, actions, POLICY, clock=lambda: now[0])
    service.accept(_decision())
    actions.evidence = ShadowEvidence(500, 0.9)
    service.tick(1_000)
    service.tick(5_000)
    actions.rollout = (RolloutPhase.PROMOTED, "all steps passed")
    service.tick(9_000)
    now[0] = 10_000
    assert service.accept(_decision("churn:v1:2000")) is not None
