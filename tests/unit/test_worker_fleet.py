"""WorkerFleet with stand-in workers (sleeping Python processes that record their pids): a dead
worker is started again, a crash loop stops the fleet, and no worker outlives a killed fleet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from safeloop.services.cli.worker_fleet import exit_status

REPO = Path(__file__).resolve().parents[2]


def _fleet_process(
    tmp_path: Path, *, max_restarts: int = 5, crash: bool = False
) -> subprocess.Popen[bytes]:
    """A fleet of 2 stand-in workers in its own process; each worker writes
    `<tmp>/<index>-<pid>` and sleeps (or, with `crash`, exits 3 at once)."""
    worker = (
        "import os, sys, time; "
        "open(os.path.join(sys.argv[1], sys.argv[2] + '-' + str(os.getpid())), 'w').close(); "
        + ("sys.exit(3)" if crash else "time.sleep(120)")
    )
    script = textwrap.dedent(
        f"""
        import logging, sys
        from safeloop.services.cli.worker_fleet import RestartPolicy, WorkerFleet
        logging.basicConfig(level=logging.INFO)
        policy = RestartPolicy(max_restarts={max_restarts}, within_s=60, first_backoff_s=0.05)
        fleet = WorkerFleet(
            2, lambda i: [sys.executable, "-c", {worker!r}, {str(tmp_path)!r}, str(i)], policy
        )
        sys.exit(fleet.run())
        """
    )
    return subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE)


def _pids(tmp_path: Path, index: int) -> list[int]:
    return sorted(
        (int(p.name.split("-")[1]) for p in tmp_path.iterdir() if p.name.startswith(f"{index}-")),
        key=lambda pid: (tmp_path / f"{index}-{pid}").stat().st_mtime_ns,
    )


def _wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_worker_is_started_again_and_sigterm_stops_the_fleet_cleanly(
    tmp_path: Path,
) -> None:
    fleet = _fleet_process(tmp_path)
    try:
        assert _wait_for(lambda: len(_pids(tmp_path, 0)) == 1 and len(_pids(tmp_path, 1)) == 1)
        first = _pids(tmp_path, 1)[0]
        os.kill(first, signal.SIGKILL)
        assert _wait_for(lambda: len(_pids(tmp_path, 1)) == 2), "worker 1 was not started again"
        second = _pids(tmp_path, 1)[1]
        assert second != first and _alive(second)
        assert _pids(tmp_path, 0) == _pids(tmp_path, 0)[:1]  # the other one untouched
        fleet.send_signal(signal.SIGTERM)
        log = fleet.communicate(timeout=20)[1].decode()
        assert fleet.returncode == 0
        assert not _alive(second) and not _alive(_pids(tmp_path, 0)[0])
        assert "stream worker 1" in log and "exited with status 137" in log
    finally:
        if fleet.poll() is None:
            fleet.kill()
            fleet.communicate()


def test_a_worker_dying_over_and_over_stops_the_fleet_with_its_status(tmp_path: Path) -> None:
    fleet = _fleet_process(tmp_path, max_restarts=2, crash=True)
    try:
        log = fleet.communicate(timeout=30)[1].decode()
        assert fleet.returncode == 3
        # Started once, then twice again; the third death within the minute ends it.
        assert len(_pids(tmp_path, 0)) + len(_pids(tmp_path, 1)) >= 3
        assert "stopping the fleet" in log
    finally:
        if fleet.poll() is None:
            fleet.kill()
            fleet.communicate()


def test_no_worker_outlives_a_fleet_killed_with_sigkill(tmp_path: Path) -> None:
    fleet = _fleet_process(tmp_path)
    try:
        assert _wait_for(lambda: len(_pids(tmp_path, 0)) == 1 and len(_pids(tmp_path, 1)) == 1)
        workers = [_pids(tmp_path, 0)[0], _pids(tmp_path, 1)[0]]
        fleet.kill()
        fleet.communicate(timeout=10)
        assert _wait_for(lambda: not any(_alive(pid) for pid in workers)), (
            "orphaned workers kept running"
        )
    finally:
        if fleet.poll() is None:
            fleet.kill()
            fleet.communicate()


def test_exit_status_of_a_signalled_worker_is_128_plus_the_signal() -> None:
    assert exit_status(-signal.SIGKILL) == 137
    assert exit_status(0) == 0
    assert exit_status(3) == 3
