"""HMAC-SHA256 signatures over a canonical, versioned encoding of a command."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json

from safeloop.schemas.events import ControlCommand
from safeloop.services.control.exceptions import SignatureError
from safeloop.services.control.keys import KeyRing, SigningKey

_CANONICAL_PREFIX = b"safeloop-control-command-v1\n"
# Config fields added after v1, left out while unset: commands signed before they existed
# (still on the compacted control topic) must keep verifying.
_ADDED_CONFIG_FIELDS = ("injection",)


def canonical_bytes(command: ControlCommand) -> bytes:
    """Every field but `signature`, as compact JSON with sorted keys (so any writer agrees)."""
    fields = dataclasses.asdict(command)
    del fields["signature"]
    for name in _ADDED_CONFIG_FIELDS:
        if fields["config"][name] is None:
            del fields["config"][name]
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _CANONICAL_PREFIX + body.encode()


def _digest(key: SigningKey, command: ControlCommand) -> str:
    return hmac.new(key.secret, canonical_bytes(command), hashlib.sha256).hexdigest()


def sign(command: ControlCommand, key: SigningKey) -> ControlCommand:
    """The same command carrying `key.key_id` and its signature."""
    unsigned = dataclasses.replace(command, key_id=key.key_id, signature="")
    return dataclasses.replace(unsigned, signature=_digest(key, unsigned))


def verify(command: ControlCommand, keys: KeyRing) -> None:
    """Raise `SignatureError` saying why, unless a known key signed exactly this command."""
    if not command.signature or not command.key_id:
        raise SignatureError("unsigned command")
    key = keys.get(command.key_id)
    if key is None:
        raise SignatureError(f"unknown key id {command.key_id!r}")
    if not hmac.compare_digest(_digest(key, command), command.signature):
        raise SignatureError(f"signature does not match (key id {command.key_id!r})")
