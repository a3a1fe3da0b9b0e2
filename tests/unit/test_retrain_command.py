"""`safeloop retrain run` turns its options into the loop's policy and its canary's plan."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from safeloop.infra.settings import Settings
from safeloop.services.cli.main import build_parser
from safeloop.services.retrain_loop import wiring


class Built:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, settings: Settings, policy: Any, plan: Any, *, tick_ms: int) -> Built:
        self.calls.append((policy, plan, tick_ms))
        return self

    def run(self, stop: threading.Event) -> None:
        """Returns at once: the loop itself is tested elsewhere."""


@pytest.mark.parametrize("require", [True, False])
def test_retrain_run_passes_the_labelled_canary_plan(
    monkeypatch: pytest.MonkeyPatch, require: bool
) -> None:
    built = Built()
    monkeypatch.setattr(wiring, "build_retrain_service", built)
    monkeypatch.setattr("signal.signal", lambda *args: None)
    argv = ["retrain", "run", "--steps", "25,100", "--min-labelled", "40", "--min-agreement", "0"]
    args = build_parser().parse_args(argv + (["--require-labels"] if require else []))
    assert args.func(args, Settings()) == 0
    policy, plan, tick_ms = built.calls[0]
    assert plan.steps_percent == (25.0, 100.0)
    assert plan.require_labels is require and plan.min_labelled_per_step == 40
    assert policy.min_agreement == 0.0 and tick_ms == 1_000
