"""Keep a long-running process's resident memory close to what it uses, under glibc's malloc.

Every safeloop process runs C threads (librdkafka's, one per broker and client; ClickHouse
writer threads), and glibc gives threads that contend their own arena: up to 8 per core, each
of which keeps what it freed. A broker restart makes every client reconnect at once (TLS
handshakes, fetch buffers), and the memory freed afterwards stays in those arenas: RSS steps up
and stays up. Two arenas (the common `MALLOC_ARENA_MAX=2` of long-lived services) and a
periodic `malloc_trim` hand freed pages back. Elsewhere (musl, macOS) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

logger = logging.getLogger(__name__)

# glibc's mallopt parameter number for the arena limit (malloc.h: M_ARENA_MAX).
M_ARENA_MAX = -8
ARENAS = 2
TRIM_INTERVAL_S = 60.0


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (call first thing, before any client starts a thread)."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Give the pages malloc holds free back to the system; True if any were."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


class HeapTrimmer:
    """A daemon thread calling `trim` every `interval_s` (ctypes releases the GIL meanwhile)."""

    def __init__(self, interval_s: float = TRIM_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.trims = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heap-trimmer", daemon=True)

    def start(self) -> HeapTrimmer:
        if _glibc() is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            trim()
            self.trims += 1


_started: list[HeapTrimmer] = []
_starting = threading.Lock()


def tame_native_heap() -> HeapTrimmer | None:
    """Both measures, once per process; None where malloc is not glibc's."""
    with _starting:
        if _started:
            return _started[0]
        if not limit_arenas():
            logger.debug("malloc is not glibc's: arenas and trimming left as they are")
            return None
        _started.append(HeapTrimmer().start())
        return _started[0]
