"""Alerts: which events notify and how badly, each target's payload, signed webhooks, and a
notifier that never blocks its caller, retries what may succeed and drops what cannot."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import replace

import pytest

from safeloop.infra.exceptions import SettingsError
from safeloop.infra.settings import Settings
from safeloop.schemas.events import (
    CommandKind,
    ControlCommand,
    ModelConfig,
    RetrainingDecision,
    Urgency,
)
from safeloop.services.alerts.alert import (
    Alert,
    AlertKind,
    Severity,
    alert_for_dead_letters,
    alert_for_decision,
    alerts_for_command,
)
from safeloop.services.alerts.exceptions import DeliveryFailedError, PermanentDeliveryError
from safeloop.services.alerts.notifier import (
    AlertNotifier,
    AlertSecrets,
    NotifierConfig,
    notifier_from_settings,
)
from safeloop.services.alerts.payloads import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AlertTarget,
    TargetKind,
    render,
)

NOW = 1_700_000_000_000
COMMAND = ControlCommand(
    command_id="c9",
    model_name="churn",
    kind=CommandKind.ROLLBACK,
    sequence=9,
    issued_at=NOW,
    issuer="safeloop-metrics",
    reason="rollback guard: canary breached error_rate 0.2 > 0.05",
    config=ModelConfig(production_version="v1"),
    key_id="ops",
    signature="sig",
)


def _rollout_command(kind: CommandKind, phase: str, **config: object) -> ControlCommand:
    return replace(
        COMMAND,
        kind=kind,
        reason="rollout: step",
        config=replace(COMMAND.config, **config),  # type: ignore[arg-type]
        details={"rollout_state": json.dumps({"phase": phase})},
    )


def test_each_command_kind_maps_to_its_alert_and_severity() -> None:
    (rollback,) = alerts_for_command(COMMAND)
    assert (rollback.kind, rollback.severity) == (AlertKind.ROLLBACK, Severity.CRITICAL)
    assert "error_rate" in rollback.summary and rollback.dedup_key == "churn:9"
    (promotion,) = alerts_for_command(replace(COMMAND, kind=CommandKind.PROMOTE))
    assert (promotion.kind, promotion.severity) == (AlertKind.PROMOTION, Severity.INFO)
    (stalled,) = alerts_for_command(_rollout_command(CommandKind.SET_CANARY, "paused"))
    assert (stalled.kind, stalled.severity) == (AlertKind.STALLED_ROLLOUT, Severity.WARNING)
    (waiting,) = alerts_for_command(_rollout_command(CommandKind.SET_CANARY, "awaiting_approval"))
    assert (waiting.kind, waiting.severity) == (AlertKind.APPROVAL_NEEDED, Severity.WARNING)
    (step,) = alerts_for_command(
        _rollout_command(
            CommandKind.SET_CANARY, "running", canary_version="v2", canary_basis_points=2_500
        )
    )
    assert step.kind is AlertKind.ROLLOUT_STEP and "v2 at 25 %" in step.summary
    # An operator's canary or flag change is not news to the operator.
    assert alerts_for_command(replace(COMMAND, kind=CommandKind.SET_CANARY)) == []
    assert alerts_for_command(replace(COMMAND, kind=CommandKind.SET_FLAG)) == []


def test_only_decisions_to_retrain_alert_with_urgency_as_severity() -> None:
    decision = RetrainingDecision(
        "d1", "churn", "v1", NOW, True, Urgency.ELEVATED, "drift in income", 0.31, None, ["income"]
    )
    alert = alert_for_decision(decision)
    assert alert is not None and alert.severity is Severity.WARNING
    assert alert.details["drifted_features"] == "income"
    critical = alert_for_decision(replace(decision, urgency=Urgency.CRITICAL))
    assert critical is not None and critical.severity is Severity.CRITICAL
    assert alert_for_decision(replace(decision, should_retrain=False)) is None


def test_dead_letter_alert_names_count_window_and_limit() -> None:
    alert = alert_for_dead_letters(250, 60.0, 100, NOW)
    assert alert.kind is AlertKind.DEAD_LETTER_SPIKE
    assert alert.summary == "250 dead letters in the last 60 s (limit 100)"


def _alert() -> Alert:
    (alert,) = alerts_for_command(COMMAND)
    return alert


def _render(kind: TargetKind, secret: str = "s3cret", routing_key: str = "R") -> dict[str, object]:
    request = render(
        AlertTarget(kind, "http://127.0.0.1:1/x"),
        _alert(),
        dashboard_url="http://dash:8050/",
        webhook_secret=secret,
        pagerduty_routing_key=routing_key,
        now_ms=NOW + 5,
    )
    return {"body": json.loads(request.body), "raw": request.body, "headers": request.headers}


def test_generic_webhook_is_signed_over_timestamp_and_body() -> None:
    rendered = _render(TargetKind.WEBHOOK)
    headers, raw = rendered["headers"], rendered["raw"]
    assert isinstance(headers, dict) and isinstance(raw, bytes)
    assert headers[TIMESTAMP_HEADER] == str(NOW + 5)
    expected = hmac.new(b"s3cret", f"{NOW + 5}.".encode() + raw, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
    body = rendered["body"]
    assert isinstance(body, dict)
    assert body["kind"] == "rollback" and body["severity"] == "critical"
    assert body["dashboard_url"] == "http://dash:8050/?model=churn"
    assert SIGNATURE_HEADER not in _render(TargetKind.WEBHOOK, secret="")["headers"]  # type: ignore[operator]


def test_slack_and_pagerduty_payloads_have_their_required_fields() -> None:
    slack = _render(TargetKind.SLACK)["body"]
    assert isinstance(slack, dict) and "[CRITICAL]" in str(slack["text"])
    assert "Open the dashboard" in json.dumps(slack["blocks"])
    pagerduty = _render(TargetKind.PAGERDUTY)["body"]
    assert isinstance(pagerduty, dict)
    assert pagerduty["routing_key"] == "R" and pagerduty["event_action"] == "trigger"
    payload = pagerduty["payload"]
    assert isinstance(payload, dict)
    assert payload["severity"] == "critical" and payload["source"] == "safeloop"
    assert pagerduty["dedup_key"] == "safeloop:rollback:churn:9"


class FakeTransport:
    """Records posts; fails as scripted per call; can hold every call until released."""

    def __init__(self, failures: list[Exception] | None = None, hold: bool = False) -> None:
        self.failures = list(failures or [])
        self.posts: list[tuple[str, bytes]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        if not hold:
            self.release.set()

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> None:
        self.entered.set()
        self.release.wait(10)
        if self.failures:
            raise self.failures.pop(0)
        self.posts.append((url, body))


FAST = NotifierConfig(queue_size=2, max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
HOOK = AlertTarget(TargetKind.WEBHOOK, "http://127.0.0.1:1/hook")


def _notifier(transport: FakeTransport, *targets: AlertTarget) -> AlertNotifier:
    return AlertNotifier(
        targets or (HOOK,),
        dashboard_url="http://dash",
        secrets=AlertSecrets("k", ""),
        transport=transport,
        config=FAST,
    )


def test_retryable_failures_are_retried_until_delivered() -> None:
    transport = FakeTransport([DeliveryFailedError("hook", "HTTP 503")] * 2)
    notifier = _notifier(transport)
    notifier.notify(_alert())
    notifier.close()
    counts = notifier.counts[HOOK]
    assert (counts.sent, counts.retries, counts.failed) == (1, 2, 0)
    assert len(transport.posts) == 1


def test_a_permanent_refusal_is_not_retried_and_gives_up_after_max_attempts() -> None:
    transport = FakeTransport([PermanentDeliveryError("hook", "HTTP 400")])
    notifier = _notifier(transport)
    notifier.notify(_alert())
    notifier.close()
    assert (notifier.counts[HOOK].failed, notifier.counts[HOOK].retries) == (1, 0)
    down = FakeTransport([DeliveryFailedError("hook", "refused")] * 5)
    notifier = _notifier(down)
    notifier.notify(_alert())
    notifier.close()
    assert (notifier.counts[HOOK].failed, notifier.counts[HOOK].retries) == (1, 2)


def test_notify_never_blocks_and_counts_what_a_full_queue_drops() -> None:
    transport = FakeTransport(hold=True)
    notifier = _notifier(transport)
    notifier.notify(_alert())  # taken by the delivery thread, which now hangs
    assert transport.entered.wait(5)
    for _ in range(5):  # the queue holds 2; the other 3 are dropped at once
        notifier.notify(_alert())
    assert notifier.counts[HOOK].dropped == 3
    transport.release.set()
    notifier.close()
    assert notifier.counts[HOOK].sent == 3


def test_targets_receive_only_alerts_at_or_above_their_severity() -> None:
    pager = AlertTarget(TargetKind.WEBHOOK, "http://127.0.0.1:1/pager", Severity.CRITICAL)
    transport = FakeTransport()
    notifier = _notifier(transport, HOOK, pager)
    notifier.notify(replace(_alert(), severity=Severity.INFO))
    notifier.notify(_alert())
    notifier.close()
    urls = sorted(url for url, _ in transport.posts)
    assert urls == [
        "http://127.0.0.1:1/hook",
        "http://127.0.0.1:1/hook",
        "http://127.0.0.1:1/pager",
    ]


def test_settings_parse_alert_targets_and_refuse_bad_ones_without_echoing_urls() -> None:
    settings = Settings.from_env(
        {
            "SAFELOOP_ALERT_TARGETS": "webhook=https://h/x, slack@warning=https://hooks/T/B/tok",
            "SAFELOOP_ALERT_WEBHOOK_SECRET": "zz-signing-key-zz",
        }
    )
    assert settings.alert_targets == (
        ("webhook", "info", "https://h/x"),
        ("slack", "warning", "https://hooks/T/B/tok"),
    )
    assert "zz-signing-key-zz" not in repr(settings) and "hooks/T/B" not in repr(settings)
    assert Settings.from_env(settings.to_env()).alert_targets == settings.alert_targets
    notifier = notifier_from_settings(settings)
    assert notifier is not None and [t.min_severity for t in notifier.targets] == [
        Severity.INFO,
        Severity.WARNING,
    ]
    notifier.close()
    assert notifier_from_settings(Settings.from_env({})) is None
    for bad in ("teams=https://x", "slack@loud=https://x", "webhook=ftp://x", "webhook"):
        with pytest.raises(SettingsError) as caught:
            Settings.from_env({"SAFELOOP_ALERT_TARGETS": bad + "?token=zzz"})
        assert "zzz" not in str(caught.value)
