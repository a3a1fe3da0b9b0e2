"""The faust App: source topics (predictions, outcomes and the join's repartition topic), the
two RocksDB join tables and their changelogs."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from safeloop.infra.settings import Settings
from safeloop.schemas.validation import DEFAULT_MAX_FUTURE_SKEW_MS
from safeloop.streams.faust_adapter import (
    LeanMonitor,
    bound_rocksdb_memory,
    bounded_store_url,
    install_consumer,
)
from safeloop.streams.sink import SinkConfig
from safeloop.streams.windows import JoinWindows

PENDING_TABLE = "pending-predictions"
EARLY_TABLE = "early-outcomes"


class RawSchema(faust.Schema):  # type: ignore[type-arg]
    """Keys and values as the bytes Kafka holds, without faust's codec registry per message
    (what the "raw" serializer returns, minus a few lookups and calls per record)."""

    def loads_key(
        self, app: Any, message: Any, *, loads: Any = None, serializer: Any = None
    ) -> bytes | None:
        key: bytes | None = message.key
        return key

    def loads_value(
        self, app: Any, message: Any, *, loads: Any = None, serializer: Any = None
    ) -> bytes | None:
        value: bytes | None = message.value
        return value


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """How one worker runs; everything not in `Settings`."""

    worker_name: str = "worker-0"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    batch_max: int = 10_000
    batch_within_ms: int = 50
    expiry_interval_ms: int = 1_000
    commit_interval_ms: int = 1_000
    log_interval_ms: int = 10_000
    sink: SinkConfig = field(default_factory=SinkConfig)
    windows: JoinWindows = field(default_factory=JoinWindows)
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS
    # None: <state_dir>/streams/<worker_name>
    data_dir: Path | None = None
    # None: "<topic_prefix>safeloop-streams"; the consumer group and changelog topic prefix.
    app_id: str | None = None


@dataclass(frozen=True, slots=True)
class StreamApp:
    """The faust objects one worker runs."""

    app: Any
    source: Any
    pending: Any
    early: Any
    app_id: str


def app_id_for(settings: Settings, config: StreamConfig) -> str:
    return config.app_id or f"{settings.topic_prefix}safeloop-streams"


def broker_credentials(settings: Settings) -> Any:
    """faust's (aiokafka's) SASL_SSL credentials from the same settings as every other client."""
    if not settings.kafka_secured:
        return None
    cafile = str(settings.kafka_ca_file) if settings.kafka_ca_file else None
    return faust.SASLCredentials(
        username=settings.kafka_username,
        password=settings.kafka_password.value,
        ssl_context=ssl.create_default_context(cafile=cafile),
        mechanism=settings.kafka_sasl_mechanism,
    )


# Per table partition (each is a RocksDB of its own): at most 2 x 8 MB of memtables, as Kafka
# Streams sizes its stores (faust's default is 3 x 64 MB). Together, all of a process's stores stay
# within one block cache and memtable budget (`SAFELOOP_STREAM_ROCKSDB_MEMORY_MB`).
ROCKSDB_OPTIONS: dict[str, int] = {
    "write_buffer_size": 8 * 2**20,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 2**20,
}


def create_app(settings: Settings, config: StreamConfig) -> StreamApp:
    """A faust App over `predictions` + `outcomes` + the repartition topic with the RocksDB
    (rocksdict) join tables; partition p of every one is owned by the same worker."""
    app_id = app_id_for(settings, config)
    data_dir = config.data_dir or settings.state_dir / "streams" / config.worker_name
    data_dir.mkdir(parents=True, exist_ok=True)
    bound_rocksdb_memory(settings.stream_rocksdb_memory_mb * 2**20)
    app = faust.App(
        app_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=broker_credentials(settings),
        # faust's rocksdict store, under one block cache and memtable budget per process.
        store=bounded_store_url(),
        datadir=str(data_dir),
        autodiscover=False,
        web_enabled=True,
        web_bind=config.web_host,
        web_host=config.web_host,
        web_port=config.web_port,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        # A killed worker's partitions move after 10 s instead of faust's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        broker_commit_interval=config.commit_interval_ms / 1000.0,
        stream_buffer_maxsize=max(config.batch_max, 4096),
        stream_wait_empty=False,
        table_standby_replicas=0,
        producer_linger_ms=5,
        producer_max_batch_size=1_000_000,
        consumer_max_fetch_size=4 * 1024 * 1024,
        # Fewer, larger fetches: faust's per-fetch bookkeeping is a large share of its cost.
        broker_max_poll_records=config.batch_max,
        # faust's Monitor minus its per-message bookkeeping (nothing reads it here).
        Monitor=LeanMonitor,
    )
    # The fetcher hands messages to the streams without an asyncio.wait per message.
    install_consumer(app)
    topics = settings.topics
    source = app.topic(
        topics.predictions,
        topics.outcomes,
        topics.repartition,
        schema=RawSchema(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        ),
    )
    pending = app.Table(
        PENDING_TABLE,
        partitions=settings.partitions,
        # bytes -> the "raw" codec for the table and its changelog (json otherwise).
        key_type=bytes,
        value_type=bytes,
        recovery_buffer_size=10_000,
        # A copy each: faust pops keys from the dict it is given.
        options=dict(ROCKSDB_OPTIONS),
    )
    early = app.Table(
        EARLY_TABLE,
        partitions=settings.partitions,
        # bytes -> the "raw" codec for the table and its changelog (json otherwise).
        key_type=bytes,
        value_type=bytes,
        recovery_buffer_size=10_000,
        # A copy each: faust pops keys from the dict it is given.
        options=dict(ROCKSDB_OPTIONS),
    )
    return StreamApp(app=app, source=source, pending=pending, early=early, app_id=app_id)
