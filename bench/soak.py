"""Soak: the demo's whole loop under steady load for `--minutes`, one broker restart halfway
(`--restarts N`: N, evenly spread).

Every `--sample-s` it records, per process (the broker, the ClickHouse endpoint, the stream
processor, two replicas, the metrics service, the dashboard, the shadow scorer; each with its
child processes): resident memory and open file descriptors; and the processor's RocksDB size
and the consumer lag of every consumer group. The verdict is memory growth over the last
`--judge-minutes` (default 20) for every process, against the 5 % limit.

    python -m bench.soak                # 30 minutes, ~33 with start-up
    python -m bench.soak --minutes 4 --judge-minutes 2 --sample-s 15   # a quick look

Results: bench/results/soak.json and bench/results/soak.png (see bench/soak_plot.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.soak_plot import write_plot
from safeloop.infra.kafka.broker import LocalKafkaBroker
from safeloop.infra.kafka.broker_security import ADMIN_USER
from safeloop.infra.prometheus_scrape import scrape_total
from safeloop.infra.settings import Settings
from safeloop.services.demo.config import (
    MODEL,
    DemoConfig,
    DemoPorts,
    child_environment,
    demo_settings,
)
from safeloop.services.demo.labels import LabelFeed
from safeloop.services.demo.progress import NO_GAUGES, Progress
from safeloop.services.demo.run import labels_role_settings, start_stack
from safeloop.services.demo.stack import ChildService, LocalStack
from safeloop.services.demo.traffic import TrafficDriver
from safeloop.services.models.training import DEFAULT_FEATURES

RESULTS = Path(__file__).parent / "results" / "soak.json"
GROWTH_LIMIT = 0.05
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Sample:
    minute: float
    rss_mb: dict[str, float]
    fds: dict[str, int]
    rocksdb_mb: float
    lag: dict[str, int]
    sent: int
    failed: int
    # The processor's RocksDB memory (its /metrics): the one block cache, memtables included.
    rocksdb_cache_mb: float = 0.0
    # Of it, the memtables.
    rocksdb_memtable_mb: float = 0.0


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    restart_s: list[dict[str, float]] = field(default_factory=list)


def _children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry))
    return tree


def _tree(pid: int, tree: Mapping[int, list[int]]) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


def _rss_and_fds(pids: list[int]) -> tuple[float, int]:
    rss, fds = 0, 0
    for pid in pids:
        try:
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return rss / 1e6, fds


def _dir_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total / 1e6


def _group_lags(settings: Settings) -> dict[str, int]:
    """Messages behind the end, per consumer group of this run's topics (committed offsets)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    from safeloop.infra.kafka.clients import connection_config, with_client_logging

    config = {**connection_config(settings), "bootstrap.servers": settings.bootstrap_servers}
    # librdkafka's lines through logging (collapsed while the broker restarts), not on stderr.
    admin = AdminClient(with_client_logging(config))
    groups = [g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid]
    lags: dict[str, int] = {}
    from confluent_kafka import Consumer

    probe = Consumer(
        with_client_logging({**config, "group.id": "soak-probe", "enable.auto.commit": False})
    )
    try:
        for group in groups:
            request = [ConsumerGroupTopicPartitions(group)]
            answer = admin.list_consumer_group_offsets(request)[group].result(timeout=10)
            behind = 0
            for tp in answer.topic_partitions:
                if not tp.topic.startswith(settings.topic_prefix) or tp.offset < 0:
                    continue
                _, high = probe.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=10
                )
                behind += max(high - tp.offset, 0)
            lags[group] = behind
    finally:
        probe.close()
    return lags


def _metric(url: str, name: str) -> float:
    try:
        return scrape_total(url, name)
    except OSError:
        return float("nan")


