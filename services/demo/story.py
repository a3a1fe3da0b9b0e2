"""The scripted story: warm-up, a good canary walked to promotion, a bad canary (with a fault
injected by `safeloop inject`, the rehearsal path) rolled back by the guard on every replica,
drift in one feature and the retraining decision it causes, and the retraining loop closing the
circle by itself: candidate -> shadow -> canary -> outcome.

Each phase waits for its outcome with a deadline; a missing outcome is recorded (the story goes
on with the next phase) and makes the demo exit 1.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from clickhouse_connect.driver import Client

from safeloop.services.demo.config import (
    DRIFT_FEATURE,
    DRIFT_SHIFT,
    MIN_LABELLED,
    MODEL,
    DemoConfig,
)
from safeloop.services.demo.figures import ControlEvent, Decision, RetrainStep, StoryFigures
from safeloop.services.demo.progress import Progress
from safeloop.services.demo.stack import LocalStack
from safeloop.services.demo.traffic import TrafficDriver
from safeloop.services.demo.watch import ReplicaWatcher
from safeloop.services.rollout.history import latest_rollout
from safeloop.services.rollout.machine import Phase

logger = logging.getLogger(__name__)

T = TypeVar("T")
ROLLOUT_STEPS = "5,25,50,100"
BAD_CANARY_PERCENT = 25
# `safeloop inject`'s share of v3's requests the replicas fail (the guard's limit is 5 %).
INJECTED_ERROR_RATE = 0.3
# `canary --wait`'s exit code (ExitCode.SUPERSEDED) when a newer command won before every
# replica applied it: on a loaded machine the guard's rollback can be that newer command.
SUPERSEDED_EXIT = 4
POLL_S = 1.0
# How a retraining run ends; the circle is closed when its canary was decided on traffic.
RETRAIN_ENDS = frozenset({"promoted", "rolled_back", "rejected", "failed"})
CIRCLE_CLOSED = frozenset({"promoted", "rolled_back"})


@dataclass
class StoryResult:
    started_at: float = field(default_factory=time.time)
    promotion: ControlEvent | None = None
    bad_canary_sequence: int | None = None
    rollback: ControlEvent | None = None
    rollback_seconds: float | None = None
    rolled_back_on: list[str] = field(default_factory=list)
    decision: Decision | None = None
    # The retraining run's recorded steps (the last one says how it ended).
    retraining: list[RetrainStep] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class Story:
    def __init__(
        self,
        config: DemoConfig,
        *,
        stack: LocalStack,
        client: Client,
        figures: StoryFigures,
        traffic: TrafficDriver,
        watcher: ReplicaWatcher,
        progress: Progress,
        stop: threading.Event,
        start_retraining: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.start_retraining = start_retraining
        self.stack = stack
        self.client = client
        self.figures = figures
        self.traffic = traffic
        self.watcher = watcher
        self.progress = progress
        self.stop = stop
        self.result = StoryResult()

    def run(self) -> StoryResult:
        self.progress.phase("1/5 warm-up: v1 serves every request, labels follow")
        self.stop.wait(self.config.warmup_s)
        self._good_canary()
        self._bad_canary()
        self._drift()
        self._retrain()
        remaining = self.config.duration_s - (time.time() - self.result.started_at)
        if remaining > 1 and not self.stop.is_set():
            self.progress.phase(f"traffic goes on for the rest of --duration ({remaining:.0f} s)")
            self.stop.wait(remaining)
        return self.result

    # -- phases -----------------------------------------------------------------------------

    def _good_canary(self) -> None:
        self.progress.phase("2/5 progressive canary: v2 from 5 % up to promotion")
        timeout = self.config.phase_timeout_s(0.45)
        self.stack.run("rollout-start", [
            "rollout", "start", MODEL, "--candidate", "v2", "--steps", ROLLOUT_STEPS,
            "--bake-s", f"{self.config.bake_s:g}", "--min-sample", str(self.config.min_sample),
            "--min-labelled", str(MIN_LABELLED), "--max-p99-latency-ratio", "0",
            "--deadline-s", f"{timeout:g}",
        ])  # fmt: skip
        last = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            self.stack.check_alive()
            found = latest_rollout(self.client, MODEL)
            if found is not None:
                plan, state = found
                now = f"{state.phase.value} at {state.canary_percent(plan):g} %"
                if now != last:
                    last = now
                    self.progress.event(f"rollout v2: {now} ({state.reason})")
                if state.phase is not Phase.RUNNING:
                    break
            self.stop.wait(POLL_S)
        self.result.promotion = self._wait_for(self.figures.promotion, 20.0)
        if self.result.promotion is None:
            self.result.missing.append(f"promotion of v2 (rollout {last or 'never started'})")
        else:
            self.progress.event(f"promoted v2 (sequence {self.result.promotion.sequence})")

    def _bad_canary(self) -> None:
        self.progress.phase(f"3/5 bad canary: v3 at {BAD_CANARY_PERCENT} %, the guard must act")
        # A rehearsal on top of v3's bad labels: the replicas fail a share of v3's requests
        # (signed, expiring by itself), so the guard's error-rate rule acts within seconds,
        # before any label has arrived.
        self.stack.run("inject-v3", [
            "inject", MODEL, "v3", "--error-rate", f"{INJECTED_ERROR_RATE:g}",
            "--for", f"{self.config.phase_timeout_s(0.2):.0f}s",
            "--reason", "demo: rehearse a failing canary",
        ])  # fmt: skip
        self.progress.event(
            f"injected {INJECTED_ERROR_RATE:.0%} errors into v3's requests (safeloop inject)"
        )
        output = self.stack.run("canary-v3", [
            "canary", MODEL, "--percent", str(BAD_CANARY_PERCENT), "--version", "v3",
            "--reason", "demo: v3 trained on a corrupted label feed", "--wait", "--json",
        ], ok_codes=(0, SUPERSEDED_EXIT))  # fmt: skip
        sequence = int(json.loads(output)["command"]["sequence"])
        self.result.bad_canary_sequence = sequence
        self.progress.event(f"canary v3 at {BAD_CANARY_PERCENT} % (sequence {sequence})")
        rollback = self._wait_for(
            lambda: self.figures.rollback_after(sequence), self.config.phase_timeout_s(0.2)
        )
        self.result.rollback = rollback
        if rollback is None:
            self.result.missing.append("automatic rollback of canary v3")
            return
        self.progress.event(f"{rollback.issuer}: {rollback.reason}"[:120])
        applied_at = self._wait_for(lambda: self.watcher.applied_everywhere_at(rollback.sequence))
        first_bad = self.traffic.counts.first_answer_at.get("v3")
        if applied_at is not None and first_bad is not None:
            self.result.rollback_seconds = applied_at - first_bad
        self.result.rolled_back_on = self._replicas_with(rollback.sequence)
        if len(self.result.rolled_back_on) < 2:
            self.result.missing.append(
                f"rollback applied on both replicas (status shows {self.result.rolled_back_on})"
            )
        else:
            self.progress.event(f"rollback applied on {', '.join(self.result.rolled_back_on)}")

    def _drift(self) -> None:
        self.progress.phase(f"4/5 drift: {DRIFT_FEATURE} shifts by {DRIFT_SHIFT:+g} sd")
        self.traffic.shift(DRIFT_FEATURE, DRIFT_SHIFT)
        decision = self._wait_for(
            lambda: self.figures.retraining_decision(DRIFT_FEATURE),
            self.config.phase_timeout_s(0.25),
        )
        self.result.decision = decision
        if decision is None:
            self.result.missing.append(f"retraining decision naming {DRIFT_FEATURE}")
        else:
            self.progress.event(f"retraining {decision.model_version}: {decision.urgency}")

    def _retrain(self) -> None:
        worse = " (trained on corrupted labels)" if self.config.worse_candidate else ""
        self.progress.phase(
            f"5/5 retraining loop: candidate{worse} -> shadow -> canary, no hand on it"
        )
        if self.result.decision is None or self.start_retraining is None:
            self.result.missing.append("retraining loop (no decision to act on)")
            return
        self.start_retraining()
        seen = 0
        deadline = time.monotonic() + self.config.phase_timeout_s(0.6)
        steps: list[RetrainStep] = []
        while time.monotonic() < deadline and not self.stop.is_set():
            self.stack.check_alive()
            try:
                steps = self.figures.retraining_steps()
            except Exception as exc:  # a query racing a restart: try again
                logger.debug("retraining steps not read: %s", exc)
            # The story follows the first run; a later decision may start another after it.
            steps = [step for step in steps if step.run_id == steps[0].run_id] if steps else []
            for step in steps[seen:]:
                self.progress.event(f"retraining: {step.stage} - {step.reason}"[:120])
            seen = len(steps)
            if steps and steps[-1].stage in RETRAIN_ENDS:
                break
            self.stop.wait(POLL_S)
        self.result.retraining = steps
        last = steps[-1].stage if steps else "never started"
        if self.config.worse_candidate:
            # A candidate trained on corrupted labels must never stay in production.
            if last != "rolled_back":
                self.result.missing.append(f"worse retrained candidate rolled back ({last})")
        elif last not in CIRCLE_CLOSED:
            self.result.missing.append(f"retrained candidate promoted or rolled back ({last})")

    # -- helpers ----------------------------------------------------------------------------

    def _replicas_with(self, sequence: int) -> list[str]:
        """Live replicas that, by `safeloop status`, applied `sequence` or later."""
        report = json.loads(self.stack.run("status", ["status", MODEL, "--json"]))
        return [
            str(replica["replica_id"])
            for replica in report["replicas"]
            if replica["live"] and (replica["config_versions"].get(MODEL) or 0) >= sequence
        ]

    def _wait_for(self, check: Callable[[], T | None], timeout_s: float = 30.0) -> T | None:
        deadline = time.monotonic() + timeout_s
        while not self.stop.is_set():
            self.stack.check_alive()
            try:
                value = check()
            except Exception as exc:  # a query racing a restart: try again
                logger.debug("check failed, retrying: %s", exc)
                value = None
            if value is not None or time.monotonic() > deadline:
                return value
            self.stop.wait(0.25)
        return None
