"""The central rollback guard: the replicas' rules (`judge`) over every replica's traffic.

It watches `predictions` (and, through the performance tracker, `feedback`), keeps the last
`window_rows` requests per (model, version, route), and judges each model's current canary
against its production version after every batch. A breach publishes a signed ROLLBACK with
the reason and the figures in `details`, audited in `control_log`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig, PredictionEvent, Route
from safeloop.services.control.exceptions import ControlError
from safeloop.services.control.issuer import CommandIssuer
from safeloop.services.guard.judge import judge
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.guard.verdict import GuardVerdict, VerdictKind
from safeloop.services.metrics.columns import health_batch
from safeloop.services.metrics.health import HEALTH_COLUMNS, health_of_window
from safeloop.services.metrics.keyed import KeyedWindows, WindowKey
from safeloop.services.metrics.performance_tracker import PerformanceTracker
from safeloop.services.metrics.windows import CountWindow

logger = logging.getLogger(__name__)

RETRY_AFTER_FAILURE_S = 1.0


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """A rollback the guard issued (or tried to: `command` is None when publishing failed)."""

    model_name: str
    canary_version: str
    production_version: str
    verdict: GuardVerdict
    command: ControlCommand | None
    error: str | None = None


class CentralGuard:
    """Judges canaries on demand; `check` is cheap enough to run after every polled batch."""

    def __init__(
        self,
        policy: GuardPolicy,
        issuer: CommandIssuer,
        *,
        performance: PerformanceTracker | None = None,
        window_rows: int = 1_000,
    ) -> None:
        self.policy = policy
        self._issuer = issuer
        self._performance = performance
        self._windows = KeyedWindows(lambda: CountWindow(window_rows, HEALTH_COLUMNS))
        self._failed_at: dict[str, float] = {}
        self.rollbacks = 0
        self.rollback_failures = 0
        # Canary judgements since start, by verdict kind.
        self.verdicts: dict[VerdictKind, int] = dict.fromkeys(VerdictKind, 0)

    def observe(self, events: Sequence[PredictionEvent]) -> None:
        """Fold a batch of predictions into the windows (shadows cannot harm users: skipped)."""
        served = [event for event in events if event.route is not Route.SHADOW]
        if served:
            keys, batch = health_batch(served)
            self._windows.append(keys, batch)

    def check(self) -> list[GuardDecision]:
        """Judge every current canary; roll back those in breach."""
        decisions = []
        for key, window in self._windows:
            if key.route is not Route.CANARY:
                continue
            config = self._issuer.config_of(key.model_name)
            if config is None or not _is_current_canary(config, key.model_version):
                # Rolled back, promoted or replaced: a later retry of it starts clean.
                self._windows.discard(key)
                continue
            production_key = WindowKey(key.model_name, config.production_version, Route.PRODUCTION)
            production = health_of_window(self._windows.window(production_key).view())
            canary_performance = production_performance = None
            if self._performance is not None and self.policy.max_performance_drop is not None:
                canary_performance = self._performance.count_snapshot(key)
                production_performance = self._performance.count_snapshot(production_key)
            verdict = judge(
                health_of_window(window.view()),
                production,
                self.policy,
                canary_performance,
                production_performance,
            )
            self.verdicts[verdict.kind] += 1
            if verdict.kind is VerdictKind.BREACH and self._may_try(key.model_name):
                decisions.append(self._roll_back(key, config, verdict))
        return decisions

    def _may_try(self, model_name: str) -> bool:
        failed_at = self._failed_at.get(model_name)
        return failed_at is None or time.monotonic() - failed_at >= RETRY_AFTER_FAILURE_S

    def _roll_back(
        self, key: WindowKey, config: ModelConfig, verdict: GuardVerdict
    ) -> GuardDecision:
        canary, production = key.model_version, config.production_version
        details = {
            **verdict.numbers(),
            "canary_version": canary,
            "production_version": production,
            "decided_by": "central_guard",
        }

        def change(current: ModelConfig) -> ModelConfig:
            return dataclasses.replace(current, canary_version=None, canary_basis_points=0)

        reason = f"rollback guard: {verdict.reason}"
        try:
            command = self._issuer.issue(
                key.model_name, CommandKind.ROLLBACK, change, reason=reason, details=details
            )
        except ControlError as exc:
            self._failed_at[key.model_name] = time.monotonic()
            self.rollback_failures += 1
            logger.error(
                "rollback of %s canary %s not published, retrying: %s", key.model_name, canary, exc
            )
            return GuardDecision(key.model_name, canary, production, verdict, None, str(exc))
        self._failed_at.pop(key.model_name, None)
        self._windows.discard(key)
        self.rollbacks += 1
        logger.warning(
            "rolled back %s canary %s (sequence %s): %s",
            key.model_name,
            canary,
            command.sequence,
            verdict.reason,
        )
        return GuardDecision(key.model_name, canary, production, verdict, command)


def _is_current_canary(config: ModelConfig, version: str) -> bool:
    return config.canary_version == version and config.canary_basis_points > 0
