"""What every local daemon needs: is it alive, wait till it is gone, stop it, tail its log."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

_POLL_S = 0.1
KILL_TIMEOUT_S = 10.0


def is_alive(pid: int) -> bool:
    """True while any thread of the process runs; a fully exited zombie counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: the signal probe above is all there is
    # Field 3, after the parenthesised command name, is the state letter. A killed process's
    # main thread turns zombie before its other threads exit and close its sockets: count those.
    if stat.rpartition(")")[2].split()[0] != "Z":
        return True
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def send_signal(pid: int, signum: signal.Signals) -> None:
    """Signal `pid`; one that is already gone is no error."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Whether `pid` is gone within `timeout_s` (reaped on the way, should it be our child)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_alive(pid):
            return True
        time.sleep(_POLL_S)
    return not is_alive(pid)


def kill(pid: int, timeout_s: float = KILL_TIMEOUT_S) -> bool:
    """SIGKILL `pid`; whether it is gone within `timeout_s`."""
    send_signal(pid, signal.SIGKILL)
    return wait_gone(pid, timeout_s)


def terminate(
    pid: int,
    timeout_s: float,
    *,
    what: str,
    logger: logging.Logger,
    wait: Callable[[int, float], bool] = wait_gone,
) -> bool:
    """SIGTERM `pid`, SIGKILL it if it outlives `timeout_s`; whether it is gone in the end.

    `what` names the process in the warning `logger` logs before the SIGKILL; `wait(pid,
    timeout_s)` tells whether it exited in time (a caller holding a Popen waits on that).
    """
    send_signal(pid, signal.SIGTERM)
    if wait(pid, timeout_s):
        return True
    logger.warning("%s ignored SIGTERM for %.0fs; killing it", what, timeout_s)
    send_signal(pid, signal.SIGKILL)
    return wait(pid, KILL_TIMEOUT_S)


def tail(path: Path, lines: int, *, offset: int = 0, missing: str = "") -> str:
    """The last `lines` lines of `path` written after byte `offset` (all of it if the file
    rolled over since); `missing` when the file cannot be read."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset if offset <= path.stat().st_size else 0)
            text = handle.read().decode(errors="replace")
    except OSError:
        return missing
    return "\n".join(text.strip().splitlines()[-lines:])


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` happens to be our child, so it is no zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
