"""Warehouse insert: 1M rows (UInt64, Float64) from clickhouse-connect through the endpoint.

Baselines: the same rows as Native bytes inserted straight into chDB in-process (no HTTP), and
the same bytes sent over HTTP with `raw_insert` (no client-side serialization), to separate the
endpoint's own cost from chDB's and from clickhouse-connect's.
The endpoint runs as the `safeloop warehouse start` daemon would, in its own process.
Run: `python -m bench.warehouse_insert [--rows N] [--rounds R]`; writes
bench/results/warehouse_insert.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import chdb
import clickhouse_connect
import lz4.frame
import numpy as np

from safeloop.infra.clickhouse import clickhouse_client
from safeloop.infra.portcheck import free_port
from safeloop.infra.settings import Settings
from safeloop.infra.warehouse import WarehouseProcess

RESULTS = Path(__file__).parent / "results" / "warehouse_insert.json"
TABLE = "bench_insert"
PIECE = 1 << 20
DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id UInt64, value Float64) ENGINE = MergeTree ORDER BY id"
)


def _timed(rounds: int, reset: Callable[[], object], run: Callable[[], object]) -> list[float]:
    """Seconds of every round; `reset` (untimed) empties the table first."""
    seconds = []
    for _ in range(rounds):
        reset()
        gc.collect()
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def _native_rows(rows: int) -> bytes:
    """The benchmark's rows as Native bytes (what clickhouse-connect sends, uncompressed)."""
    conn = chdb.connect(":memory:")  # type: ignore[no-untyped-call]
    try:
        sql = f"SELECT number AS id, toFloat64(number) * 0.5 AS value FROM numbers({rows})"
        data: bytes = conn.query(sql, "Native").bytes()
        return data
    finally:
        conn.close()


def _direct(native: bytes, rows: int, rounds: int, data_dir: Path) -> list[float]:
    """chDB in this process: a streaming INSERT fed the Native bytes in 1 MiB pieces, as the
    endpoint feeds what it reads off the socket."""
    conn = chdb.connect(str(data_dir))  # type: ignore[no-untyped-call]
    try:
        conn.query(DDL, "TabSeparated")

        def run() -> None:
            inserter = conn.send_insert(f"INSERT INTO {TABLE} (id, value)", "Native")
            for start in range(0, len(native), PIECE):
                inserter.append(native[start : start + PIECE])
            assert inserter.finish().rows_written == rows

        return _timed(rounds, lambda: conn.query(f"TRUNCATE TABLE {TABLE}", "TabSeparated"), run)
    finally:
        conn.close()


def _through_endpoint(
    settings: Settings, native: bytes, rows: int, rounds: int
) -> dict[str, float]:
    ids = np.arange(rows, dtype=np.uint64)
    values = ids.astype(np.float64) * 0.5
    compressed = lz4.frame.compress(native)
    client = clickhouse_client(settings, database="")
    plain = clickhouse_client(settings, database="", compress=False)
    try:
        client.command(DDL)

        def reset() -> None:
            client.command(f"TRUNCATE TABLE {TABLE}")

        def check(summary: Any) -> None:
            assert summary.written_rows == rows, summary.written_rows

        timings = {
            "insert_numpy_lz4": lambda: check(
                client.insert(TABLE, [ids, values], ["id", "value"], column_oriented=True)
            ),
            "insert_numpy_uncompressed": lambda: check(
                plain.insert(TABLE, [ids, values], ["id", "value"], column_oriented=True)
            ),
            "raw_insert_native_lz4": lambda: check(
                client.raw_insert(
                    TABLE, ["id", "value"], compressed, fmt="Native", compression="lz4"
                )
            ),
            "raw_insert_native_uncompressed": lambda: check(
                plain.raw_insert(TABLE, ["id", "value"], native, fmt="Native")
            ),
        }
        return {name: _timed(rounds, reset, run) for name, run in timings.items()}
    finally:
        client.close()
        plain.close()


def measure(rows: int, rounds: int) -> dict[str, Any]:
    """Start a private endpoint daemon, run every measurement, stop it; return the document."""
    native = _native_rows(rows)
    with tempfile.TemporaryDirectory(prefix="bench-warehouse-") as tmp:
        # Direct first, its engine closed before the daemon starts: no two engines compete.
        direct = _direct(native, rows, rounds, Path(tmp) / "direct")
        base = Settings.from_env({})
        settings = replace(base, state_dir=Path(tmp) / "state", warehouse_port=free_port())
        process = WarehouseProcess(settings)
        process.start()
        try:
            seconds = _through_endpoint(settings, native, rows, rounds)
        finally:
            process.stop()
    seconds["chdb_direct_native"] = direct
    best = {name: min(values) for name, values in seconds.items()}
    median = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "benchmark": "warehouse_insert",
        "rows": rows,
        "columns": "id UInt64, value Float64",
        "native_bytes": len(native),
        "rounds": rounds,
        "statistic": "seconds per insert: fastest round and median round",
        "best_seconds": {name: round(value, 4) for name, value in best.items()},
        "median_seconds": {name: round(value, 4) for name, value in median.items()},
        "best_rows_per_second": {name: round(rows / value) for name, value in best.items()},
        "endpoint_overhead_best_seconds": {
            name: round(best[name] - best["chdb_direct_native"], 4)
            for name in ("raw_insert_native_uncompressed", "raw_insert_native_lz4")
        },
        "endpoint_overhead_median_seconds": {
            name: round(median[name] - median["chdb_direct_native"], 4)
            for name in ("raw_insert_native_uncompressed", "raw_insert_native_lz4")
        },
        "baseline": "~1.2 s measured for the same insert through an earlier chDB HTTP front",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "chdb": getattr(chdb, "__version__", "unknown"),
            "clickhouse_connect": clickhouse_connect.__version__,
            "platform": platform.platform(),
            # Other work on the machine shows in the spread between best and median.
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, write bench/results/warehouse_insert.json, print a summary, return it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = measure(args.rows, args.rounds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for name, value in result["best_seconds"].items():
        median = result["median_seconds"][name]
        rate = result["best_rows_per_second"][name]
        print(f"{name:32s} best {value:6.3f} s  median {median:6.3f} s  {rate:>12,d} rows/s")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
