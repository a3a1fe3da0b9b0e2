"""Run every benchmark (`python -m bench [NAME ...]`); each writes bench/results/NAME.json."""

from __future__ import annotations

import subprocess
import sys

# Cheapest first; dashboard_queries generates 100 million rows and takes several minutes.
BENCHMARKS = (
    "cli_startup",
    "codec",
    "metrics_throughput",
    "segments_throughput",
    "multiclass_metrics",
    "warehouse_insert",
    "serving_overhead",
    "publishing",
    "control_propagation",
    "rollback_latency",
    "tls_overhead",
    "metrics_scale_out",
    "stream_join",
    "dashboard_queries",
)


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        sys.stderr.write(f"unknown benchmark(s): {', '.join(unknown)}; choose from {BENCHMARKS}\n")
        return 2
    failed = []
    for name in chosen:
        sys.stdout.write(f"== bench.{name}\n")
        sys.stdout.flush()
        if subprocess.call([sys.executable, "-m", f"bench.{name}"]) != 0:
            failed.append(name)
    if failed:
        sys.stderr.write(f"failed: {', '.join(failed)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
