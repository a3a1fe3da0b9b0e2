"""The "limit" row of bench.stream_join: a plain confluent-kafka consume -> produce hop in
Python, batches of 1,000, no decode and no state: the floor of any Python hop on this box.

It reads the same preloaded predictions and outcomes the join reads and writes each record's
bytes unchanged to the phase's feedback topic; events/s from the first record consumed to the
last one acknowledged by the broker, CPU as the process's own (user + system, librdkafka's
threads included).
"""

from __future__ import annotations

import resource
import time
from typing import Any

from confluent_kafka import Consumer, Producer

from safeloop.infra.kafka.clients import connection_config
from safeloop.infra.settings import Settings

BATCH = 1_000


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def plain_hop(settings: Settings, events: int) -> dict[str, Any]:
    """Consume `events` records of `settings`' predictions and outcomes, produce each as is."""
    topics = settings.topics
    connection = connection_config(settings)
    consumer = Consumer(
        {
            **connection,
            "group.id": f"{settings.topic_prefix}plain-hop",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.max.bytes": 4 * 1024 * 1024,
        }
    )
    producer = Producer(
        {
            **connection,
            "linger.ms": 5,
            "compression.type": "lz4",
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    consumer.subscribe([topics.predictions, topics.outcomes])
    out_topic = topics.feedback
    produce = producer.produce
    seen = 0
    started: float | None = None
    cpu_started = 0.0
    deadline = time.monotonic() + 600
    try:
        while seen < events and time.monotonic() < deadline:
            batch = consumer.consume(BATCH, 1.0)
            if not batch:
                continue
            if started is None:
                started = time.monotonic()
                cpu_started = _cpu_s()
            for message in batch:
                if message.error() is not None:
                    continue
                while True:
                    try:
                        produce(out_topic, message.value(), message.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
                seen += 1
            producer.poll(0)
            # Commit as the join does: once per batch, after its output is on its way.
            consumer.commit(asynchronous=True)
        producer.flush(60)
        done = time.monotonic()
        cpu = _cpu_s() - cpu_started
    finally:
        consumer.close()
    elapsed = done - (started or done)
    return {
        "events": seen,
        "batch": BATCH,
        "seconds": round(elapsed, 2),
        "events_per_second": round(seen / elapsed) if elapsed > 0 else None,
        "cpu_us_per_event": round(cpu * 1e6 / seen, 1) if seen else None,
    }
