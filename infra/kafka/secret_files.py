"""Secrets on local disk: files only their owner can read, made once and then reused."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from safeloop.infra.settings import Secret


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600 from the first byte (never briefly world-readable)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def ensure_password(path: Path) -> Secret:
    """The password kept in `path`; a new random one is written there first if there is none."""
    if path.is_file():
        existing = path.read_text().strip()
        if existing:
            return Secret(existing)
    password = secrets.token_urlsafe(32)
    write_private(path, password + "\n")
    return Secret(password)
