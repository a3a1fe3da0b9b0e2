"""glibc's malloc hands freed pages back: the arena cap and trim reach the real allocator."""

from __future__ import annotations

import ctypes
import platform

import pytest

from safeloop.infra import native_heap

GLIBC = platform.libc_ver()[0] == "glibc"


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only (musl and macOS: nothing to do)")
def test_trim_returns_pages_freed_below_the_top_of_the_heap() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 MB in 64 KB blocks under the mmap threshold; keeping the last one pins the heap's top,
    # so only trim (not free) can give the rest back.
    blocks = [libc.malloc(60_000) for _ in range(1_100)]
    for block in blocks:
        ctypes.memset(block, 1, 60_000)
    for block in blocks[:-1]:
        libc.free(block)
    before = _rss_kb()
    assert native_heap.trim()
    after = _rss_kb()
    libc.free(blocks[-1])
    assert before - after > 32_000, f"RSS {before} -> {after} kB"


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_the_arena_cap_is_accepted_and_taming_happens_once_per_process() -> None:
    assert native_heap.limit_arenas(8)
    first = native_heap.tame_native_heap()
    assert first is not None and first is native_heap.tame_native_heap()