def _sample(
    started: float,
    stack: LocalStack,
    broker: LocalKafkaBroker | None,
    settings: Settings,
    admin: Settings,
    traffic: TrafficDriver,
    processor_url: str,
) -> Sample:
    tree = _children_of()
    rss: dict[str, float] = {}
    fds: dict[str, int] = {}
    processes = {s.name: s.process.pid for s in stack.services if isinstance(s, ChildService)}
    if broker is not None:
        for node in broker.node_ids:
            pid = broker.node_pid(node)
            if pid is not None:
                processes[f"kafka-{node}"] = pid
    for name, pid in processes.items():
        rss[name], fds[name] = _rss_and_fds(_tree(pid, tree))
    try:
        lag = _group_lags(admin)
    except Exception as exc:  # a broker restarting: the sample says so
        lag = {"error": -1}
        print(f"lag unavailable: {exc}", file=sys.stderr, flush=True)
    # -1: the processor's /metrics did not answer.
    processor_lag = _metric(processor_url, "safeloop_stream_lag")
    lag["processor (its /metrics)"] = -1 if math.isnan(processor_lag) else int(processor_lag)
    cache_bytes = _metric(processor_url, "safeloop_stream_rocksdb_block_cache_bytes")
    memtables = _metric(processor_url, "safeloop_stream_rocksdb_memtable_bytes")
    return Sample(
        minute=round((time.monotonic() - started) / 60, 2),
        rss_mb={k: round(v, 1) for k, v in rss.items()},
        fds=fds,
        rocksdb_mb=round(_dir_mb(settings.state_dir / "streams"), 1),
        lag=lag,
        sent=traffic.counts.sent,
        failed=traffic.counts.failed,
        rocksdb_cache_mb=-1.0 if math.isnan(cache_bytes) else round(cache_bytes / 2**20, 1),
        rocksdb_memtable_mb=-1.0 if math.isnan(memtables) else round(memtables / 2**20, 1),
    )


def _growth(samples: list[Sample], judge_minutes: float) -> dict[str, dict[str, float]]:
    """Per process over the last `judge_minutes`: RSS at its first and last sample and that
    growth, and the growth of a least-squares line through every sample in it (`trend_growth`:
    one sample of a process whose RSS swings a few percent minute to minute, as ClickHouse's
    does with its merges, says little alone)."""
    last = samples[-1]
    start = min(samples, key=lambda s: abs(s.minute - (last.minute - judge_minutes)))
    window = [s for s in samples if s.minute >= start.minute]
    growth: dict[str, dict[str, float]] = {}
    for name, end_mb in last.rss_mb.items():
        begin_mb = start.rss_mb.get(name)
        points = [(s.minute, s.rss_mb[name]) for s in window if s.rss_mb.get(name)]
        if not begin_mb or len(points) < 2:
            continue
        slope, intercept = np.polyfit([m for m, _ in points], [mb for _, mb in points], 1)
        fitted_begin = slope * start.minute + intercept
        growth[name] = {
            "from_minute": start.minute,
            "rss_mb_then": begin_mb,
            "rss_mb_end": end_mb,
            "growth": round((end_mb - begin_mb) / begin_mb, 4),
            "trend_mb_per_minute": round(float(slope), 3),
            "trend_growth": round(float(slope * (last.minute - start.minute) / fitted_begin), 4),
        }
    return growth


