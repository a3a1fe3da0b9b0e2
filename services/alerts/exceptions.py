"""Errors raised by the alerts package."""

from __future__ import annotations

from safeloop import SafeloopError


class AlertError(SafeloopError):
    """Root of every error raised by `services.alerts`."""


class AlertTargetError(AlertError):
    """An alert target is misconfigured (unknown kind, missing routing key or secret)."""


class DeliveryFailedError(AlertError):
    """A target did not accept an alert; `retry_after_s` is the server's hint, if it gave one."""

    def __init__(self, target: str, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"alert not delivered to {target}: {reason}")
        self.target = target
        self.reason = reason
        self.retry_after_s = retry_after_s


class PermanentDeliveryError(DeliveryFailedError):
    """The target refused the alert for good (a 4xx other than 408/425/429): no retry."""
