"""`AlertNotifier`: alerts queued without blocking the caller, delivered with retries off-thread.

Each target has its own queue and thread, so a slow or failing target delays nobody else; a
rollback that raises an alert never waits for it. A full queue drops the alert, counted and
logged, rather than holding up the metrics loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from safeloop.infra.settings import Settings
from safeloop.services.alerts.alert import Alert, Severity
from safeloop.services.alerts.exceptions import (
    AlertTargetError,
    DeliveryFailedError,
    PermanentDeliveryError,
)
from safeloop.services.alerts.payloads import AlertTarget, TargetKind, render
from safeloop.services.alerts.transport import Transport, UrllibTransport

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    """Queueing and retry behaviour, per target."""

    queue_size: int = 1_000
    max_attempts: int = 6
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 5.0


@dataclass(slots=True)
class AlertCounts:
    """Totals since start, per target (for /metrics and tests)."""

    sent: int = 0
    retries: int = 0
    failed: int = 0
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class AlertSecrets:
    """What payloads are signed or routed with; never logged."""

    webhook_secret: str = ""
    pagerduty_routing_key: str = ""


class AlertNotifier:
    """`notify` returns at once; `close` delivers what is queued, within a bound."""

    def __init__(
        self,
        targets: Sequence[AlertTarget],
        *,
        dashboard_url: str,
        secrets: AlertSecrets,
        transport: Transport | None = None,
        config: NotifierConfig | None = None,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.targets = tuple(targets)
        self.dashboard_url = dashboard_url
        self.config = config or NotifierConfig()
        self._secrets = secrets
        self._transport = transport or UrllibTransport()
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._stop = threading.Event()
        self._queues: dict[AlertTarget, queue.Queue[Alert | None]] = {
            target: queue.Queue(self.config.queue_size) for target in self.targets
        }
        self.counts: dict[AlertTarget, AlertCounts] = {t: AlertCounts() for t in self.targets}
        self._threads = [
            threading.Thread(
                target=self._deliver_all, args=(t,), name=f"alerts-{t.kind}", daemon=True
            )
            for t in self.targets
        ]
        for thread in self._threads:
            thread.start()

    def notify(self, alert: Alert) -> None:
        """Queue `alert` for every target that wants its severity; never blocks."""
        for target, pending in self._queues.items():
            if alert.severity < target.min_severity:
                continue
            try:
                pending.put_nowait(alert)
            except queue.Full:
                self.counts[target].dropped += 1
                log.warning("alert queue of %s full: dropped %s", target, alert.summary)

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (retries cut short at `timeout_s`), then stop the threads."""
        for pending in self._queues.values():
            try:
                pending.put(None, timeout=timeout_s)
            except queue.Full:
                log.warning("alerts: queue still full at close, dropping the rest")
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        self._stop.set()
        for thread in self._threads:
            thread.join(1.0)

    def _deliver_all(self, target: AlertTarget) -> None:
        pending = self._queues[target]
        while True:
            alert = pending.get()
            if alert is None:
                return
            self._deliver(target, alert)

    def _deliver(self, target: AlertTarget, alert: Alert) -> None:
        counts = self.counts[target]
        config = self.config
        backoff_s = config.initial_backoff_s
        for attempt in range(1, config.max_attempts + 1):
            try:
                request = render(
                    target,
                    alert,
                    dashboard_url=self.dashboard_url,
                    webhook_secret=self._secrets.webhook_secret,
                    pagerduty_routing_key=self._secrets.pagerduty_routing_key,
                    now_ms=self._clock_ms(),
                )
                self._transport.post(target.url, request.body, request.headers, config.timeout_s)
            except (PermanentDeliveryError, AlertTargetError) as exc:
                counts.failed += 1
                log.error("alert %r not delivered to %s: %s", alert.summary, target, exc)
                return
            except DeliveryFailedError as exc:
                if attempt == config.max_attempts or self._stop.is_set():
                    counts.failed += 1
                    log.error(
                        "alert %r not delivered to %s after %s attempts: %s",
                        alert.summary,
                        target,
                        attempt,
                        exc.reason,
                    )
                    return
                counts.retries += 1
                delay_s = max(backoff_s, exc.retry_after_s or 0.0)
                log.warning(
                    "alert to %s failed (%s), retry %s in %.1f s",
                    target,
                    exc.reason,
                    attempt,
                    delay_s,
                )
                if self._stop.wait(min(delay_s, config.max_backoff_s)):
                    counts.failed += 1
                    return
                backoff_s = min(backoff_s * 2, config.max_backoff_s)
            else:
                counts.sent += 1
                log.info("alert sent to %s: %s", target, alert.summary)
                return


def notifier_from_settings(settings: Settings) -> AlertNotifier | None:
    """The notifier of `settings.alert_targets`; None when no target is configured."""
    if not settings.alert_targets:
        return None
    targets = [
        AlertTarget(TargetKind(kind), url, Severity[severity.upper()])
        for kind, severity, url in settings.alert_targets
    ]
    secrets = AlertSecrets(
        settings.alert_webhook_secret.value, settings.pagerduty_routing_key.value
    )
    return AlertNotifier(targets, dashboard_url=settings.dashboard_url, secrets=secrets)
