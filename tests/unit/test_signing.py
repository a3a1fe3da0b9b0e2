"""Command signatures: canonical encoding, key loading, forged and unsigned commands."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from safeloop.infra.settings import Secret, Settings
from safeloop.schemas.events import CommandKind, ControlCommand, FaultInjection, ModelConfig
from safeloop.services.control.exceptions import SignatureError, SigningKeyError
from safeloop.services.control.keys import KeyRing, SigningKey, load_keyring, parse_key_file
from safeloop.services.control.signing import canonical_bytes, sign, verify

KEY = SigningKey("ops-2025", bytes(range(32)))
OTHER = SigningKey("ops-2025", bytes(range(1, 33)))


def command(**overrides: object) -> ControlCommand:
    fields: dict[str, object] = {
        "command_id": "c-1",
        "model_name": "churn",
        "kind": CommandKind.ROLLBACK,
        "sequence": 1,
        "issued_at": 1_700_000_000_000,
        "issuer": "alice",
        "reason": "error spike",
        "config": ModelConfig("v1", flags={"b": "1", "a": "2"}),
        "key_id": "",
        "signature": "",
    }
    fields.update(overrides)
    return ControlCommand(**fields)  # type: ignore[arg-type]


def test_signed_command_verifies() -> None:
    signed = sign(command(), KEY)
    assert signed.key_id == "ops-2025"
    assert len(signed.signature) == 64
    verify(signed, KeyRing.of(KEY))


def test_canonical_bytes_ignore_signature_and_flag_order() -> None:
    one = command(config=ModelConfig("v1", flags={"a": "2", "b": "1"}))
    two = dataclasses.replace(command(), signature="anything")
    assert canonical_bytes(one) == canonical_bytes(two)


@pytest.mark.parametrize(
    "change",
    [
        {"reason": "changed"},
        {"sequence": 2},
        {"config": ModelConfig("v9")},
        {"kind": CommandKind.PROMOTE},
        {"details": {"x": "y"}},
    ],
)
def test_any_change_breaks_the_signature(change: dict[str, object]) -> None:
    tampered = dataclasses.replace(sign(command(), KEY), **change)  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="does not match"):
        verify(tampered, KeyRing.of(KEY))


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify(sign(command(), OTHER), KeyRing.of(KEY))


def test_unsigned_is_refused() -> None:
    with pytest.raises(SignatureError, match="unsigned"):
        verify(command(), KeyRing.of(KEY))


def test_unknown_key_id_is_refused() -> None:
    stranger = SigningKey("mallory", bytes(32))
    with pytest.raises(SignatureError, match="unknown key id 'mallory'"):
        verify(sign(command(), stranger), KeyRing.of(KEY))


def test_rotation_accepts_old_and_new_keys() -> None:
    old, new = SigningKey("k1", bytes(16)), SigningKey("k2", bytes(range(16)))
    ring = KeyRing.of(old, new)
    assert ring.signing_key.key_id == "k2"
    verify(sign(command(), old), ring)
    verify(sign(command(), new), ring)


def test_key_file_lines_and_json(tmp_path: Path) -> None:
    lines = "# operators\nk1:" + "00" * 16 + "\n\nk2:" + "11" * 32 + "\n"
    assert [key.key_id for key in parse_key_file(lines, "f")] == ["k1", "k2"]
    assert [k.key_id for k in parse_key_file('{"a": "' + "22" * 16 + '"}', "f")] == ["a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("k1", "expected key_id:hexsecret"),
        ("k1:zz", "not hex"),
        ("k1:00ff", "need 16"),
        ('{"k": 1}', "map key ids"),
    ],
)
def test_bad_key_files_say_why_without_the_secret(text: str, message: str) -> None:
    with pytest.raises(SigningKeyError, match=message) as caught:
        parse_key_file(text, "keys.txt")
    assert "00ff" not in str(caught.value)


def test_load_keyring_from_file_and_env(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("old:" + "00" * 16 + "\nnew:" + "01" * 16 + "\n")
    ring = load_keyring(Settings(control_key_file=key_file))
    assert ring.signing_key_id == "new"
    assert set(ring.keys) == {"old", "new"}
    ring = load_keyring(Settings(control_key_file=key_file, control_key_id="old"))
    assert ring.signing_key_id == "old"
    env_ring = load_keyring(Settings(control_key=Secret("ab" * 16), control_key_id="env"))
    assert env_ring.signing_key_id == "env"


def test_load_keyring_without_keys_explains() -> None:
    with pytest.raises(SigningKeyError, match="SAFELOOP_CONTROL_KEY"):
        load_keyring(Settings())


def test_secret_not_in_repr() -> None:
    assert "\\x00\\x01" not in repr(KEY)


def test_commands_signed_before_injections_existed_still_verify() -> None:
    # The signature safeloop computed for `command()` before ModelConfig.injection existed:
    # such commands stay on the compacted control topic and must keep verifying.
    before = dataclasses.replace(
        command(),
        key_id=KEY.key_id,
        signature="2a0cf8dc9ea9b40b5ebce7ba4bd19bf32e914d047db8c3a52d77b79eb57ff426",
    )
    verify(before, KeyRing.of(KEY))
    assert b"injection" not in canonical_bytes(command())


def test_an_injection_is_signed() -> None:
    injected = command(
        kind=CommandKind.INJECT,
        config=ModelConfig("v1", injection=FaultInjection("v2", 0.2, 0.0, 1_700_000_300_000)),
    )
    signed = sign(injected, KEY)
    verify(signed, KeyRing.of(KEY))
    longer = dataclasses.replace(
        signed.config,
        injection=FaultInjection("v2", 0.2, 0.0, 1_700_000_900_000),
    )
    with pytest.raises(SignatureError):
        verify(dataclasses.replace(signed, config=longer), KeyRing.of(KEY))
