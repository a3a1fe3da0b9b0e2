"""Provisional promotion: a step passes on the label-free estimate when labels are far away,
and the promotion is rolled back automatically when the labels, once landed, contradict it."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
from test_rollout import GOOD, PLAN, accuracy, started
from test_rollout_approval_machine import RecordingIssuer

from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig
from safeloop.services.control.audit import EntryType
from safeloop.services.metrics.estimation import estimate_performance
from safeloop.services.metrics.performance import Task
from safeloop.services.rollout.controller import RolloutController
from safeloop.services.rollout.gate import PROVISIONAL, GateOutcome
from safeloop.services.rollout.intents import Promote, Rollback
from safeloop.services.rollout.machine import Phase, advance, recheck_provisional
from safeloop.services.rollout.persist import state_from_json, state_to_json

LABELS_FAR = replace(PLAN, require_labels=True, provisional=True)
rng = np.random.default_rng(3)
CONFIDENT = estimate_performance(rng.choice([0.05, 0.95], 2_000))  # expected accuracy 0.95
UNSURE = estimate_performance(rng.choice([0.35, 0.65], 2_000))  # expected accuracy 0.65
ON_ESTIMATES = replace(GOOD, canary_estimate=CONFIDENT, production_estimate=CONFIDENT)


def test_a_step_short_of_labels_passes_provisionally_on_the_estimate() -> None:
    passed = advance(LABELS_FAR, started(LABELS_FAR), ON_ESTIMATES, 1_000)
    assert passed.gate is not None and passed.gate.outcome is GateOutcome.PASS
    assert passed.gate.reason.startswith("provisional")
    assert passed.gate.numbers[PROVISIONAL] == "true"
    assert passed.state.provisional
    promoted = _promoted_provisionally()
    assert promoted.phase is Phase.PROMOTED and promoted.provisional


def test_an_estimate_that_says_worse_fails_and_no_estimate_keeps_waiting() -> None:
    worse = replace(GOOD, canary_estimate=UNSURE, production_estimate=CONFIDENT)
    failed = advance(LABELS_FAR, started(LABELS_FAR), worse, 1_000)
    assert failed.gate is not None and failed.gate.outcome is GateOutcome.FAIL
    assert "estimated accuracy lower" in failed.gate.reason
    waiting = advance(LABELS_FAR, started(LABELS_FAR), GOOD, 1_000)
    assert waiting.gate is not None and waiting.gate.outcome is GateOutcome.INCONCLUSIVE
    # Without `provisional` the estimate is never used.
    strict = replace(LABELS_FAR, provisional=False)
    gate = advance(strict, started(strict), ON_ESTIMATES, 1_000).gate
    assert gate is not None and gate.outcome is GateOutcome.INCONCLUSIVE
    # Real labels, when there, decide as before (and the pass is not provisional).
    labelled = replace(
        ON_ESTIMATES,
        canary_performance=accuracy(180, 200),
        production_performance=accuracy(180, 200),
    )
    real = advance(LABELS_FAR, started(LABELS_FAR), labelled, 1_000)
    assert real.gate is not None and PROVISIONAL not in real.gate.numbers
    assert not real.state.provisional


def _promoted_provisionally() -> Any:
    state, now = started(LABELS_FAR), 0
    while state.phase is Phase.RUNNING:
        now += 1_000
        transition = advance(LABELS_FAR, state, ON_ESTIMATES, now)
        state = transition.state
    assert isinstance(transition.intents[0], Promote)
    return state


def test_labels_that_contradict_the_promotion_roll_it_back() -> None:
    promoted = _promoted_provisionally()
    assert recheck_provisional(LABELS_FAR, promoted, (90, 99), (40, 99), 3_000).intents == ()
    contradicted = recheck_provisional(LABELS_FAR, promoted, (900, 1_000), (400, 1_000), 3_000)
    assert contradicted.state.phase is Phase.ROLLED_BACK
    (intent,) = contradicted.intents
    assert isinstance(intent, Rollback) and intent.to_version == "v1"
    assert "contradicted by labels" in contradicted.state.reason


def test_labels_that_agree_confirm_the_promotion_without_a_command() -> None:
    promoted = _promoted_provisionally()
    confirmed = recheck_provisional(LABELS_FAR, promoted, (9_000, 10_000), (9_010, 10_000), 3_000)
    assert confirmed.intents == ()
    assert confirmed.state.phase is Phase.PROMOTED and not confirmed.state.provisional
    assert state_from_json(state_to_json(promoted)).provisional


class FixedLabels:
    def __init__(self, known_good: tuple[int, int], candidate: tuple[int, int]) -> None:
        self.counts = (known_good, candidate)
        self.asked: list[tuple[str, str, str, int]] = []

    def accuracy_counts(
        self, model_name: str, known_good: str, candidate: str, since_ms: int
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        self.asked.append((model_name, known_good, candidate, since_ms))
        return self.counts


class PublishingIssuer(RecordingIssuer):
    def issue(
        self, model_name: str, kind: CommandKind, change: Any, **kwargs: Any
    ) -> ControlCommand:
        command = replace(
            self._latest, kind=kind, config=change(self._latest.config), reason=kwargs["reason"]
        )
        self.issued.append(command)
        return command


def test_controller_rolls_back_a_provisional_promotion_when_labels_land() -> None:
    promoted = _promoted_provisionally()
    latest = ControlCommand(
        "c2", "fraud", CommandKind.PROMOTE, 2, 0, "safeloop-metrics", "rollout",
        ModelConfig(production_version="v2"), "k", "s",
    )  # fmt: skip
    issuer = PublishingIssuer(latest)
    labels = FixedLabels((900, 1_000), (400, 1_000))
    controller = RolloutController(
        issuer,  # type: ignore[arg-type]
        lambda model, version: Task.CLASSIFICATION,
        labels,
        recheck_interval_ms=1_000,
    )
    controller._adopt(LABELS_FAR, promoted)
    assert "fraud" in controller.provisional
    controller.tick(5_000)
    (rollback,) = issuer.issued
    assert rollback.kind is CommandKind.ROLLBACK and rollback.config.production_version == "v1"
    assert labels.asked == [("fraud", "v1", "v2", promoted.started_ms)]
    assert "fraud" not in controller.provisional
    assert controller.state_of("fraud").phase is Phase.ROLLED_BACK  # type: ignore[union-attr]


def test_controller_records_a_confirmed_promotion_and_stops_watching() -> None:
    promoted = _promoted_provisionally()
    latest = ControlCommand(
        "c2", "fraud", CommandKind.PROMOTE, 2, 0, "safeloop-metrics", "rollout",
        ModelConfig(production_version="v2"), "k", "s",
    )  # fmt: skip
    issuer = PublishingIssuer(latest)
    controller = RolloutController(
        issuer,  # type: ignore[arg-type]
        lambda model, version: Task.CLASSIFICATION,
        FixedLabels((9_000, 10_000), (9_050, 10_000)),
        recheck_interval_ms=1_000,
    )
    controller._adopt(LABELS_FAR, promoted)
    controller.tick(5_000)
    assert issuer.issued == []
    ((row, entry_types),) = issuer.audited
    assert entry_types == (EntryType.ROLLOUT,)
    assert "confirmed" in row.reason
    assert json.loads(row.details["rollout_state"])["provisional"] is False
    assert controller.provisional == {}
