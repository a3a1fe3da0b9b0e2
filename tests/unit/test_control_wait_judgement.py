"""`--wait`'s judgement per replica: in force, superseded (by whom, why), refused, pending."""

from __future__ import annotations

import dataclasses

from safeloop.schemas.events import (
    CommandKind,
    ControlCommand,
    ModelConfig,
    ReplicaState,
    ReplicaStatus,
)
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.cli.wait_report import EXIT_CODES, describe, report_json
from safeloop.services.control.keys import KeyRing, SigningKey
from safeloop.services.control.signing import sign
from safeloop.services.control.state import ControlState
from safeloop.services.control.wait import (
    ControlHistory,
    Outcome,
    ReplicaOutcome,
    WaitReport,
    judge_replica,
)

KEY = SigningKey("ops", bytes(range(32)))
RING = KeyRing.of(KEY)


def command(
    sequence: int,
    *,
    command_id: str | None = None,
    kind: CommandKind = CommandKind.SET_CANARY,
    issuer: str = "alice@ops",
    reason: str = "",
    key: SigningKey = KEY,
) -> ControlCommand:
    return sign(
        ControlCommand(
            command_id=command_id or f"cmd-{sequence}",
            model_name="churn",
            kind=kind,
            sequence=sequence,
            issued_at=1000 + sequence,
            issuer=issuer,
            reason=reason,
            config=ModelConfig("v1", "v2", canary_basis_points=1000),
            key_id="",
            signature="",
        ),
        key,
    )


def status_after(state: ControlState, replica_id: str = "replica-a") -> ReplicaStatus:
    """What the replica would report on replica-status after applying what it was given."""
    return ReplicaStatus(
        replica_id=replica_id,
        timestamp=0,
        state=ReplicaState.READY,
        started_at=0,
        config_versions=state.config_versions(),
        last_command_id=state.last_command_id,
        refused_count=state.refused_count,
        last_refusal=state.last_refusal,
    )


def history_of(*commands: ControlCommand) -> ControlHistory:
    history = ControlHistory(RING)
    for each in commands:
        history.take(each)
    return history


def test_applied_command_is_in_force() -> None:
    ours = command(3)
    state = ControlState(RING)
    state.apply(command(2))
    state.apply(ours)
    outcome = judge_replica(status_after(state), ours, history_of(command(2), ours))
    assert outcome == ReplicaOutcome("replica-a", Outcome.IN_FORCE, 3)


def test_newer_command_supersedes_and_names_issuer_and_reason() -> None:
    ours = command(3)
    rollback = command(
        4, kind=CommandKind.ROLLBACK, issuer="safeloop-metrics", reason="error_rate 0.2 > 0.05"
    )
    state = ControlState(RING)
    state.apply(ours)
    state.apply(rollback)
    outcome = judge_replica(status_after(state), ours, history_of(ours, rollback))
    assert outcome.outcome is Outcome.SUPERSEDED
    assert outcome.applied_sequence == 4
    assert outcome.superseded_by is not None
    assert (outcome.superseded_by.sequence, outcome.superseded_by.issuer) == (
        4,
        "safeloop-metrics",
    )
    assert outcome.superseded_by.reason == "error_rate 0.2 > 0.05"
    assert describe(outcome) == (
        "replica-a: superseded by sequence 4 (rollback by safeloop-metrics: error_rate 0.2 > 0.05)"
    )


def test_rival_with_the_same_sequence_first_on_the_topic_supersedes() -> None:
    rival = command(3, command_id="guard-3", issuer="safeloop-metrics", reason="breach")
    ours = command(3, command_id="ours-3")
    state = ControlState(RING)
    state.apply(rival)
    state.apply(ours)  # refused: out of order
    outcome = judge_replica(status_after(state), ours, history_of(rival, ours))
    assert outcome.outcome is Outcome.SUPERSEDED
    assert outcome.superseded_by is not None
    assert outcome.superseded_by.command_id == "guard-3"


def test_refusal_is_reported_with_the_replicas_text() -> None:
    ours = command(1)
    other_ring = KeyRing.of(SigningKey("other", bytes(32)))
    state = ControlState(other_ring)
    state.apply(ours)
    outcome = judge_replica(status_after(state), ours, history_of(ours))
    assert outcome.outcome is Outcome.REFUSED
    assert outcome.refusal is not None and "ops" in outcome.refusal
    assert not outcome.refusal.startswith(ours.command_id)


def test_a_replica_that_has_not_applied_it_is_pending_not_refused_by_someone_elses_refusal() -> (
    None
):
    ours = command(2)
    state = ControlState(RING)
    state.apply(command(1))
    state.apply(dataclasses.replace(command(5, command_id="forged"), signature="00"))
    outcome = judge_replica(status_after(state), ours, history_of(ours))
    assert outcome == ReplicaOutcome("replica-a", Outcome.PENDING, 1)


def test_unverifiable_commands_are_not_in_the_history() -> None:
    forged = sign(command(4), SigningKey("ops", bytes(32)))
    history = history_of(command(3), forged)
    assert history.at("churn", 4) is None
    newest = history.newest("churn")
    assert newest is not None and newest.sequence == 3


def test_verdict_and_exit_code_prefer_timeout_then_refused_then_superseded() -> None:
    ours = command(1)
    in_force = ReplicaOutcome("a", Outcome.IN_FORCE, 1)
    superseded = ReplicaOutcome("b", Outcome.SUPERSEDED, 2)
    refused = ReplicaOutcome("c", Outcome.REFUSED, 0, refusal="invalid config: no v9")
    pending = ReplicaOutcome("d", Outcome.PENDING, 0)
    cases = [
        ([in_force], False, ExitCode.OK),
        ([in_force, superseded], False, ExitCode.SUPERSEDED),
        ([superseded, refused], False, ExitCode.REFUSED),
        ([in_force, refused, pending], True, ExitCode.TIMEOUT),
        ([], False, ExitCode.OK),
    ]
    for replicas, timed_out, expected in cases:
        report = WaitReport(ours, replicas, timed_out)
        assert EXIT_CODES[report.verdict] is expected, (replicas, report.verdict)
    mixed = report_json(WaitReport(ours, [in_force, refused, pending], True))
    assert mixed["outcome"] == "timeout" and mixed["applied"] is False
    assert mixed["laggards"] == ["d"]
    assert mixed["replicas"][1] == {
        "replica_id": "c",
        "outcome": "refused",
        "applied_sequence": 0,
        "superseded_by": None,
        "refusal": "invalid config: no v9",
    }
