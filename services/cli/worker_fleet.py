"""WorkerFleet: N stream worker processes under `safeloop process --workers N`.

A worker that dies is started again (its partitions go to the others meanwhile, through the
consumer group); one dying over and over stops the fleet with an error. Every worker gets
SIGTERM when the fleet process dies, even by SIGKILL, so no orphan keeps its partitions and
ports from the next start.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How often a dead worker is started again before the fleet gives up."""

    max_restarts: int = 5
    within_s: float = 60.0
    first_backoff_s: float = 1.0
    max_backoff_s: float = 30.0


def exit_status(returncode: int) -> int:
    """A shell's exit status for a child's return code (killed by signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def _parent_death_signal() -> Callable[[], None] | None:
    """What makes a child get SIGTERM when its parent dies (Linux prctl), or None elsewhere.
    Looked up before forking: the child, between fork and exec, only calls it."""
    prctl = getattr(ctypes.CDLL(None), "prctl", None)
    if prctl is None:
        return None

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return die_with_parent


class WorkerFleet:
    """Starts `count` workers from `command_for(index)` and keeps them running until stopped."""

    def __init__(
        self,
        count: int,
        command_for: Callable[[int], Sequence[str]],
        policy: RestartPolicy | None = None,
    ) -> None:
        self.count = count
        self.command_for = command_for
        self.policy = policy or RestartPolicy()
        self.restarts = 0
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = threading.Event()
        self._stop_signal = 0
        self._recent: deque[float] = deque()
        self._die_with_parent = _parent_death_signal()

    @property
    def pids(self) -> dict[int, int]:
        """Worker index -> pid of its current process."""
        return {index: child.pid for index, child in self._children.items()}

    def run(self) -> int:
        """Run until SIGTERM or SIGINT (forwarded to every worker); the exit status."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for index in range(self.count):
            self._start(index)
        log.info("started %s stream workers: %s", self.count, self.pids)
        status = 0
        while self._children:
            # Wait for any worker to exit, leaving the reaping to its Popen (ChildProcessError:
            # reaped already, by the poll in Popen.send_signal).
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            for index, child in list(self._children.items()):
                if child.poll() is not None:
                    del self._children[index]
                    status = status or self._exited(index, child)
        return status

    def _exited(self, index: int, child: subprocess.Popen[bytes]) -> int:
        """Start worker `index` again unless stopping or dying too often; a status to report."""
        code = exit_status(child.returncode)
        if self._stopping.is_set():
            # Ended by the signal passed on to it: stopped as asked.
            return 0 if -child.returncode == self._stop_signal else code
        log.error("stream worker %s (pid %s) exited with status %s", index, child.pid, code)
        if not self._may_restart():
            log.error(
                "stream worker %s died %s times within %.0f s: stopping the fleet",
                index,
                len(self._recent),
                self.policy.within_s,
            )
            self._stop(signal.SIGTERM, None)
            return code or 1
        backoff = min(
            self.policy.first_backoff_s * 2 ** (len(self._recent) - 1), self.policy.max_backoff_s
        )
        log.warning("starting stream worker %s again in %.1f s", index, backoff)
        # A stop during the back-off ends it at once.
        if not self._stopping.wait(backoff):
            self._start(index)
            self.restarts += 1
            log.info("stream worker %s runs again as pid %s", index, self._children[index].pid)
        return 0

    def _start(self, index: int) -> None:
        # The fleet process runs no threads, so preexec_fn is safe here.
        self._children[index] = subprocess.Popen(
            list(self.command_for(index)),
            preexec_fn=self._die_with_parent,  # noqa: PLW1509
        )

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self._recent.append(now)
        while self._recent and now - self._recent[0] > self.policy.within_s:
            self._recent.popleft()
        return len(self._recent) <= self.policy.max_restarts

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop_signal = signum
        self._stopping.set()
        for child in self._children.values():
            if child.returncode is None:
                child.send_signal(signum)
