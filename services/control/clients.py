"""Broadcast readers of the control and replica-status topics, from infra's client configs."""

from __future__ import annotations

import uuid
from typing import Any

from safeloop.infra.kafka.access import SafeloopConsumer
from safeloop.infra.kafka.clients import consumer_config, with_client_logging
from safeloop.infra.settings import Settings
from safeloop.services.control.broadcast import BroadcastReader, broadcast_consumer_settings


def make_broadcast_reader(settings: Settings, topic: str, label: str) -> BroadcastReader:
    """A reader with a fresh, never-committed group id (so no two readers share a position)."""
    group_id = f"safeloop-{label}-{uuid.uuid4().hex[:12]}"
    config: dict[str, Any] = dict(consumer_config(settings, group_id))
    config.update(broadcast_consumer_settings(group_id))
    consumer = SafeloopConsumer(
        with_client_logging(config),
        principal=settings.kafka_principal,
        bootstrap=settings.bootstrap_servers,
    )
    return BroadcastReader(consumer, topic)
