"""What is worth telling a person, as an `Alert`: from commands, decisions and dead letters."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from safeloop.schemas.events import CommandKind, ControlCommand, RetrainingDecision, Urgency


class AlertKind(StrEnum):
    """The events that can notify."""

    ROLLBACK = "rollback"
    PROMOTION = "promotion"
    ROLLOUT_STEP = "rollout_step"
    STALLED_ROLLOUT = "stalled_rollout"
    APPROVAL_NEEDED = "approval_needed"
    RETRAINING = "retraining_decision"
    DEAD_LETTER_SPIKE = "dead_letter_spike"


class Severity(IntEnum):
    """Ordered, so targets can drop what is below their minimum."""

    INFO = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Alert:
    """One notification: what happened to which model, how bad, and where to look."""

    kind: AlertKind
    severity: Severity
    model_name: str
    summary: str
    occurred_at_ms: int
    # Identifies the event: a re-sent alert with the same key is the same incident.
    dedup_key: str
    details: dict[str, str] = field(default_factory=dict)

    def dashboard_link(self, dashboard_url: str) -> str:
        """The dashboard view of this alert's model."""
        base = dashboard_url.rstrip("/")
        return f"{base}/?model={self.model_name}" if self.model_name else f"{base}/"


# Keys of rollout commands' details (services/rollout/persist.py) read here as plain JSON, so
# alerts do not depend on the rollout package.
_ROLLOUT_STATE_KEY = "rollout_state"


def alerts_for_command(command: ControlCommand) -> list[Alert]:
    """Alerts for a command the metrics process just sent (guard rollbacks, rollout steps)."""
    config = command.config
    phase = _rollout_phase(command)
    if command.kind is CommandKind.ROLLBACK:
        kind, severity = AlertKind.ROLLBACK, Severity.CRITICAL
        summary = f"{command.model_name}: canary rolled back ({command.reason})"
    elif command.kind is CommandKind.PROMOTE:
        kind, severity = AlertKind.PROMOTION, Severity.INFO
        summary = f"{command.model_name}: {config.production_version} promoted ({command.reason})"
    elif phase == "awaiting_approval":
        kind, severity = AlertKind.APPROVAL_NEEDED, Severity.WARNING
        summary = f"{command.model_name}: rollout waits for approval ({command.reason})"
    elif phase == "paused":
        kind, severity = AlertKind.STALLED_ROLLOUT, Severity.WARNING
        summary = f"{command.model_name}: rollout paused ({command.reason})"
    elif phase == "running" and command.kind is CommandKind.SET_CANARY:
        kind, severity = AlertKind.ROLLOUT_STEP, Severity.INFO
        share = config.canary_basis_points / 100
        summary = f"{command.model_name}: canary {config.canary_version} at {share:g} %"
    else:
        return []
    details = {
        "sequence": str(command.sequence),
        "issuer": command.issuer,
        "reason": command.reason,
        "production_version": config.production_version,
        "canary_version": config.canary_version or "",
    }
    return [
        Alert(
            kind,
            severity,
            model_name=command.model_name,
            summary=summary,
            occurred_at_ms=command.issued_at,
            dedup_key=f"{command.model_name}:{command.sequence}",
            details=details,
        )
    ]


_SEVERITY_OF_URGENCY = {
    Urgency.ROUTINE: Severity.INFO,
    Urgency.ELEVATED: Severity.WARNING,
    Urgency.CRITICAL: Severity.CRITICAL,
}


def alert_for_decision(decision: RetrainingDecision) -> Alert | None:
    """An alert for a decision to retrain; None when the model needs nothing."""
    if not decision.should_retrain or decision.urgency is Urgency.NONE:
        return None
    return Alert(
        AlertKind.RETRAINING,
        _SEVERITY_OF_URGENCY[decision.urgency],
        model_name=decision.model_name,
        summary=(
            f"{decision.model_name} {decision.model_version}: retrain "
            f"({decision.urgency.value}: {decision.reason})"
        ),
        occurred_at_ms=decision.timestamp,
        dedup_key=decision.decision_id,
        details={
            "model_version": decision.model_version,
            "urgency": decision.urgency.value,
            "max_psi": "" if decision.max_psi is None else f"{decision.max_psi:.4g}",
            "drifted_features": ",".join(decision.drifted_features),
        },
    )


def alert_for_dead_letters(count: int, window_s: float, limit: int, now_ms: int) -> Alert:
    """An alert for `count` dead letters within `window_s`, above `limit`."""
    return Alert(
        AlertKind.DEAD_LETTER_SPIKE,
        Severity.WARNING,
        model_name="",
        summary=f"{count} dead letters in the last {window_s:g} s (limit {limit})",
        occurred_at_ms=now_ms,
        dedup_key=f"dead-letters:{now_ms // 60_000}",
        details={"count": str(count), "window_s": f"{window_s:g}", "limit": str(limit)},
    )


def _rollout_phase(command: ControlCommand) -> str | None:
    raw = command.details.get(_ROLLOUT_STATE_KEY)
    if raw is None:
        return None
    try:
        phase = json.loads(raw).get("phase")
    except (ValueError, AttributeError):
        return None
    return phase if isinstance(phase, str) else None
