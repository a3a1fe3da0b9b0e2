"""confluent-kafka client configurations built from Settings, tuned for safeloop's traffic."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from safeloop.infra.kafka.access import SafeloopConsumer, SafeloopProducer
from safeloop.infra.process_logging import KAFKA_CLIENT_LOGGER
from safeloop.infra.repeated_lines import RepeatedLineFilter
from safeloop.infra.settings import Settings

ConfigValue = str | int | float | bool

log = logging.getLogger(__name__)
# librdkafka's own log lines go through logging instead of straight to stderr.
_CLIENT_LOGGER = logging.getLogger(KAFKA_CLIENT_LOGGER)
_CLIENT_LOGGER.addFilter(RepeatedLineFilter())


def _dotted(overrides: dict[str, ConfigValue]) -> dict[str, ConfigValue]:
    """`linger_ms=20` becomes `linger.ms=20`; librdkafka property names never hold `_`."""
    return {key.replace("_", "."): value for key, value in overrides.items()}


def security_config(settings: Settings) -> dict[str, ConfigValue]:
    """How a client authenticates and encrypts: nothing for plaintext, SASL_SSL otherwise."""
    if not settings.kafka_secured:
        return {}
    config: dict[str, ConfigValue] = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": settings.kafka_sasl_mechanism,
        "sasl.username": settings.kafka_username,
        "sasl.password": settings.kafka_password.value,
        # The broker's certificate must name the host we dialled (librdkafka's default, kept).
        "ssl.endpoint.identification.algorithm": "https",
    }
    if settings.kafka_ca_file is not None:
        config["ssl.ca.location"] = str(settings.kafka_ca_file)
    return config


def connection_config(settings: Settings) -> dict[str, ConfigValue]:
    """Where and how every client connects: bootstrap servers plus `security_config`."""
    return {"bootstrap.servers": settings.bootstrap_servers, **security_config(settings)}


def producer_config(settings: Settings, **overrides: ConfigValue) -> dict[str, ConfigValue]:
    """Idempotent, acks=all producer that batches for 5 ms and compresses with lz4."""
    return {
        **connection_config(settings),
        "acks": "all",
        "enable.idempotence": True,
        # A few ms of batching buys far fewer requests at prediction rates; lz4 is cheap on CPU.
        "linger.ms": 5,
        "compression.type": "lz4",
        # The Java client's (and aiokafka's) partitioner: records keyed by prediction_id land on
        # their home partition for the join (partitioner.py). The join does not depend on it —
        # the processor re-routes records from any other partitioner — but they skip that hop.
        "partitioner": "murmur2_random",
        **_dotted(overrides),
    }


def consumer_config(
    settings: Settings, group_id: str, **overrides: ConfigValue
) -> dict[str, ConfigValue]:
    """Group consumer that reads from the start and commits only when told to."""
    return {
        **connection_config(settings),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        # Offsets are committed after the side effect (DESIGN: nothing consumed is lost).
        "enable.auto.commit": False,
        # librdkafka prefetches up to 64 MB by default, which a consumer catching up after an
        # outage fills and then keeps as resident memory (a soak's metrics service stepped up by
        # the cap, 16 MB, when its broker came back); 4 MB is still 0.25 s at 50k events/s.
        "queued.max.messages.kbytes": 4096,
        **_dotted(overrides),
    }


def admin_client(settings: Settings, **overrides: ConfigValue) -> AdminClient:
    """An AdminClient for the configured cluster."""
    return AdminClient(with_client_logging({**connection_config(settings), **_dotted(overrides)}))


def probe_admin(bootstrap: str, security: dict[str, ConfigValue]) -> AdminClient:
    """An AdminClient for asking whether a cluster answers: silent, since "not reachable" is an
    expected answer there, not an error to print (log_level 0)."""
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, **security})


def cluster_answers(
    bootstrap: str, timeout: float, security: dict[str, ConfigValue] | None = None
) -> bool:
    """True when the cluster at `bootstrap` answers a metadata request and lists brokers."""
    admin = probe_admin(bootstrap, security or {})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def make_producer(settings: Settings, **overrides: ConfigValue) -> Producer:
    """A producer from `producer_config`, logging through `logging` rather than stderr."""
    return SafeloopProducer(
        with_client_logging(producer_config(settings, **overrides)),
        principal=settings.kafka_principal,
        bootstrap=settings.bootstrap_servers,
    )


def make_consumer(
    settings: Settings,
    group_id: str,
    on_commit: Callable[[KafkaError | None, list[TopicPartition]], None] | None = None,
    /,
    **overrides: ConfigValue,
) -> Consumer:
    """A consumer from `consumer_config`, logging through `logging` rather than stderr;
    `on_commit` receives the answers to asynchronous commits."""
    config: dict[str, Any] = with_client_logging(consumer_config(settings, group_id, **overrides))
    if on_commit is not None:
        config["on_commit"] = on_commit
    return SafeloopConsumer(
        config,
        principal=settings.kafka_principal,
        bootstrap=settings.bootstrap_servers,
    )


def with_client_logging(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with librdkafka's errors and log lines routed to `logging`."""
    routed: dict[str, Any] = dict(config)
    routed.setdefault("error_cb", _log_client_error)
    routed.setdefault("logger", _CLIENT_LOGGER)
    return routed


def _log_client_error(error: KafkaError) -> None:
    # Broker-down errors repeat every reconnect attempt; the counters tell the story.
    log.debug("kafka client: %s", error)
