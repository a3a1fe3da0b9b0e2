"""The progressive canary driver: feeds each running rollout its step's evidence, advances its
state machine, and turns transitions into signed commands (plus `control_log` rows).

Rollouts are discovered on the control topic: every rollout command carries the plan and the
state after its transition (see `persist`), so `safeloop rollout start` only has to publish the
first step, and a restarted controller resumes from the newest command. A command from anyone
else that takes the candidate off canary (the central guard, an operator) ends the rollout.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from safeloop import SafeloopError
from safeloop.schemas.events import ControlCommand, FeedbackRecord, PredictionEvent
from safeloop.services.control.audit import EntryType
from safeloop.services.control.exceptions import ControlError
from safeloop.services.control.issuer import CommandIssuer
from safeloop.services.metrics.performance import Task
from safeloop.services.rollout.commands import command_for
from safeloop.services.rollout.evidence import StepEvidence
from safeloop.services.rollout.labels import LabelCounts
from safeloop.services.rollout.machine import (
    Phase,
    RolloutState,
    Transition,
    advance,
    recheck_provisional,
    rollback,
)
from safeloop.services.rollout.persist import (
    PLAN_KEY,
    STATE_KEY,
    plan_to_json,
    rollout_of,
    state_to_json,
)
from safeloop.services.rollout.plan import RolloutPlan

logger = logging.getLogger(__name__)

TaskOf = Callable[[str, str], Task]
ENTRY_TYPES = (EntryType.COMMAND, EntryType.ROLLOUT)


@dataclass
class ActiveRollout:
    plan: RolloutPlan
    state: RolloutState
    evidence: StepEvidence
    # The last would-be transition a dry run recorded (recorded again only when it changes).
    dry_run_recorded: str | None = None


def publish_transition(
    issuer: CommandIssuer, plan: RolloutPlan, transition: Transition
) -> list[ControlCommand]:
    """Send one signed command per intent, each carrying the plan and the new state."""
    sent = []
    state = transition.state
    for intent in transition.intents:
        kind, change = command_for(intent)
        details = {STATE_KEY: state_to_json(state), PLAN_KEY: plan_to_json(plan)}
        if transition.gate is not None:
            details.update(transition.gate.numbers)
            details["gate_outcome"] = transition.gate.outcome.value
        command = issuer.issue(
            state.model_name,
            kind,
            change,
            reason=f"rollout: {intent.reason}",
            details=details,
            entry_types=ENTRY_TYPES,
        )
        sent.append(command)
    return sent


class RolloutController:
    """Runs inside `safeloop metrics run`; call `on_command`, `observe_*` and `tick`."""

    def __init__(
        self,
        issuer: CommandIssuer,
        task_of: TaskOf,
        labels: LabelCounts | None = None,
        recheck_interval_ms: int = 10_000,
    ) -> None:
        self._issuer = issuer
        self._task_of = task_of
        self._labels = labels
        self._recheck_interval_ms = recheck_interval_ms
        self._last_recheck_ms = 0
        # Promotions made on estimates, re-judged as labels land: model -> (plan, state).
        self.provisional: dict[str, tuple[RolloutPlan, RolloutState]] = {}
        self._active: dict[str, ActiveRollout] = {}
        self.finished: dict[str, RolloutState] = {}
        # Transitions since start, by the phase they led to (published, or seen interrupted).
        self.transitions: dict[Phase, int] = dict.fromkeys(Phase, 0)
        self.dry_run_records = 0

    def state_of(self, model_name: str) -> RolloutState | None:
        active = self._active.get(model_name)
        return active.state if active is not None else self.finished.get(model_name)

    def step_starts_ms(self) -> list[int]:
        """When the current step of each running rollout began: its evidence starts there."""
        return [
            a.state.step_started_ms for a in self._active.values() if a.state.phase is Phase.RUNNING
        ]

    def on_command(self, command: ControlCommand) -> None:
        """Adopt a rollout a command carries, or end one a foreign command interrupted."""
        watched = self.provisional.get(command.model_name)
        if (
            watched is not None
            and command.config.production_version != watched[1].candidate_version
        ):
            # Production moved on (an operator's rollback or promotion): nothing left to re-judge.
            del self.provisional[command.model_name]
        carried = rollout_of(command.details)
        if carried is not None:
            plan, state = carried
            self._adopt(plan, state)
            return
        active = self._active.get(command.model_name)
        if active is None:
            return
        config = command.config
        if config.canary_version == active.state.candidate_version and config.canary_enabled:
            return
        # Someone else took the candidate off canary: record why, send nothing more.
        now_ms = time.time_ns() // 1_000_000
        reason = f"interrupted by {command.kind.value} from {command.issuer}: {command.reason}"
        ended = rollback(active.state, reason, now_ms).state
        self._finish(ended)
        self.transitions[ended.phase] += 1
        self._issuer.audit(_with_state(command, active.plan, ended), (EntryType.ROLLOUT,))
        logger.warning("rollout of %s ended: %s", command.model_name, reason)

    def observe_predictions(self, events: Sequence[PredictionEvent]) -> None:
        for active in self._active.values():
            active.evidence.add_predictions(events)

    def observe_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        for active in self._active.values():
            active.evidence.add_feedback(records)

    def tick(self, now_ms: int) -> list[ControlCommand]:
        """Judge every running rollout's gate; publish what its transition asks for."""
        sent: list[ControlCommand] = self._recheck_provisional(now_ms)
        for name, active in list(self._active.items()):
            if active.state.phase is not Phase.RUNNING:
                continue
            transition = advance(active.plan, active.state, active.evidence.evidence(), now_ms)
            if not transition.intents:
                active.state = transition.state
                continue
            if active.plan.dry_run:
                self._record_dry_run(active, transition, now_ms)
                continue
            try:
                sent += publish_transition(self._issuer, active.plan, transition)
            except ControlError as exc:
                # Keep the old state: the same transition is retried on the next tick.
                logger.error("rollout of %s could not publish its transition: %s", name, exc)
                continue
            logger.info("rollout of %s: %s", name, transition.state.reason)
            self.transitions[transition.state.phase] += 1
            self._adopt(active.plan, transition.state)
        return sent

    def _record_dry_run(self, active: ActiveRollout, transition: Transition, now_ms: int) -> None:
        """Write what the gate would have done to control_log; the rollout stays where it is."""
        would = transition.state
        # Figures change every tick; a record is due when the would-be move itself changes.
        summary = f"{would.phase.value}@{would.step_index}"
        if summary == active.dry_run_recorded:
            return
        latest = self._issuer.latest(would.model_name)
        if latest is None:
            logger.warning("dry run of %s: no command to attach the record to", would.model_name)
            return
        details = {
            **(transition.gate.numbers if transition.gate is not None else {}),
            STATE_KEY: state_to_json(active.state),
            PLAN_KEY: plan_to_json(active.plan),
            "dry_run_phase": would.phase.value,
            "dry_run_step_percent": f"{would.canary_percent(active.plan):g}",
        }
        self.dry_run_records += 1
        record = dataclasses.replace(
            latest,
            command_id=f"{latest.command_id}-dry-run-{now_ms}",
            issued_at=now_ms,
            issuer=self._issuer.issuer,
            reason=f"dry run, not done: {would.reason}",
            details=details,
        )
        self._issuer.audit(record, (EntryType.DRY_RUN,))
        active.dry_run_recorded = summary
        logger.info("rollout of %s (dry run) would be %s", would.model_name, summary)

    def _recheck_provisional(self, now_ms: int) -> list[ControlCommand]:
        """Roll back a promotion made on estimates that the labels contradict (or confirm it)."""
        if self._labels is None or not self.provisional:
            return []
        if now_ms - self._last_recheck_ms < self._recheck_interval_ms:
            return []
        self._last_recheck_ms = now_ms
        sent: list[ControlCommand] = []
        for name, (plan, state) in list(self.provisional.items()):
            try:
                known_good, candidate = self._labels.accuracy_counts(
                    name, state.known_good_version, state.candidate_version, state.started_ms
                )
            except SafeloopError as exc:
                logger.warning("labels of %s's provisional promotion not read: %s", name, exc)
                continue
            transition = recheck_provisional(plan, state, known_good, candidate, now_ms)
            if transition.state == state:
                continue
            if transition.intents:
                try:
                    sent += publish_transition(self._issuer, plan, transition)
                except ControlError as exc:
                    logger.error("rollback of %s could not be published: %s", name, exc)
                    continue
            else:
                self._record(plan, transition.state, now_ms)
            logger.warning("rollout of %s: %s", name, transition.state.reason)
            self.transitions[transition.state.phase] += 1
            self._adopt(plan, transition.state)
        return sent

    def _record(self, plan: RolloutPlan, state: RolloutState, now_ms: int) -> None:
        """A rollout row for a state change that sends no command (a confirmed promotion)."""
        latest = self._issuer.latest(state.model_name)
        if latest is None:
            return
        row = dataclasses.replace(
            latest,
            command_id=f"{latest.command_id}-rollout-{now_ms}",
            issued_at=now_ms,
            issuer=self._issuer.issuer,
            reason=f"rollout: {state.reason}",
            details={STATE_KEY: state_to_json(state), PLAN_KEY: plan_to_json(plan)},
        )
        self._issuer.audit(row, (EntryType.ROLLOUT,))

    def _adopt(self, plan: RolloutPlan, state: RolloutState) -> None:
        if state.phase is Phase.PROMOTED and state.provisional:
            self.provisional[state.model_name] = (plan, state)
        else:
            self.provisional.pop(state.model_name, None)
        if state.phase in (Phase.PROMOTED, Phase.ROLLED_BACK):
            self._finish(state)
            return
        current = self._active.get(state.model_name)
        if (
            current is not None
            and current.state.candidate_version == state.candidate_version
            and current.state.step_started_ms == state.step_started_ms
        ):
            current.state, current.plan = state, plan
            return
        task = self._task_of(state.model_name, state.candidate_version)
        self._active[state.model_name] = ActiveRollout(plan, state, StepEvidence(state, task))
        self.finished.pop(state.model_name, None)

    def _finish(self, state: RolloutState) -> None:
        self._active.pop(state.model_name, None)
        self.finished[state.model_name] = state


def _with_state(command: ControlCommand, plan: RolloutPlan, state: RolloutState) -> ControlCommand:
    """The foreign command as the rollout's audit row: same command, the rollout's new state."""
    details = {**command.details, STATE_KEY: state_to_json(state), PLAN_KEY: plan_to_json(plan)}
    return dataclasses.replace(command, details=details)
