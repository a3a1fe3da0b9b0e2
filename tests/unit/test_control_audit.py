"""Send then audit: every command reaches the control topic first, control_log follows it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import OperationalError
from confluent_kafka import Producer

import safeloop.infra.clickhouse.client as clickhouse_client_module
import safeloop.infra.kafka.clients as kafka_clients
import safeloop.services.control.clients as control_clients
import safeloop.services.control.publisher as control_publisher
import safeloop.services.control.race as control_race
from safeloop.infra.exceptions import InsertError, WarehouseError
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import CONTROL_CODEC
from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig
from safeloop.schemas.tables import CONTROL_LOG
from safeloop.services.cli.main import main
from safeloop.services.control.audit import EntryType, send_and_record
from safeloop.services.control.exceptions import ControlTopicError
from safeloop.services.control.follower import ControlFollower
from safeloop.services.control.issuer import CommandIssuer
from safeloop.services.control.keys import KeyRing, SigningKey
from safeloop.services.control.publisher import ControlPublisher, ControlTopicView

KEYS = KeyRing.of(SigningKey("ops", bytes(range(32))))


class FakeProducer:
    """Acknowledges every message (or none, with `acknowledge=False`)."""

    def __init__(self, events: list[str], *, acknowledge: bool = True) -> None:
        self.events = events
        self.acknowledge = acknowledge
        self.sent: list[bytes] = []
        self._pending: list[Callable[[Any, Any], None]] = []

    def produce(
        self, topic: str, *, key: bytes, value: bytes, on_delivery: Callable[[Any, Any], None]
    ) -> None:
        self.sent.append(value)
        self.events.append("send")
        self._pending.append(on_delivery)

    def flush(self, timeout: float) -> int:
        if not self.acknowledge:
            return len(self._pending)
        for delivered in self._pending:
            delivered(None, None)
        self._pending.clear()
        return 0


class FakeClient:
    """The slice of a clickhouse-connect client that `record` uses; `down` refuses inserts."""

    def __init__(self, events: list[str], *, down: bool = False) -> None:
        self.events = events
        self.down = down
        self.rows: list[dict[str, object]] = []

    def create_insert_context(self, table: str, column_names: Sequence[str]) -> SimpleNamespace:
        # insert_idempotent asks once per table (a DESCRIBE on a real client), then reuses it.
        return SimpleNamespace(
            table=table,
            column_names=list(column_names),
            column_types=["String"] * len(column_names),
            settings={},
        )

    def insert(self, *, data: Sequence[Sequence[object]], context: SimpleNamespace) -> None:
        self.events.append("insert")
        if self.down:
            raise OperationalError("Error HTTPConnectionPool: Connection refused")
        column_names = context.column_names
        assert context.table == CONTROL_LOG.name and column_names == list(CONTROL_LOG.columns)
        assert context.settings["insert_deduplicate"] == 1
        self.rows.extend(dict(zip(column_names, row, strict=True)) for row in data)


def publisher(producer: FakeProducer) -> ControlPublisher:
    return ControlPublisher(cast(Producer, producer), "control", KEYS, issuer="alice@host")


def rollback(pub: ControlPublisher) -> ControlCommand:
    return pub.next_command(
        ControlTopicView({}, 0),
        "churn",
        CommandKind.ROLLBACK,
        lambda config: config,
        reason="error spike",
        initial=ModelConfig("v1"),
    )


def test_command_is_sent_then_recorded() -> None:
    events: list[str] = []
    producer, client = FakeProducer(events), FakeClient(events)
    pub = publisher(producer)
    command = rollback(pub)
    assert send_and_record(pub, command, lambda: cast(Client, client)) is None
    assert events == ["send", "insert"]
    assert CONTROL_CODEC.decode(producer.sent[0]) == command
    [row] = client.rows
    assert row["entry_type"] == EntryType.COMMAND.value
    assert (row["command_id"], row["kind"], row["reason"]) == (
        command.command_id,
        "rollback",
        "error spike",
    )


def test_clickhouse_down_still_sends_and_returns_the_failure() -> None:
    events: list[str] = []
    producer = FakeProducer(events)
    pub = publisher(producer)
    failure = send_and_record(
        pub, rollback(pub), lambda: cast(Client, FakeClient(events, down=True))
    )
    assert isinstance(failure, InsertError) and failure.table == "control_log"
    assert isinstance(failure.__cause__, OperationalError)
    assert events == ["send", "insert"]
    assert len(producer.sent) == 1


def test_clickhouse_unreachable_at_connect_still_sends() -> None:
    events: list[str] = []
    producer = FakeProducer(events)
    pub = publisher(producer)

    def connect() -> Client:
        raise WarehouseError("cannot use ClickHouse at http://127.0.0.1:1: refused")

    assert isinstance(send_and_record(pub, rollback(pub), connect), WarehouseError)
    assert len(producer.sent) == 1


def test_failed_send_records_nothing() -> None:
    events: list[str] = []
    pub = publisher(FakeProducer(events, acknowledge=False))
    with pytest.raises(ControlTopicError):
        send_and_record(pub, rollback(pub), lambda: cast(Client, FakeClient(events)))
    assert events == ["send"]


# -- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeProducer, list[FakeClient]]:
    """The CLI with a fake control topic (no command yet) and a fake ClickHouse per connect."""
    events: list[str] = []
    producer = FakeProducer(events)
    clients: list[FakeClient] = []
    monkeypatch.setenv("SAFELOOP_CONTROL_KEY", "5a" * 32)
    # The CLI imports these when a command runs (off the start-up path): patch their modules.
    monkeypatch.setattr(kafka_clients, "make_producer", lambda *a, **kw: producer)
    monkeypatch.setattr(control_clients, "make_broadcast_reader", lambda *a, **kw: None)
    monkeypatch.setattr(
        control_publisher, "read_control_topic", lambda *a, **kw: ControlTopicView({}, 0)
    )
    # The topic after the send holds exactly what this producer sent: no rival publisher.
    monkeypatch.setattr(
        control_race,
        "read_history",
        lambda *a, **kw: [CONTROL_CODEC.decode(value) for value in producer.sent],
    )

    def connect(settings: Settings) -> FakeClient:
        if not clients:
            raise WarehouseError(f"cannot use ClickHouse at {settings.clickhouse_endpoint}")
        return clients[0]

    monkeypatch.setattr(clickhouse_client_module, "clickhouse_client", connect)
    return producer, clients


def test_cli_rollback_is_recorded_with_its_reason(
    cli_env: tuple[FakeProducer, list[FakeClient]], capsys: pytest.CaptureFixture[str]
) -> None:
    producer, clients = cli_env
    clients.append(FakeClient([]))
    argv = ["rollback", "churn", "--reason", "bad v2", "--production-version", "v1"]
    assert main(argv) == 0
    assert "warning" not in capsys.readouterr().err
    [row] = clients[0].rows
    sent = CONTROL_CODEC.decode(producer.sent[0])
    assert (row["command_id"], row["kind"], row["reason"]) == (
        sent.command_id,
        "rollback",
        "bad v2",
    )


def test_cli_warns_and_exits_0_when_clickhouse_is_down(
    cli_env: tuple[FakeProducer, list[FakeClient]], capsys: pytest.CaptureFixture[str]
) -> None:
    producer, _ = cli_env
    argv = ["rollback", "churn", "--reason", "bad v2", "--production-version", "v1", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    sent = CONTROL_CODEC.decode(producer.sent[0])
    assert sent.kind is CommandKind.ROLLBACK and sent.reason == "bad v2"
    assert "warning: rollback for churn" in captured.err
    assert "control_log" in captured.err and sent.command_id in captured.err
    assert '"kind": "rollback"' in captured.out


# -- the metrics process -------------------------------------------------------------------


class FakeFollower:
    view = ControlTopicView({}, 0)

    def __init__(self) -> None:
        self.sent: list[ControlCommand] = []

    def latest(self, model_name: str) -> ControlCommand | None:
        return None

    def note_sent(self, command: ControlCommand) -> None:
        self.sent.append(command)


def test_issuer_keeps_rows_clickhouse_refused_and_retries_them() -> None:
    events: list[str] = []
    producer, client = FakeProducer(events), FakeClient(events, down=True)
    follower = FakeFollower()
    issuer = CommandIssuer(
        publisher(producer),
        cast(ControlFollower, follower),
        cast(Client, client),
        lambda model: ModelConfig("v1"),
    )
    command = issuer.issue("churn", CommandKind.ROLLBACK, lambda c: c, reason="guard", details={})
    assert follower.sent == [command] and issuer.issued == 1 and len(producer.sent) == 1
    assert issuer.unlogged == 1 and client.rows == []
    client.down = False
    issuer.retry_audit()
    assert issuer.unlogged == 0
    assert [row["command_id"] for row in client.rows] == [command.command_id]
