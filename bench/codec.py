"""Codec throughput: PredictionEvent (10 features) encode/decode events/s, one core.

Baselines: bare fastavro on the same schema, with and without the `timestamp-millis` logical
type, to show what the codec's framing, dataclass building and int timestamps cost or save.
Run: `python -m bench.codec [--events N] [--rounds R]`; writes bench/results/codec.json.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro

from safeloop.schemas.codec import HEADER_SIZE, PREDICTION_CODEC
from safeloop.schemas.events import PredictionEvent, Route
from safeloop.schemas.validation import validate_prediction

RESULTS = Path(__file__).parent / "results" / "codec.json"
T0 = 1_700_000_000_000


def _events(n: int) -> list[PredictionEvent]:
    return [
        PredictionEvent(
            prediction_id=f"0f8fad5b-d9cb-469f-a165-{i:012d}",
            model_name="fraud-detector",
            model_version="2024.06.1",
            timestamp=T0 + i,
            features={f"feature_{k:02d}": (i * 7 + k) * 0.37 for k in range(10)},
            prediction=(i % 100) / 100,
            confidence=0.9,
            latency_ms=3.25,
            route=Route.CANARY if i % 20 == 0 else Route.PRODUCTION,
            replica_id="replica-1",
            routing_key=f"user-{i % 5000}",
            routing_hash_version=1,
        )
        for i in range(n)
    ]


def _best_rate(n: int, rounds: int, run: Callable[[], object]) -> float:
    """Events/s of the fastest round: the least disturbed by whatever else the machine does."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return n / best


def measure(n: int, rounds: int) -> dict[str, Any]:
    """Run every measurement once per round and return the result document."""
    codec = PREDICTION_CODEC
    events = _events(n)
    encoded = codec.encode_many(events)
    assert codec.decode_many(encoded) == events
    bodies = [data[HEADER_SIZE:] for data in encoded]
    with_logical = fastavro.parse_schema(codec.schema.source)
    without_logical = codec.schema.parsed
    records = [
        {name: getattr(e, name) for name in PredictionEvent.__dataclass_fields__} for e in events
    ]

    # One event at a time, result dropped: the stream processor's pattern. The *_many forms
    # keep every result alive, so they also pay the garbage collector's scans of the batch.
    def bare_decode(schema: Any) -> Callable[[], None]:
        def run() -> None:
            for body in bodies:
                fastavro.schemaless_reader(io.BytesIO(body), schema, None)

        return run

    def bare_encode() -> None:
        for record in records:
            fastavro.schemaless_writer(io.BytesIO(), without_logical, record)

    def encode() -> None:
        for event in events:
            codec.encode(event)

    def decode() -> None:
        for data in encoded:
            codec.decode(data)

    def decode_and_validate() -> None:
        now_ms = T0 + n
        for data in encoded:
            validate_prediction(codec.decode(data), now_ms)

    rates = {
        "encode": _best_rate(n, rounds, encode),
        "decode": _best_rate(n, rounds, decode),
        "decode_and_validate": _best_rate(n, rounds, decode_and_validate),
        "encode_many": _best_rate(n, rounds, lambda: codec.encode_many(events)),
        "decode_many": _best_rate(n, rounds, lambda: codec.decode_many(encoded)),
        "fastavro_encode_dict": _best_rate(n, rounds, bare_encode),
        "fastavro_decode_dict_int_ms": _best_rate(n, rounds, bare_decode(without_logical)),
        "fastavro_decode_dict_datetime": _best_rate(n, rounds, bare_decode(with_logical)),
    }
    return {
        "benchmark": "codec",
        "event": "PredictionEvent, 10 features",
        "events_per_round": n,
        "rounds": rounds,
        "statistic": "events/s of the fastest round, one core",
        "message_bytes": len(encoded[0]),
        "events_per_second": {name: round(rate) for name, rate in rates.items()},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "fastavro": fastavro.__version__,
            "platform": platform.platform(),
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, write bench/results/codec.json, print a summary, return the document."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = measure(args.events, args.rounds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for name, rate in result["events_per_second"].items():
        print(f"{name:32s} {rate:>10,d} events/s")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
