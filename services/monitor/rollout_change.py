"""An operator's change to a model's recorded rollout (approve, reject, abort), published as the
signed commands the rollout controller would send; the CLI and the dashboard both go through it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.settings import Settings
from safeloop.services.models.open_store import open_model_store
from safeloop.services.monitor.wiring import build_issuer, start_follower
from safeloop.services.rollout.controller import publish_transition
from safeloop.services.rollout.exceptions import NoRolloutError, TransitionError
from safeloop.services.rollout.history import latest_rollout
from safeloop.services.rollout.machine import RolloutState, Transition, approve, reject
from safeloop.services.rollout.plan import RolloutPlan

RolloutChange = Callable[[RolloutPlan, RolloutState, int], Transition]


@dataclass(frozen=True)
class RolloutChanged:
    """The rollout after an operator's change and the sequence of the last command sent."""

    plan: RolloutPlan
    state: RolloutState
    sequence: int


def change_rollout(
    settings: Settings, model_name: str, change: RolloutChange, *, issuer: str, follower_label: str
) -> RolloutChanged:
    """Apply `change` to the model's newest recorded rollout and publish it, signed, as `issuer`.

    Raises NoRolloutError, TransitionError (nothing to do from the current phase) or the
    ControlError of a failed publish. `follower_label` names the control reader's consumer group
    (the operator role may use `safeloop-cli*`).
    """
    found = latest_rollout(clickhouse_client(settings), model_name)
    if found is None:
        raise NoRolloutError(f"{model_name}: no rollout recorded")
    plan, state = found
    transition = change(plan, state, time.time_ns() // 1_000_000)
    if not transition.intents:
        raise TransitionError(f"{model_name}: rollout already {state.phase.value}")
    follower = start_follower(settings, label=follower_label)
    try:
        issuer_of = build_issuer(settings, follower, open_model_store(settings), issuer=issuer)
        commands = publish_transition(issuer_of, plan, transition)
    finally:
        follower.close()
    return RolloutChanged(plan, transition.state, commands[-1].sequence)


def approve_rollout(
    settings: Settings, model_name: str, operator: str, why: str, *, follower_label: str = "cli"
) -> RolloutChanged:
    """`operator` lets the model's rollout waiting for approval take its next step (or promote)."""

    def approve_now(plan: RolloutPlan, state: RolloutState, now_ms: int) -> Transition:
        return approve(plan, state, operator, why, now_ms)

    return change_rollout(
        settings, model_name, approve_now, issuer=operator, follower_label=follower_label
    )


def reject_rollout(
    settings: Settings, model_name: str, operator: str, why: str, *, follower_label: str = "cli"
) -> RolloutChanged:
    """`operator` refuses the waiting rollout's next move: it rolls back at once."""

    def reject_now(plan: RolloutPlan, state: RolloutState, now_ms: int) -> Transition:
        return reject(state, operator, why, now_ms)

    return change_rollout(
        settings, model_name, reject_now, issuer=operator, follower_label=follower_label
    )
