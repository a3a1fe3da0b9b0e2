"""`safeloop retrain run`: the thin process around the retraining state machine.

Decisions come from the `retraining` topic; each `should_retrain` one starts a run unless the
model already has one. Every tick moves each run as far as its observations allow: effects
first, then the transition is recorded (`retraining_steps`), so a restart resumes from the
last recorded stage. Offsets are committed once a decision's run is recorded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from safeloop import SafeloopError
from safeloop.schemas.events import RetrainingDecision
from safeloop.services.monitor.consumer import EventConsumer
from safeloop.services.retraining import machine
from safeloop.services.retraining.loop_policy import LoopPolicy
from safeloop.services.retraining.machine import (
    Effect,
    RetrainRun,
    RolloutPhase,
    ShadowEvidence,
    Stage,
    StopShadow,
    Trained,
    TrainingFailed,
    Transition,
)

logger = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.2
BATCH_RECORDS = 100
RETRY_AFTER_FAILURE_S = 1.0


class Actions(Protocol):
    def refresh(self) -> None:
        """Catch up with what others did (the control topic) before judging anything."""
        ...

    def production_version(self, model_name: str) -> str | None: ...

    def close(self) -> None: ...

    def train(self, run: RetrainRun, now_ms: int) -> Trained | TrainingFailed: ...

    def shadow_evidence(self, run: RetrainRun) -> ShadowEvidence: ...

    def rollout_phase(self, run: RetrainRun) -> tuple[RolloutPhase, str] | None: ...

    def perform(self, effect: Effect, now_ms: int) -> None: ...


class Steps(Protocol):
    def record(self, run: RetrainRun) -> None: ...

    def runs(self, model_name: str = "", run_id: str = "") -> list[RetrainRun]: ...

    def find(self, run_id: str) -> RetrainRun | None: ...


@dataclass(slots=True)
class LoopCounts:
    """Totals since start, for logs and tests."""

    decisions: int = 0
    runs_started: int = 0
    # should_retrain decisions for a model that already had a run going.
    decisions_skipped: int = 0
    transitions: int = 0
    failures: int = 0


class RetrainService:
    """Call `run(stop)`; or, in tests, `resume()`, `accept(decision)` and `tick(now_ms)`."""

    def __init__(
        self,
        steps: Steps,
        actions: Actions,
        policy: LoopPolicy,
        *,
        consumer: EventConsumer[RetrainingDecision] | None = None,
        tick_ms: int = 1_000,
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._steps = steps
        self._actions = actions
        self.policy = policy
        self._consumer = consumer
        self._tick_ms = tick_ms
        self._clock = clock
        # The running run of each model.
        self.active: dict[str, RetrainRun] = {}
        self.finished: dict[str, RetrainRun] = {}
        self.counts = LoopCounts()
        self.ready = threading.Event()

    def resume(self) -> None:
        """Pick up every run not finished, as last recorded."""
        for run in self._steps.runs():
            if run.stage.finished:
                self.finished[run.run_id] = run
            else:
                self.active[run.model_name] = run
                logger.info("resuming retraining run %s at %s", run.run_id, run.stage.value)

    def run(self, stop: threading.Event) -> None:
        self.resume()
        self.ready.set()
        logger.info("retrain running: %s, %d run(s) resumed", self.policy, len(self.active))
        next_tick = 0.0
        while not stop.is_set():
            if self._consumer is not None:
                self._consume(stop)
            now = time.monotonic()
            if now >= next_tick:
                self.tick(self._clock())
                next_tick = now + self._tick_ms / 1000
            if self._consumer is None:
                stop.wait(self._tick_ms / 1000)
        if self._consumer is not None:
            self._consumer.close()
        self._actions.close()

    def accept(self, decision: RetrainingDecision) -> RetrainRun | None:
        """Start (and record) a run for a `should_retrain` decision, or say why not (None)."""
        self.counts.decisions += 1
        if not decision.should_retrain:
            return None
        running = self.active.get(decision.model_name)
        production = self._actions.production_version(decision.model_name)
        now_ms = self._clock()
        why = None
        if running is not None:
            why = f"run {running.run_id} is going"
        elif decision.decision_id in self.finished:
            why = "already handled"
        elif production is not None and production != decision.model_version:
            # Judged a version that has left production since (a replayed or late decision).
            why = f"{decision.model_version} is no longer production ({production} is)"
        elif (unsuccessful := self._recent_unsuccessful(decision, now_ms)) is not None:
            why = (
                f"run {unsuccessful.run_id} ended {unsuccessful.stage.value} less than "
                f"{self.policy.retry_after_ms} ms ago"
            )
        if why is not None:
            self.counts.decisions_skipped += 1
            logger.info("retraining decision %s skipped: %s", decision.decision_id, why)
            return None
        run = machine.begin(decision, now_ms)
        self._steps.record(run)
        self.active[run.model_name] = run
        self.counts.runs_started += 1
        logger.info("retraining %s: run %s started (%s)", run.model_name, run.run_id, run.reason)
        return run

    def _recent_unsuccessful(self, decision: RetrainingDecision, now_ms: int) -> RetrainRun | None:
        """The newest run of the same base version that ended without promotion, if recent."""
        ended = [
            run
            for run in self.finished.values()
            if run.model_name == decision.model_name
            and run.base_version == decision.model_version
            and run.stage is not Stage.PROMOTED
        ]
        newest = max(ended, key=lambda run: run.updated_ms, default=None)
        if newest is None or now_ms - newest.updated_ms >= self.policy.retry_after_ms:
            return None
        return newest

    def tick(self, now_ms: int) -> None:
        """Move every active run as far as it can go now."""
        self._actions.refresh()
        for model_name in list(self.active):
            try:
                self._advance(model_name, now_ms)
            except SafeloopError as exc:
                # Nothing recorded: the same step is tried again on the next tick.
                self.counts.failures += 1
                logger.warning("retraining of %s: step not taken: %s", model_name, exc)

    def _advance(self, model_name: str, now_ms: int) -> None:
        # Several transitions may follow each other at once (registered -> shadowing).
        while model_name in self.active:
            run = self.active[model_name]
            transition = self._next(run, now_ms)
            if transition.run.step == run.step:
                self.active[model_name] = transition.run
                return
            for effect in transition.effects:
                self._actions.perform(effect, now_ms)
            self._adopt(transition.run)

    def _next(self, run: RetrainRun, now_ms: int) -> Transition:
        stage = run.stage
        if stage is Stage.RECEIVED:
            return machine.on_trained(run, self._actions.train(run, now_ms), now_ms)
        if stage is Stage.REGISTERED:
            return machine.start_shadow(run, now_ms)
        if stage in (Stage.SHADOWING, Stage.AWAITING_APPROVAL):
            recorded = self._steps.find(run.run_id)
            if recorded is not None and recorded.step > run.step:
                # A person approved or rejected it (`safeloop retrain approve|reject`).
                return self._recorded_elsewhere(run, recorded)
            if stage is Stage.AWAITING_APPROVAL:
                return Transition(run)
            evidence = self._actions.shadow_evidence(run)
            return machine.judge_shadow(run, self.policy, evidence, now_ms)
        if stage is Stage.APPROVED:
            return machine.start_canary(run, now_ms)
        if stage is Stage.CANARY:
            found = self._actions.rollout_phase(run)
            if found is None:
                return Transition(run)
            return machine.on_rollout(run, found[0], found[1], now_ms)
        return Transition(run)

    def _recorded_elsewhere(self, run: RetrainRun, recorded: RetrainRun) -> Transition:
        """Adopt a person's move; a rejection still owes the shadow being turned off."""
        if recorded.stage is Stage.REJECTED:
            self._actions.perform(
                StopShadow(run.model_name, run.candidate_version), recorded.updated_ms
            )
        self._take(recorded)
        return Transition(recorded)

    def _adopt(self, run: RetrainRun) -> None:
        self._steps.record(run)
        self.counts.transitions += 1
        logger.info("retraining %s: %s (%s)", run.model_name, run.stage.value, run.reason)
        self._take(run)

    def _take(self, run: RetrainRun) -> None:
        if run.stage.finished:
            self.active.pop(run.model_name, None)
            self.finished[run.run_id] = run
        else:
            self.active[run.model_name] = run

    def _consume(self, stop: threading.Event) -> None:
        assert self._consumer is not None
        decisions = self._consumer.poll(BATCH_RECORDS, POLL_TIMEOUT_S)
        positions = self._consumer.positions()
        if decisions:
            # Which version is in production now decides whether a decision still stands.
            self._actions.refresh()
        for decision in decisions:
            while not stop.is_set():
                try:
                    self.accept(decision)
                    break
                except SafeloopError as exc:
                    # Not committed yet: keep the decision until its run is recorded.
                    self.counts.failures += 1
                    logger.warning(
                        "retraining decision %s not taken: %s", decision.decision_id, exc
                    )
                    stop.wait(RETRY_AFTER_FAILURE_S)
        if decisions and not stop.is_set():
            self._consumer.commit(positions)
