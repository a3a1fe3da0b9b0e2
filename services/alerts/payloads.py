"""Alert bodies for each kind of target: a generic signed webhook, Slack, PagerDuty (Events v2)."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from safeloop.services.alerts.alert import Alert, Severity
from safeloop.services.alerts.exceptions import AlertTargetError

SIGNATURE_HEADER = "X-Safeloop-Signature"
TIMESTAMP_HEADER = "X-Safeloop-Timestamp"
_PAGERDUTY_SEVERITY = {
    Severity.INFO: "info",
    Severity.WARNING: "warning",
    Severity.CRITICAL: "critical",
}
_SLACK_ICON = {Severity.INFO: ":information_source:", Severity.WARNING: ":warning:",
               Severity.CRITICAL: ":rotating_light:"}  # fmt: skip


class TargetKind(StrEnum):
    """How a target wants its alerts."""

    WEBHOOK = "webhook"
    SLACK = "slack"
    PAGERDUTY = "pagerduty"


@dataclass(frozen=True, slots=True)
class AlertTarget:
    """Where alerts go, in which shape, from which severity up."""

    kind: TargetKind
    url: str
    min_severity: Severity = Severity.INFO

    def __str__(self) -> str:
        # The URL may carry a token (Slack's incoming webhooks do): show only where it points.
        return f"{self.kind.value}:{self.url.split('?')[0].rsplit('/', 1)[0]}/…"


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP POST to make."""

    body: bytes
    headers: dict[str, str]


def render(
    target: AlertTarget,
    alert: Alert,
    *,
    dashboard_url: str,
    webhook_secret: str,
    pagerduty_routing_key: str,
    now_ms: int,
) -> Request:
    """The POST that tells `target` about `alert`."""
    link = alert.dashboard_link(dashboard_url)
    if target.kind is TargetKind.WEBHOOK:
        body = _json(
            {
                "kind": alert.kind.value,
                "severity": alert.severity.label,
                "model": alert.model_name,
                "summary": alert.summary,
                "occurred_at_ms": alert.occurred_at_ms,
                "dedup_key": alert.dedup_key,
                "details": alert.details,
                "dashboard_url": link,
            }
        )
        headers = {TIMESTAMP_HEADER: str(now_ms)}
        if webhook_secret:
            headers[SIGNATURE_HEADER] = "sha256=" + sign(webhook_secret, now_ms, body)
        return Request(body, headers)
    if target.kind is TargetKind.SLACK:
        icon = _SLACK_ICON[alert.severity]
        lines = "\n".join(f"• {k}: {v}" for k, v in sorted(alert.details.items()) if v)
        text = f"{icon} [{alert.severity.label.upper()}] {alert.summary}"
        open_link = {"type": "mrkdwn", "text": f"<{link}|Open the dashboard>"}
        return Request(
            _json(
                {
                    "text": text,
                    "blocks": [
                        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
                        {"type": "section", "text": {"type": "mrkdwn", "text": lines or " "}},
                        {"type": "context", "elements": [open_link]},
                    ],
                }
            ),
            {},
        )
    if not pagerduty_routing_key:
        raise AlertTargetError("a pagerduty target needs SAFELOOP_PAGERDUTY_ROUTING_KEY")
    occurred = datetime.fromtimestamp(alert.occurred_at_ms / 1000, UTC).isoformat()
    return Request(
        _json(
            {
                "routing_key": pagerduty_routing_key,
                "event_action": "trigger",
                "dedup_key": f"safeloop:{alert.kind.value}:{alert.dedup_key}",
                "payload": {
                    "summary": alert.summary[:1024],
                    "source": "safeloop",
                    "severity": _PAGERDUTY_SEVERITY[alert.severity],
                    "timestamp": occurred,
                    "component": alert.model_name or "safeloop",
                    "group": alert.kind.value,
                    "class": alert.kind.value,
                    "custom_details": alert.details,
                },
                "links": [{"href": link, "text": "safeloop dashboard"}],
            }
        ),
        {},
    )


def sign(secret: str, timestamp_ms: int, body: bytes) -> str:
    """HMAC-SHA256 of `<timestamp>.<body>`: what a receiver recomputes to trust a webhook."""
    message = str(timestamp_ms).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
