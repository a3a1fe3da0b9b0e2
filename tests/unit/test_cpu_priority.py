"""The shadow scorer's CPU priority: how it is spelt, where it comes from, what is applied."""

from __future__ import annotations

import argparse
import os

import pytest

from safeloop.infra import cpu_priority
from safeloop.infra.cpu_priority import CpuPriority, lower_cpu_priority
from safeloop.infra.exceptions import SettingsError
from safeloop.infra.settings import Settings
from safeloop.services.cli import shadow_scorer_commands


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("idle", CpuPriority.IDLE), (" LOW ", CpuPriority.LOW), ("Normal", CpuPriority.NORMAL)],
)
def test_priorities_parse_in_any_case(raw: str, expected: CpuPriority) -> None:
    assert CpuPriority.parse("X", raw) is expected


def test_an_unknown_priority_names_the_variable_and_the_choices() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"SAFELOOP_SHADOW_CPU_PRIORITY": "high"})
    assert info.value.name == "SAFELOOP_SHADOW_CPU_PRIORITY"
    assert "idle, low, normal" in str(info.value)


def test_the_scorer_is_idle_unless_told_otherwise_and_the_setting_round_trips() -> None:
    assert Settings.from_env({}).shadow_cpu_priority is CpuPriority.IDLE
    settings = Settings.from_env({"SAFELOOP_SHADOW_CPU_PRIORITY": "normal"})
    assert settings.shadow_cpu_priority is CpuPriority.NORMAL
    assert Settings.from_env(settings.to_env()).shadow_cpu_priority is CpuPriority.NORMAL


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    shadow_scorer_commands.register(parser.add_subparsers())
    return parser.parse_args(["shadow-scorer", *argv])


def test_the_cli_flag_takes_the_three_choices_and_defaults_to_the_setting() -> None:
    assert _parse().cpu_priority is None
    assert _parse("--cpu-priority", "low").cpu_priority == "low"
    with pytest.raises(SystemExit):
        _parse("--cpu-priority", "high")


def test_normal_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_: object) -> None:
        raise AssertionError("normal must not touch the scheduler")

    monkeypatch.setattr(os, "sched_setscheduler", forbidden)
    monkeypatch.setattr(os, "nice", forbidden)
    assert lower_cpu_priority(CpuPriority.NORMAL) == "unchanged"


def test_idle_asks_for_sched_idle_and_falls_back_to_nice_19_when_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[object, ...]] = []

    def setscheduler(pid: int, policy: int, param: object) -> None:
        calls.append(("sched", pid, policy))

    def nice(increment: int) -> int:
        calls.append(("nice", increment))
        return 5 + increment

    monkeypatch.setattr(os, "sched_setscheduler", setscheduler)
    monkeypatch.setattr(os, "nice", nice)
    assert lower_cpu_priority(CpuPriority.IDLE) == "SCHED_IDLE"
    assert calls == [("sched", 0, os.SCHED_IDLE)]

    def refused(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    calls.clear()
    monkeypatch.setattr(os, "sched_setscheduler", refused)
    assert lower_cpu_priority(CpuPriority.IDLE) == f"nice {cpu_priority.LOWEST_NICE}"
    # From nice 5 (what nice(0) reports here), up by 14 to 19.
    assert calls == [("nice", 0), ("nice", 14)]


def test_low_is_nice_19_without_touching_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    increments: list[int] = []

    def nice(increment: int) -> int:
        increments.append(increment)
        return increment

    def forbidden(*_: object) -> None:
        raise AssertionError("low keeps the normal policy")

    monkeypatch.setattr(os, "sched_setscheduler", forbidden)
    monkeypatch.setattr(os, "nice", nice)
    assert lower_cpu_priority(CpuPriority.LOW) == "nice 19"
    assert increments == [0, 19]
