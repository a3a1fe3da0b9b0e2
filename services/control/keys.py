"""Operator keys: `key_id:hexsecret` lines or JSON in a file, or one key in the environment."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from safeloop.infra.settings import Settings
from safeloop.services.control.exceptions import SigningKeyError

MIN_SECRET_BYTES = 16
DEFAULT_KEY_ID = "default"


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class KeyRing:
    """The keys a replica accepts (old ones stay during rotation) and the one that signs."""

    keys: Mapping[str, SigningKey]
    signing_key_id: str

    def __post_init__(self) -> None:
        if self.signing_key_id not in self.keys:
            raise SigningKeyError(f"signing key id {self.signing_key_id!r} is not among the keys")

    @property
    def signing_key(self) -> SigningKey:
        return self.keys[self.signing_key_id]

    def get(self, key_id: str) -> SigningKey | None:
        return self.keys.get(key_id)

    @classmethod
    def of(cls, *keys: SigningKey) -> KeyRing:
        """A ring that signs with the last key given."""
        if not keys:
            raise SigningKeyError("a key ring needs at least one key")
        return cls({key.key_id: key for key in keys}, keys[-1].key_id)


def parse_secret(key_id: str, hex_secret: str, source: str) -> SigningKey:
    """Secrets are hex; the error names the source and key id, never the secret."""
    if not key_id or any(ch.isspace() or ch == ":" for ch in key_id):
        raise SigningKeyError(f"{source}: key id {key_id!r} must be non-empty, no spaces or ':'")
    try:
        secret = bytes.fromhex(hex_secret.strip())
    except ValueError as exc:
        raise SigningKeyError(f"{source}: secret of key {key_id!r} is not hex") from exc
    if len(secret) < MIN_SECRET_BYTES:
        raise SigningKeyError(
            f"{source}: secret of key {key_id!r} has {len(secret)} bytes; need {MIN_SECRET_BYTES}+"
        )
    return SigningKey(key_id, secret)


def parse_key_file(text: str, source: str) -> list[SigningKey]:
    """JSON `{"key_id": "hex", ...}` or lines `key_id:hexsecret` (`#` comments), oldest first."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            raw = json.loads(stripped)
        except ValueError as exc:
            raise SigningKeyError(f"{source}: invalid JSON at line {exc.args[0]!s:.80}") from None
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise SigningKeyError(f"{source}: JSON must map key ids to hex secrets")
        return [parse_secret(str(key_id), secret, source) for key_id, secret in raw.items()]
    keys = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        key_id, separator, secret = line.partition(":")
        if not separator:
            raise SigningKeyError(f"{source}:{number}: expected key_id:hexsecret")
        keys.append(parse_secret(key_id.strip(), secret, f"{source}:{number}"))
    return keys


def load_keyring(settings: Settings) -> KeyRing:
    """Keys from `SAFELOOP_CONTROL_KEY_FILE` and/or `SAFELOOP_CONTROL_KEY`; signs with
    `SAFELOOP_CONTROL_KEY_ID` if set, else the environment key, else the file's last key."""
    keys: list[SigningKey] = []
    if settings.control_key_file is not None:
        path = settings.control_key_file
        try:
            text = path.read_text()
        except OSError as exc:
            raise SigningKeyError(f"cannot read control key file {path}: {exc.strerror}") from exc
        keys.extend(parse_key_file(text, str(path)))
    if settings.control_key:
        key_id = settings.control_key_id or DEFAULT_KEY_ID
        keys.append(parse_secret(key_id, settings.control_key.value, "SAFELOOP_CONTROL_KEY"))
    if not keys:
        raise SigningKeyError(
            "no control key configured: set SAFELOOP_CONTROL_KEY_FILE (lines key_id:hexsecret) "
            "or SAFELOOP_CONTROL_KEY (hex) with SAFELOOP_CONTROL_KEY_ID"
        )
    ring = KeyRing.of(*keys)
    if settings.control_key_id and settings.control_key_id in ring.keys:
        return KeyRing(ring.keys, settings.control_key_id)
    if settings.control_key_id:
        raise SigningKeyError(f"SAFELOOP_CONTROL_KEY_ID={settings.control_key_id!r} names no key")
    return ring
