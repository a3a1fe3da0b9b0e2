"""Rotating the control signing key, as README "Security" describes it: add the new key (it signs
from then on, the old one is still accepted), re-issue each model's state under it, then retire
the old key: from then on a command signed with it is refused, also when replayed from the topic."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from safeloop.infra.settings import Settings
from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig
from safeloop.services.control.keys import load_keyring
from safeloop.services.control.signing import sign
from safeloop.services.control.state import ApplyOutcome, ControlState

OLD_LINE = "ops-2025:" + "11" * 32
NEW_LINE = "ops-2026:" + "22" * 32


def command(command_id: str, sequence: int, version: str) -> ControlCommand:
    return ControlCommand(
        command_id=command_id,
        model_name="churn",
        kind=CommandKind.PROMOTE,
        sequence=sequence,
        issued_at=1_700_000_000_000 + sequence,
        issuer="alice",
        reason="rotation test",
        config=ModelConfig(version),
        key_id="",
        signature="",
    )


def ring_from(tmp_path: Path, *lines: str) -> Settings:
    key_file = tmp_path / "operator.keys"
    key_file.write_text("\n".join(lines) + "\n")
    return Settings(control_key_file=key_file)


def test_old_key_is_accepted_until_retired_then_refused(tmp_path: Path) -> None:
    before = load_keyring(ring_from(tmp_path, OLD_LINE))
    signed_old = sign(command("c-1", 1, "v1"), before.signing_key)

    # Step 1: the new key is appended; it signs, and the old key still verifies.
    during = load_keyring(ring_from(tmp_path, OLD_LINE, NEW_LINE))
    assert during.signing_key.key_id == "ops-2026"
    replica = ControlState(during)
    assert replica.apply(signed_old).outcome is ApplyOutcome.APPLIED
    # Step 2: the current state is re-issued under the new key (a newer sequence).
    reissued = sign(command("c-2", 2, "v1"), during.signing_key)
    assert replica.apply(reissued).outcome is ApplyOutcome.APPLIED

    # Step 3: the old key is retired; replicas restarted on the new file replay the topic.
    after = load_keyring(ring_from(tmp_path, NEW_LINE))
    restarted = ControlState(after)
    refused = restarted.apply(signed_old)
    assert refused.outcome is ApplyOutcome.REFUSED
    assert "unknown key id 'ops-2025'" in refused.reason
    assert restarted.apply(reissued).outcome is ApplyOutcome.APPLIED
    assert restarted.applied("churn") is not None
    # A forger who kept the retired key gets nowhere with a newer sequence either.
    forged = sign(command("evil", 3, "v9"), before.signing_key)
    assert restarted.apply(forged).outcome is ApplyOutcome.REFUSED
    assert restarted.config_versions()["churn"] == 2


def test_a_command_re_signed_with_a_retired_key_id_but_another_secret_is_refused(
    tmp_path: Path,
) -> None:
    ring = load_keyring(ring_from(tmp_path, NEW_LINE))
    impostor = dataclasses.replace(ring.signing_key, secret=bytes(32))
    refused = ControlState(ring).apply(sign(command("c-9", 9, "v2"), impostor))
    assert refused.outcome is ApplyOutcome.REFUSED
    assert "signature does not match" in refused.reason
