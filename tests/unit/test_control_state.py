"""Control state: in-order, idempotent application; refusals of what cannot be trusted."""

from __future__ import annotations

import dataclasses

from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig
from safeloop.services.control.keys import KeyRing, SigningKey
from safeloop.services.control.signing import sign
from safeloop.services.control.state import AppliedConfig, ApplyOutcome, ControlState

KEY = SigningKey("ops", bytes(range(32)))
RING = KeyRing.of(KEY)


def signed(
    sequence: int,
    config: ModelConfig | None = None,
    model: str = "churn",
    command_id: str | None = None,
) -> ControlCommand:
    return sign(
        ControlCommand(
            command_id=command_id or f"cmd-{model}-{sequence}",
            model_name=model,
            kind=CommandKind.SET_CANARY,
            sequence=sequence,
            issued_at=1000 + sequence,
            issuer="test",
            reason="test",
            config=config or ModelConfig("v1", "v2", canary_basis_points=100 * sequence),
            key_id="",
            signature="",
        ),
        KEY,
    )


def test_applies_in_order_and_notifies() -> None:
    state = ControlState(RING)
    seen: list[tuple[str, AppliedConfig]] = []
    state.subscribe(lambda model, applied: seen.append((model, applied)))
    assert state.apply(signed(1)).outcome is ApplyOutcome.APPLIED
    assert state.apply(signed(2)).outcome is ApplyOutcome.APPLIED
    applied = state.applied("churn")
    assert applied is not None
    assert applied.sequence == 2
    assert applied.config.canary_basis_points == 200
    assert [a.sequence for _, a in seen] == [1, 2]
    assert state.config_versions() == {"churn": 2}
    assert state.last_command_id == "cmd-churn-2"


def test_sequences_are_per_model() -> None:
    state = ControlState(RING)
    state.apply(signed(5))
    assert state.apply(signed(1, model="price")).outcome is ApplyOutcome.APPLIED
    assert state.config_versions() == {"churn": 5, "price": 1}


def test_same_command_twice_is_a_noop() -> None:
    state = ControlState(RING)
    state.apply(signed(1))
    result = state.apply(signed(1))
    assert result.outcome is ApplyOutcome.DUPLICATE
    assert state.refused_count == 0


def test_gaps_are_fine_but_older_is_refused() -> None:
    state = ControlState(RING)
    assert state.apply(signed(3)).outcome is ApplyOutcome.APPLIED
    result = state.apply(signed(2))
    assert result.outcome is ApplyOutcome.REFUSED
    assert "out of order" in result.reason
    assert state.refused_count == 1
    assert state.last_refusal is not None and "out of order" in state.last_refusal
    assert state.config_versions() == {"churn": 3}


def test_replayed_command_is_refused() -> None:
    state = ControlState(RING)
    first = signed(1)
    state.apply(first)
    state.apply(signed(2))
    result = state.apply(first)
    assert result.outcome is ApplyOutcome.REFUSED
    assert "replayed" in result.reason


def test_replayed_id_with_new_sequence_is_refused() -> None:
    state = ControlState(RING)
    state.apply(signed(1, command_id="same"))
    state.apply(signed(2))
    result = state.apply(signed(3, command_id="same"))
    assert result.outcome is ApplyOutcome.REFUSED
    assert "replayed" in result.reason


def test_forged_and_unsigned_are_refused_and_change_nothing() -> None:
    state = ControlState(RING)
    state.apply(signed(1))
    forged = dataclasses.replace(signed(2), config=ModelConfig("evil"))
    unsigned = dataclasses.replace(signed(3), signature="", key_id="")
    wrong_key = sign(dataclasses.replace(signed(4)), SigningKey("ops", bytes(32)))
    reasons = [state.apply(c).reason for c in (forged, unsigned, wrong_key)]
    assert "does not match" in reasons[0]
    assert "unsigned" in reasons[1]
    assert "does not match" in reasons[2]
    assert state.refused_count == 3
    applied = state.applied("churn")
    assert applied is not None and applied.sequence == 1


def test_incoherent_config_is_refused() -> None:
    state = ControlState(RING)
    result = state.apply(signed(1, ModelConfig("v1", canary_basis_points=20_000)))
    assert result.outcome is ApplyOutcome.REFUSED
    assert "outside 0..10000" in result.reason


def test_replica_check_can_refuse() -> None:
    state = ControlState(RING, check=lambda command: "version v2 is not loadable")
    result = state.apply(signed(1))
    assert result.outcome is ApplyOutcome.REFUSED
    assert "not loadable" in result.reason
    assert state.applied("churn") is None


def test_refusal_of_undecodable_record_is_counted() -> None:
    state = ControlState(RING)
    state.refuse("control[0]@7", "not Avro")
    assert state.refused_count == 1
    assert state.last_refusal == "control[0]@7: not Avro"
