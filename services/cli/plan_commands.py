"""`safeloop plan`: what the join needs at a prediction rate, from the benchmark's figures."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from safeloop.infra.settings import Settings
from safeloop.services.cli.exceptions import UsageError
from safeloop.services.cli.exit_codes import ExitCode

# The figures of the last `python -m bench.stream_join` in this checkout.
DEFAULT_RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "stream_join.json"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="partitions, workers, state, broker and ClickHouse sizes for a prediction rate",
        description="Scale the stream-join benchmark's measured figures (worker CPU per event, "
        "memory and RocksDB bytes per pending prediction, record and ClickHouse row sizes) to "
        "a prediction rate. Arithmetic only: nothing is contacted.",
    )
    parser.add_argument("--predictions-per-s", type=float, required=True)
    parser.add_argument(
        "--label-delay", required=True, help="how long outcomes trail predictions: 90s, 6h, 30d"
    )
    parser.add_argument(
        "--window", default=None, help="how long a prediction's state lives (default: the delay)"
    )
    parser.add_argument(
        "--figures", type=Path, default=DEFAULT_RESULTS, help="a bench.stream_join results file"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(func=_plan)


def _plan(args: argparse.Namespace, settings: Settings) -> int:
    from safeloop.infra.duration import parse_duration_s
    from safeloop.streams.capacity import MeasuredFigures, human_bytes, plan

    try:
        delay_s = parse_duration_s(args.label_delay)
        window_s = None if args.window is None else parse_duration_s(args.window)
        figures = MeasuredFigures.from_results(args.figures)
        result = plan(figures, args.predictions_per_s, delay_s, window_s)
    except FileNotFoundError as exc:
        raise UsageError(f"no benchmark results at {args.figures}: run bench.stream_join") from exc
    except (ValueError, KeyError) as exc:
        raise UsageError(f"cannot plan: {exc}") from exc
    if delay_s > result.window_s:
        sys.stderr.write(
            f"safeloop: warning: labels come {delay_s:,.0f} s after their predictions, past the "
            f"{result.window_s:,.0f} s window: the join would pair none of them (feedback_late "
            "would); plan with a window longer than the label delay\n"
        )
    if args.json:
        sys.stdout.write(json.dumps({**asdict(result), "figures": figures.source}) + "\n")
        return ExitCode.OK
    lines = [
        f"{result.predictions_per_s:,.0f} predictions/s, label delay {delay_s:,.0f} s, "
        f"window {result.window_s:,.0f} s (figures: {figures.source})",
        f"  events/s (predictions + outcomes)  {result.events_per_s:,.0f}",
        f"  worker CPU                         {result.worker_cores:,.2f} cores "
        f"({figures.worker_cpu_us_per_event} us/event)",
        f"  workers / partitions               {result.workers:,} / {result.partitions:,}",
        f"  pending predictions                {result.pending_entries:,.0f}",
        f"  RocksDB (all / per worker)         {human_bytes(result.rocksdb_bytes)} / "
        f"{human_bytes(result.rocksdb_bytes_per_worker)}",
        f"  worker memory (per worker)         {human_bytes(result.memory_bytes_per_worker)}",
        f"  changelog topics (compacted)       {human_bytes(result.changelog_bytes)}",
        f"  broker in / out                    {human_bytes(result.broker_in_bytes_per_s)}/s / "
        f"{human_bytes(result.broker_out_bytes_per_s)}/s",
        f"  ClickHouse rows / bytes per day    {result.clickhouse_rows_per_day:,.0f} / "
        f"{human_bytes(result.clickhouse_bytes_per_day)}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return ExitCode.OK
