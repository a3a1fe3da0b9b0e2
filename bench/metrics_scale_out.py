"""Scale-out of the metrics service: events/s of 1 instance vs 2 sharing one consumer group,
and the verdicts each setup reaches on the same input.

For each setup: fresh topics (4 partitions) and a fresh group; the control topic holds a 10 %
canary of `churn` v2. The instances (`python -m bench.metrics_scale_out --worker`, each a
`MetricsService` stepping in its own process, as `safeloop metrics run` does) join first; once
the group has settled, the same pre-encoded input is produced: N predictions (10 % canary, the
canary failing on a third of its requests in the second half: one rollback is due) and N
feedback records. Throughput counts the events read after the input was fully produced, over
the time until every event was read (the producer shares the 2 cores only before that). The
setups alternate for `--rounds` rounds (1, 2, 1, 2, ...), each pair giving a ratio, and the
median ratio is the result: other jobs on a shared box change one thread's speed from minute to
minute, so a ratio is only fair between runs close in time.
Run: `python -m bench.metrics_scale_out [--events N] [--rounds K]`; writes
bench/results/metrics_scale_out.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.proc_cpu import cpu_seconds
from bench.rollback_latency import (
    FEATURES,
    MODEL,
    _env_of,
    _provision,
    _publish_canary,
    _settings,
)
from safeloop.infra.kafka.broker import LocalKafkaBroker
from safeloop.infra.kafka.clients import make_producer
from safeloop.infra.kafka.topics import TopicAdmin, topic_specs
from safeloop.infra.settings import Secret, Settings
from safeloop.infra.warehouse.process import WarehouseProcess
from safeloop.schemas.codec import FEEDBACK_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import FeedbackRecord, FeedbackStatus, PredictionEvent, Route
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.keys import load_keyring
from safeloop.services.control.publisher import ControlPublisher, read_control_topic

RESULTS = Path(__file__).parent / "results" / "metrics_scale_out.json"
REPO = Path(__file__).resolve().parents[1]
STATUS_EVERY_S = 0.25


# -- the instance -------------------------------------------------------------------------------


def worker(prefix: str, status_path: Path, stop_path: Path) -> None:
    """One metrics instance: step until `stop_path` exists, writing its counts as it goes."""
    from safeloop.services.guard.policy import GuardPolicy
    from safeloop.services.monitor.service import MetricsConfig
    from safeloop.services.monitor.wiring import build_metrics_service

    settings = Settings.from_env()
    config = MetricsConfig(
        snapshot_interval_ms=1_000,
        guard_policy=GuardPolicy(max_p99_latency_ratio=None, max_performance_drop=None),
    )
    service = build_metrics_service(settings, config, group_prefix=prefix)
    samples: list[tuple[float, int]] = []
    written = time.monotonic()
    while not stop_path.exists():
        service.step()
        now = time.monotonic()
        if now - written >= STATUS_EVERY_S:
            written = now
            events = _fresh_events(service)
            samples.append((time.time(), events, time.process_time()))
            status = {
                "partitions": sorted(service.predictions.membership.partitions),
                "rebuilt": service.rebuilt(),
                "judge": service.is_judge(),
                "events": events,
                "samples": samples,
                "rollbacks": service.guard.rollbacks,
                "verdicts": {k.value: v for k, v in service.guard.verdicts.items()},
            }
            tmp = status_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(status))
            tmp.replace(status_path)
    service.close()


def _fresh_events(service: Any) -> int:
    """Events read for the first time (a rebalance's re-read rebuilds windows, it is not input)."""
    total = 0
    for consumer in (service.predictions, service.feedback):
        total += consumer.counts.events - consumer.replay.replayed
    return int(total)


# -- the input ----------------------------------------------------------------------------------


def _encoded_input(events: int) -> list[tuple[str, bytes, bytes]]:
    """(topic kind, key, value) for `events` predictions and as many feedback records."""
    rng = random.Random(11)
    now_ms = time.time_ns() // 1_000_000
    out = []
    for index in range(events):
        canary = index % 10 == 0
        route = Route.CANARY if canary else Route.PRODUCTION
        version = "v2" if canary else "v1"
        failing = canary and index > events // 2 and index % 30 == 0
        score = rng.random()
        prediction = PredictionEvent(
            f"p{index}", MODEL, version, now_ms, dict(FEATURES), None if failing else score,
            None if failing else max(score, 1 - score), rng.lognormvariate(1.0, 0.4), route,
            "bench", f"k{index}", 1, "injected failure" if failing else None,
        )  # fmt: skip
        feedback = FeedbackRecord(
            f"p{index}", MODEL, version, route, "bench", dict(FEATURES), score,
            max(score, 1 - score), now_ms, FeedbackStatus.JOINED, float(rng.random() < score),
            now_ms + 1000, 1000, "bench", now_ms + 1000,
        )  # fmt: skip
        key = prediction.prediction_id.encode()
        out.append(("predictions", key, PREDICTION_CODEC.encode(prediction)))
        out.append(("feedback", key, FEEDBACK_CODEC.encode(feedback)))
    return out


def _produce(settings: Settings, records: list[tuple[str, bytes, bytes]]) -> None:
    producer = make_producer(settings, **{"linger.ms": 20, "batch.num.messages": 10_000})
    topics = {"predictions": settings.topics.predictions, "feedback": settings.topics.feedback}
    for index, (kind, key, value) in enumerate(records):
        while True:
            try:
                producer.produce(topics[kind], key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        if index % 5_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0, "input not acknowledged"


# -- one setup ----------------------------------------------------------------------------------


def _status(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads); 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def run_setup(
    base: Settings,
    instances: int,
    records: list[tuple[str, bytes, bytes]],
    work: Path,
    others: dict[str, int | None],
    label: str = "",
) -> dict[str, Any]:
    """One setup's run; `others` are the processes sharing the box (broker, ClickHouse
    endpoint) whose CPU while draining is reported beside the instances'."""
    settings = dataclasses.replace(base, topic_prefix=f"{base.topic_prefix}{label}n{instances}.")
    TopicAdmin.from_settings(settings).ensure(topic_specs(settings))
    publisher = ControlPublisher(
        make_producer(settings, **{"linger.ms": 0}), settings.topics.control, load_keyring(settings)
    )
    _publish_canary(settings, publisher)
    prefix = f"bench-scale-{uuid.uuid4().hex[:6]}"
    stop_path = work / f"stop-{label}{instances}"
    statuses = [work / f"status-{label}{instances}-{i}.json" for i in range(instances)]
    env = {**os.environ, **_env_of(settings), "SAFELOOP_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "bench.metrics_scale_out", "--worker", prefix]
    processes = [
        subprocess.Popen([*command, str(s), str(stop_path)], cwd=REPO, env=env) for s in statuses
    ]
    try:
        partitions = set(range(settings.partitions))
        deadline = time.monotonic() + 120
        settled_since: float | None = None
        while time.monotonic() < deadline:
            found = [_status(s) for s in statuses]
            owned = [set(f.get("partitions", [])) for f in found]
            settled = (
                all(owned)
                and set().union(*owned) == partitions
                and sum(len(o) for o in owned) == len(partitions)
                and all(f.get("rebuilt") for f in found)
            )
            if not settled:
                settled_since = None
            elif settled_since is None:
                settled_since = time.monotonic()
            elif time.monotonic() - settled_since >= 3.0:
                break
            time.sleep(0.2)
        else:
            raise TimeoutError(f"the group never settled: {found}")
        started = time.time()
        _produce(settings, records)
        produced = time.time()
        others_before = {name: _cpu_seconds(pid) for name, pid in others.items()}
        expected = len(records)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            found = [_status(s) for s in statuses]
            if sum(int(f.get("events", 0)) for f in found) >= expected:
                break
            time.sleep(0.2)
        drained = time.time()
        # Cores the other processes used while the instances drained (to within the 0.2 s poll).
        others_cores = {
            name: round((_cpu_seconds(pid) - others_before[name]) / (drained - produced), 2)
            for name, pid in others.items()
        }
        time.sleep(2 * STATUS_EVERY_S)
        found = [_status(s) for s in statuses]
    finally:
        stop_path.touch()
        for process in processes:
            process.wait(60)
    starts = [_at(f["samples"], produced) for f in found]
    ends = [_reaching(f["samples"], int(f["events"])) for f in found]
    at_produced = sum(int(start[1]) for start in starts)
    finished = max(float(end[0]) for end in ends)
    read_after = sum(int(f["events"]) for f in found) - at_produced
    elapsed = finished - produced
    # CPU seconds of every instance (all its threads) while draining: the work per event,
    # which contention from other jobs on the box does not change.
    cpu_s = sum(float(end[2]) - float(start[2]) for start, end in zip(starts, ends, strict=True))
    reader = make_broadcast_reader(settings, settings.topics.control, "bench")
    view = read_control_topic(reader, load_keyring(settings))
    commands = view.latest.get(MODEL)
    return {
        "instances": instances,
        "events": sum(int(f["events"]) for f in found),
        "expected_events": expected,
        "produce_s": round(produced - started, 2),
        "read_while_producing": at_produced,
        "read_after_produced": read_after,
        "drain_s": round(elapsed, 2),
        "events_per_s": round(read_after / elapsed) if elapsed > 0 else None,
        "instance_cpu_s": round(cpu_s, 2),
        "events_per_cpu_s": round(read_after / cpu_s) if cpu_s > 0 else None,
        "instance_cores": round(cpu_s / elapsed, 2) if elapsed > 0 else None,
        "other_cores_while_draining": others_cores,
        "partitions_per_instance": [f["partitions"] for f in found],
        "guard_rollbacks_per_instance": [f["rollbacks"] for f in found],
        "latest_command": None
        if commands is None
        else {
            "kind": commands.kind.value,
            "sequence": commands.sequence,
            "reason": commands.reason,
            "canary_version": commands.details.get("canary_version"),
            "rules": sorted(k for k in commands.details if k.endswith("_limit")),
        },
    }


def _ratio(two: dict[str, Any], one: dict[str, Any], key: str) -> float | None:
    return round(two[key] / one[key], 2) if one[key] and two[key] else None


def _at(samples: list[list[float]], at: float) -> list[float]:
    """The last sample taken at or before `at` (wall time, events, CPU seconds)."""
    before = [sample for sample in samples if sample[0] <= at]
    return before[-1] if before else [at, 0, 0.0]


def _reaching(samples: list[list[float]], count: int) -> list[float]:
    """The first sample with `count` events read."""
    return next(sample for sample in samples if int(sample[1]) >= count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of setups, alternating")
    parser.add_argument("--worker", nargs=3, metavar=("GROUP_PREFIX", "STATUS", "STOP"))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]), Path(args.worker[2]))
        return
    records = _encoded_input(args.events)
    with tempfile.TemporaryDirectory(prefix="safeloop-bench-") as state:
        settings = _settings(Path(state))
        settings = dataclasses.replace(settings, control_key=Secret(settings.control_key.value))
        broker = LocalKafkaBroker(settings) if settings.uses_local_kafka else None
        warehouse = WarehouseProcess(settings) if settings.uses_embedded_clickhouse else None
        if broker is not None:
            broker.start()
        if warehouse is not None:
            warehouse.start()
        try:
            _provision(settings)
            load_before = os.getloadavg()[0]
            others = {
                "broker": None if broker is None else broker.node_pid(broker.node_ids[0]),
                "clickhouse_endpoint": None if warehouse is None else warehouse.status().pid,
            }
            rounds = [
                [run_setup(settings, n, records, Path(state), others, f"r{k}") for n in (1, 2)]
                for k in range(args.rounds)
            ]
            load_after = os.getloadavg()[0]
        finally:
            if warehouse is not None:
                warehouse.stop()
            if broker is not None:
                broker.stop()
    ratios = [_ratio(two, one, "events_per_s") or 0.0 for one, two in rounds]
    # The round whose ratio is the median (the lower middle one for an even count) reports.
    median = sorted(range(len(rounds)), key=ratios.__getitem__)[(len(rounds) - 1) // 2]
    one, two = rounds[median]
    setups = [setup for pair in rounds for setup in pair]
    ratio = _ratio(two, one, "events_per_s")
    cpu_ratio = _ratio(two, one, "events_per_cpu_s")
    result = {
        "benchmark": "metrics_scale_out",
        "what": __doc__.split("\n\n")[1].replace("\n", " "),
        # 1 and 2 instances of round 0, then of round 1, ...
        "setups": setups,
        # The median round's ratio; every round's, in the order they ran.
        "two_vs_one": ratio,
        "two_vs_one_by_round": ratios,
        "median_round": median,
        "target": ">= 1.5 (the median round)",
        # Per CPU second: 1.0 means splitting costs nothing, so on 2 idle cores 2 instances
        # would read about 2x what one does.
        "two_vs_one_per_cpu_s": cpu_ratio,
        "same_verdicts": all(
            s["latest_command"] is not None
            and (s["latest_command"]["kind"], s["latest_command"]["sequence"]) == ("rollback", 2)
            and s["latest_command"]["rules"] == one["latest_command"]["rules"]
            and sum(s["guard_rollbacks_per_instance"]) == 1
            for s in setups
        ),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m_before_after": [round(load_before, 2), round(load_after, 2)],
            "platform": platform.platform(),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
