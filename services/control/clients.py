"""Kafka clients for the control plane and replicas, built from infra's shared client configs."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer

from safeloop.infra.kafka.clients import consumer_config, producer_config
from safeloop.infra.settings import Settings
from safeloop.services.control.broadcast import BroadcastReader, broadcast_consumer_settings

logger = logging.getLogger(__name__)
# librdkafka's own log lines go through logging instead of straight to stderr.
_CLIENT_LOGGER = logging.getLogger("safeloop.kafka.client")


def _log_client_error(error: KafkaError) -> None:
    # Broker-down errors repeat every reconnect attempt; the counters tell the story.
    logger.debug("kafka client: %s", error)


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    config: dict[str, Any] = dict(producer_config(settings, **overrides))
    config.setdefault("error_cb", _log_client_error)
    config.setdefault("logger", _CLIENT_LOGGER)
    return Producer(config)


def make_broadcast_reader(settings: Settings, topic: str, label: str) -> BroadcastReader:
    """A reader with a fresh, never-committed group id (so no two readers share a position)."""
    group_id = f"safeloop-{label}-{uuid.uuid4().hex[:12]}"
    config: dict[str, Any] = dict(consumer_config(settings, group_id))
    config.update(broadcast_consumer_settings(group_id))
    config.setdefault("error_cb", _log_client_error)
    config.setdefault("logger", _CLIENT_LOGGER)
    return BroadcastReader(Consumer(config), topic)
