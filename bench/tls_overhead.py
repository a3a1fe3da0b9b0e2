"""What SASL_SSL (TLS + SCRAM-SHA-512) costs the serving path and the join's Kafka hop.

Two local brokers from the same jars, one after the other in the same run: plaintext, then
SASL_SSL with the certificates and users `safeloop kafka start` makes. Against each:
- serving: `Predictor.predict` with a constant model and the replica's Kafka event sink (the
  request thread's p50/p99; the sink's producer encrypts on its own thread), and drops;
- the join's Kafka edges: a consume→produce hop in batches of 1,000 over prediction-sized Avro
  records (what the stream processor's input and output cost before any join work), events/s
  and process CPU per event (librdkafka's threads, which do the TLS work, included).
Run: `python -m bench.tls_overhead [--requests N] [--events N]`; writes
bench/results/tls_overhead.json. The ratios (SASL_SSL / plaintext) are the figures to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.serving_overhead import CONFIG, REPO, _catalog, _request, _time_calls
from safeloop.infra.kafka.broker import LocalKafkaBroker
from safeloop.infra.kafka.clients import make_consumer, make_producer
from safeloop.infra.kafka.provisioning import admin_settings
from safeloop.infra.kafka.topics import TopicAdmin, topic_specs
from safeloop.infra.portcheck import free_port
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.schemas.events import PredictionEvent, Route
from safeloop.services.serving.kafka_sink import KafkaEventSink, event_producer_settings
from safeloop.services.serving.predictor import Predictor

RESULTS = Path(__file__).parent / "results" / "tls_overhead.json"
MODES = ("plaintext", "sasl_ssl")
HOP_BATCH = 1_000


def _broker(state_dir: Path, security: str) -> tuple[Settings, LocalKafkaBroker]:
    settings = replace(
        Settings.from_env({}),
        state_dir=state_dir,
        cache_dir=REPO / ".cache",
        topic_prefix=f"bench-tls-{os.getpid()}.",
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_security=security,
    )
    broker = LocalKafkaBroker(settings, start_timeout=180.0)
    broker.start()
    if settings.kafka_secured:
        settings = admin_settings(settings, broker.paths.security)
    return settings, broker


def _serving(settings: Settings, requests: int, warmup: int) -> dict[str, Any]:
    producer = make_producer(settings, **event_producer_settings(1_000_000))
    sink = KafkaEventSink(producer, settings.topics.predictions)
    predictor = Predictor(_catalog(), sink, "bench-replica")
    predictor.apply_config("churn", CONFIG, 1)
    predictor.mark_ready()
    timing = _time_calls(_request(predictor), requests, warmup)
    sink.close(120.0)
    stats = sink.stats()
    return {
        "request": {k: timing[k] for k in ("p50_us", "p99_us", "p999_us", "mean_us")},
        "delivered": stats.delivered,
        # Drops (never a stalled request) are what a broker too slow to answer costs.
        "dropped": stats.dropped_buffer_full + stats.delivery_failed,
    }


def _records(count: int) -> list[tuple[bytes, bytes]]:
    records = []
    for index in range(count):
        event = PredictionEvent(
            prediction_id=uuid.uuid4().hex,
            model_name="churn",
            model_version="v1",
            timestamp=1_700_000_000_000 + index,
            features={f"f{n}": float(n + index % 7) for n in range(8)},
            prediction=0.7,
            confidence=0.7,
            latency_ms=1.5,
            route=Route.PRODUCTION,
            replica_id="bench",
            routing_key=f"user-{index}",
            routing_hash_version=1,
        )
        records.append((event.prediction_id.encode(), PREDICTION_CODEC.encode(event)))
    return records


def _hop(settings: Settings, events: int) -> dict[str, Any]:
    source, target = settings.topics.predictions, settings.topics.feedback
    producer = make_producer(settings, **{"linger.ms": 5, "batch.num.messages": 10_000})
    for key, value in _records(events):
        while True:
            try:
                producer.produce(source, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120.0)
    consumer = make_consumer(
        settings, f"bench-hop-{uuid.uuid4().hex[:8]}", **{"auto.offset.reset": "earliest"}
    )
    consumer.subscribe([source])
    moved = 0
    wall_started: float | None = None
    cpu_started = 0.0
    deadline = time.monotonic() + 600.0
    while moved < events and time.monotonic() < deadline:
        batch = consumer.consume(HOP_BATCH, 1.0)
        if wall_started is None and batch:
            wall_started, cpu_started = time.monotonic(), time.process_time()
        for message in batch:
            if message.error() is not None:
                continue
            while True:
                try:
                    producer.produce(target, key=message.key(), value=message.value())
                    break
                except BufferError:
                    producer.poll(0.05)
            moved += 1
        producer.poll(0)
        if batch:
            consumer.commit(asynchronous=True)
    producer.flush(120.0)
    assert wall_started is not None, "the hop read nothing"
    wall = time.monotonic() - wall_started
    cpu = time.process_time() - cpu_started
    consumer.close()
    return {
        "events": moved,
        "events_per_s": round(moved / wall),
        "cpu_us_per_event": round(cpu / max(moved, 1) * 1e6, 2),
    }


def run(requests: int, warmup: int, events: int) -> dict[str, Any]:
    modes: dict[str, Any] = {}
    for security in MODES:
        with tempfile.TemporaryDirectory() as state_dir:
            settings, broker = _broker(Path(state_dir), security)
            try:
                TopicAdmin.from_settings(settings).ensure(topic_specs(settings))
                modes[security] = {
                    "serving": _serving(settings, requests, warmup),
                    "hop": _hop(settings, events),
                }
            finally:
                broker.stop()
    plain, tls = modes["plaintext"], modes["sasl_ssl"]
    return {
        "benchmark": "tls_overhead",
        "what": "serving request path and the join's consume→produce hop, plaintext vs SASL_SSL",
        "modes": modes,
        "ratios_sasl_ssl_over_plaintext": {
            "serving_request_p99": round(
                tls["serving"]["request"]["p99_us"] / plain["serving"]["request"]["p99_us"], 3
            ),
            "hop_events_per_s": round(tls["hop"]["events_per_s"] / plain["hop"]["events_per_s"], 3),
            "hop_cpu_per_event": round(
                tls["hop"]["cpu_us_per_event"] / plain["hop"]["cpu_us_per_event"], 3
            ),
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    result = run(args.requests, args.warmup, args.events)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {"modes": result["modes"], "ratios": result["ratios_sasl_ssl_over_plaintext"]}, indent=2
        )
    )


if __name__ == "__main__":
    main()
