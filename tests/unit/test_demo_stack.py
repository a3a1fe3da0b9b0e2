"""`LocalStack` stops newest first, and SIGKILLs a child that ignores SIGTERM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from safeloop.services.demo import stack as stack_module
from safeloop.services.demo.stack import ChildService, LocalStack

STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def test_services_stop_in_reverse_order(tmp_path: Path) -> None:
    stopped: list[str] = []
    with LocalStack(tmp_path, {}) as stack:
        for name in ("kafka", "warehouse", "replica"):
            stack.adopt(name, lambda name=name: stopped.append(name))
    assert stopped == ["replica", "warehouse", "kafka"]


def test_a_child_ignoring_sigterm_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack_module, "STOP_GRACE_S", 0.5)
    process = subprocess.Popen(
        [sys.executable, "-c", STUBBORN], start_new_session=True, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready"
    child = ChildService("stubborn", process, tmp_path / "stubborn.log")
    stack = LocalStack(tmp_path, {})
    stack.services.append(child)
    stack.stop()
    assert process.poll() == -9  # SIGKILL: SIGTERM was ignored
    process.stdout.close()
    assert not stack.services


def test_one_failing_stop_does_not_spare_the_others(tmp_path: Path) -> None:
    stopped: list[str] = []

    def broken() -> None:
        raise RuntimeError("cannot stop")

    stack = LocalStack(tmp_path, {})
    stack.adopt("first", lambda: stopped.append("first"))
    stack.adopt("broken", broken)
    stack.stop()
    assert stopped == ["first"]


def test_a_setup_command_fails_unless_its_exit_code_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in CLI that prints, then exits 4 (as `canary --wait` does when superseded).
    monkeypatch.setattr(
        stack_module, "CLI", (sys.executable, "-c", "print('{}'); raise SystemExit(4)")
    )
    with LocalStack(tmp_path, {}) as stack:
        with pytest.raises(stack_module.StackError, match="failed with 4"):
            stack.run("canary", [])
        assert stack.run("canary", [], ok_codes=(0, 4)).strip() == "{}"
