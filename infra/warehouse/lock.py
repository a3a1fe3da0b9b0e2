"""An exclusive, advisory lock on a file that records the holder's pid."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from safeloop.infra.exceptions import WarehouseError

_ATTEMPTS = 5


class FileLock:
    """Held by one process at a time; the kernel drops it when the holder dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, what: str) -> None:
        """Take the lock or raise `WarehouseError` naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._lock(fd)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WarehouseError(
                f"{what} is in use by process {holder} (lock {self.path}). "
                "Stop it first (`safeloop warehouse stop`) or use another state directory."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    @staticmethod
    def _lock(fd: int) -> None:
        # `holder()` in another process may hold a shared lock for an instant: retry briefly.
        for _ in range(_ATTEMPTS - 1):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.02)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def holder(self) -> int | None:
        """The pid holding the lock, -1 if it is held but the pid is unreadable, else None."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 32).decode(errors="replace").strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
