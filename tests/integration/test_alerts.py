"""Alerts from `metrics run` reach a local HTTP receiver: a guard rollback, an operator's
promotion, a retraining decision and a dead-letter spike, each in its target's shape."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _metrics_harness import (
    TEST_POLICY,
    Fleet,
    Traffic,
    fleet,
    metrics_service,
    metrics_settings,
    publish,
    wait_for,
)

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.infra.settings import Secret, Settings
from safeloop.schemas.events import CommandKind, DeadLetter
from safeloop.schemas.tables import DEAD_LETTERS
from safeloop.services.alerts.payloads import SIGNATURE_HEADER, TIMESTAMP_HEADER
from safeloop.services.monitor.service import MetricsConfig
from safeloop.services.retraining.policy import RetrainingPolicy

pytestmark = pytest.mark.integration

SECRET = "it-webhook-secret"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        loaded = json.loads(self.body)
        assert isinstance(loaded, dict)
        return loaded


@dataclass
class Receiver:
    """Records every POST; answers 503 to the first one on /pd to make the notifier retry."""

    url: str
    received: list[Received] = field(default_factory=list)
    refused_once: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, path: str) -> list[dict[str, object]]:
        with self.lock:
            return [r.json() for r in self.received if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                if self.path == "/pd" and self.path not in state.refused_once:
                    state.refused_once.add(self.path)
                    self.send_response(503)
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    return
                state.received.append(Received(self.path, dict(self.headers), body))
            self.send_response(202)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def settings(stack, tmp_path: Path, receiver: Receiver) -> Settings:  # type: ignore[no-untyped-def]
    base = metrics_settings(stack.fresh("alerts"), tmp_path / "models")
    return dataclasses.replace(
        base,
        alert_targets=(
            ("webhook", "info", f"{receiver.url}/hook"),
            ("slack", "warning", f"{receiver.url}/slack"),
            ("pagerduty", "critical", f"{receiver.url}/pd"),
        ),
        alert_webhook_secret=Secret(SECRET),
        pagerduty_routing_key=Secret("it-routing-key"),
        alert_dead_letters_per_minute=1,
    )


@pytest.fixture
def replicas(settings: Settings) -> Iterator[Fleet]:
    with fleet(settings) as started:
        yield started


def _kinds(receiver: Receiver, path: str) -> set[object]:
    return {body.get("kind") for body in receiver.on(path)}


def test_each_event_kind_reaches_its_targets(
    settings: Settings, replicas: Fleet, receiver: Receiver
) -> None:
    sequence = publish(
        settings,
        CommandKind.SET_CANARY,
        lambda c: dataclasses.replace(c, canary_version="v2", canary_basis_points=2_000),
    )
    assert wait_for(lambda: min(replicas.applied_sequence()) >= sequence)
    config = MetricsConfig(
        snapshot_interval_ms=500,
        guard_policy=TEST_POLICY,
        retraining_interval_ms=500,
        # Every model is "too old" at once: a routine retraining decision to alert on.
        retraining_policy=RetrainingPolicy(max_age_ms=1),
    )
    with metrics_service(settings, config):
        traffic = Traffic(replicas, 300).start()
        try:
            replicas.flaky.failing.set()
            assert wait_for(lambda: "rollback" in _kinds(receiver, "/hook"), 40)
        finally:
            traffic.stop()
        publish(settings, CommandKind.PROMOTE, lambda c: dataclasses.replace(c))
        assert wait_for(lambda: "promotion" in _kinds(receiver, "/hook"), 20)
        letters = [
            DeadLetter(
                "predictions", 0, offset, b"k", b"junk", "bad_marker: x", "bad_marker", 0, "it"
            )
            for offset in range(30)
        ]
        insert_idempotent(clickhouse_client(settings), DEAD_LETTERS, DEAD_LETTERS.rows(letters))
        assert wait_for(lambda: "dead_letter_spike" in _kinds(receiver, "/hook"), 20)
        assert wait_for(lambda: "retraining_decision" in _kinds(receiver, "/hook"), 20)

    # The generic webhook is signed over its timestamp and body.
    hook = next(r for r in receiver.received if r.path == "/hook")
    expected = hmac.new(
        SECRET.encode(), hook.headers[TIMESTAMP_HEADER].encode() + b"." + hook.body, hashlib.sha256
    ).hexdigest()
    assert hook.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    # Slack gets warnings and up (rollback, dead letters), not the promotion (info).
    slack_texts = [str(body["text"]) for body in receiver.on("/slack")]
    assert any("rolled back" in text for text in slack_texts)
    assert any("dead letters" in text for text in slack_texts)
    assert not any("promoted" in text for text in slack_texts)
    # PagerDuty gets the critical rollback only, after one refused attempt (retried).
    pages = receiver.on("/pd")
    assert pages and all(page["routing_key"] == "it-routing-key" for page in pages)
    assert {page["payload"]["severity"] for page in pages} == {"critical"}  # type: ignore[index]
    assert "/pd" in receiver.refused_once