def run(
    minutes: float,
    sample_s: float,
    judge_minutes: float,
    rate: float,
    keep_logs: Path | None,
    closed_memory_s: float,
    restarts: int = 1,
) -> dict[str, Any]:
    # A joined prediction's key is remembered as closed for `early_outcome_wait_ms` after its
    # window (an hour by default), so the processor's state grows by design for the first hour:
    # a shorter memory lets a 30-minute run reach its steady state and show what is left, leaks.
    base = dataclasses.replace(
        Settings.from_env(), early_outcome_wait_ms=int(closed_memory_s * 1000)
    )
    with tempfile.TemporaryDirectory(prefix="safeloop-soak-") as tmp:
        config = DemoConfig(
            duration_s=minutes * 60, rate=rate, keep_open=False, state_dir=Path(tmp)
        )
        ports = DemoPorts.pick()
        settings = demo_settings(config, ports, base)
        config.log_dir.mkdir(parents=True)
        soak = Soak()
        with (
            open(os.devnull, "w") as quiet,
            LocalStack(config.log_dir, child_environment(settings)) as stack,
        ):
            progress = Progress(quiet, lambda: NO_GAUGES, live=False)
            _, roles = start_stack(stack, settings, config, ports, progress)
            admin = Settings.from_env({**child_environment(settings), **roles.of(ADMIN_USER)})
            broker = (
                LocalKafkaBroker(settings, start_timeout=300.0)
                if settings.uses_local_kafka
                else None
            )
            labels = LabelFeed(
                labels_role_settings(settings), DEFAULT_FEATURES, config.label_delay_s
            )
            replicas = [("127.0.0.1", port) for port in ports.replicas]
            traffic = TrafficDriver(
                replicas, MODEL, DEFAULT_FEATURES, rate=rate, on_answer=labels.submit
            )
            labels.start()
            traffic.start()
            processor_url = f"http://127.0.0.1:{ports.processor_web}/metrics"
            started = time.monotonic()
            # Evenly spread: one restart is halfway; two, at a third and two thirds.
            restart_at = [minutes * 60 * k / (restarts + 1) for k in range(1, restarts + 1)]
            try:
                while (elapsed := time.monotonic() - started) < minutes * 60:
                    sample = _sample(
                        started, stack, broker, settings, admin, traffic, processor_url
                    )
                    soak.samples.append(sample)
                    print(json.dumps(sample.__dict__), flush=True)
                    stack.check_alive()
                    if broker is not None and restart_at and elapsed >= restart_at[0]:
                        restart_at.pop(0)
                        soak.events.append((sample.minute, "broker restart"))
                        print("restarting the broker", flush=True)
                        stopping = time.monotonic()
                        broker.stop()
                        stopped = time.monotonic()
                        broker.start()
                        soak.restart_s.append(
                            {
                                "stop": round(stopped - stopping, 1),
                                "start": round(time.monotonic() - stopped, 1),
                            }
                        )
                        soak.events.append((round((time.monotonic() - started) / 60, 2), "back"))
                    time.sleep(max(0.0, sample_s - (time.monotonic() - started - elapsed)))
                soak.samples.append(
                    _sample(started, stack, broker, settings, admin, traffic, processor_url)
                )
            finally:
                traffic.stop()
                labels.close()
                if keep_logs is not None:
                    shutil.copytree(config.log_dir, keep_logs, dirs_exist_ok=True)
    growth = _growth(soak.samples, judge_minutes)
    # The worker's RocksDB block cache fills up to its fixed budget by design (blocks of files
    # compaction replaced stay until evicted): the processor's growth besides it, for reading.
    besides_cache = _growth(
        [
            dataclasses.replace(s, rss_mb={"processor": s.rss_mb["processor"] - s.rocksdb_cache_mb})
            for s in soak.samples
            if s.rss_mb.get("processor") and s.rocksdb_cache_mb >= 0
        ],
        judge_minutes,
    )
    worst = max(g["growth"] for g in growth.values())
    worst_trend = max(g["trend_growth"] for g in growth.values())
    return {
        "benchmark": "soak",
        "minutes": minutes,
        "rate_requests_per_s": rate,
        "closed_prediction_memory_s": closed_memory_s,
        "events": soak.events,
        "broker_restarts_s": soak.restart_s,
        "samples": [s.__dict__ for s in soak.samples],
        "growth_last_minutes": judge_minutes,
        "growth": growth,
        "worst_growth": worst,
        "worst_trend_growth": worst_trend,
        "processor_growth_besides_block_cache": besides_cache.get("processor"),
        "limit": GROWTH_LIMIT,
        # Judged on the fitted line; the first-to-last figure is kept beside it.
        "met": worst_trend <= GROWTH_LIMIT,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_end": os.getloadavg(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=60.0)
    parser.add_argument("--judge-minutes", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s to the replicas")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep-logs", type=Path, help="copy every process's log here at the end")
    parser.add_argument(
        "--restarts", type=int, default=1, help="broker restarts, evenly spread (default 1)"
    )
    parser.add_argument(
        "--closed-memory-s",
        type=float,
        default=120.0,
        help="how long the processor remembers a closed prediction (SAFELOOP_EARLY_OUTCOME_WAIT_MS;"
        " the default hour keeps its state growing for an hour)",
    )
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the stack's processes and the broker are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = run(
        args.minutes,
        args.sample_s,
        args.judge_minutes,
        args.rate,
        args.keep_logs,
        args.closed_memory_s,
        args.restarts,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    write_plot(results, args.out.with_suffix(".png"))
    verdict = ("growth", "worst_growth", "worst_trend_growth", "met")
    print(json.dumps({k: results[k] for k in verdict}, indent=2))
    return 0 if results["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
