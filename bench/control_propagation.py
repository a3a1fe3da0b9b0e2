"""Control propagation: from publishing a signed command to every replica having applied it.

For 1, 4 and 8 replicas (`safeloop serve` processes), publish flag changes one at a time and
time, per command, until the last replica's `replica-status` report shows it applied (each
replica stamps its report right after applying). Target on this machine: p99 < 100 ms with 8.
Run: `python -m bench.control_propagation [--rounds N]`; writes
bench/results/control_propagation.json. Uses KAFKA_BOOTSTRAP_SERVERS or a private broker.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from safeloop.infra.kafka.broker import LocalKafkaBroker
from safeloop.infra.kafka.clients import make_producer
from safeloop.infra.kafka.topics import TopicAdmin, topic_specs
from safeloop.infra.portcheck import free_port
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import REPLICA_STATUS_CODEC
from safeloop.schemas.events import CommandKind, ModelConfig, ReplicaState
from safeloop.services.control.broadcast import BroadcastReader
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.keys import load_keyring
from safeloop.services.control.publisher import ControlPublisher, read_control_topic
from safeloop.services.models.store import ModelStore
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model

RESULTS = Path(__file__).parent / "results" / "control_propagation.json"
REPO = Path(__file__).resolve().parents[1]
TARGET_P99_MS = 100.0
REPLICA_COUNTS = (1, 4, 8)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _environment(state_dir: Path) -> dict[str, str]:
    env = {
        "SAFELOOP_STATE_DIR": str(state_dir),
        "SAFELOOP_CACHE_DIR": str(REPO / ".cache"),
        "SAFELOOP_TOPIC_PREFIX": f"bench-{uuid.uuid4().hex[:8]}.",
        "SAFELOOP_CONTROL_KEY": os.urandom(32).hex(),
        "SAFELOOP_CONTROL_KEY_ID": "bench",
        "SAFELOOP_LOG_LEVEL": "WARNING",
    }
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        env["SAFELOOP_KAFKA_PORT"] = str(free_port())
        env["SAFELOOP_KAFKA_CONTROLLER_PORT"] = str(free_port())
    return env


class StatusFollower:
    """Follows replica-status; remembers when each replica first reported each sequence."""

    def __init__(self, reader: BroadcastReader) -> None:
        self._reader = reader
        self._reader.assign_from_beginning()
        self.states: dict[str, ReplicaState] = {}
        self.applied_at: dict[tuple[str, int], int] = {}

    def pump(self, timeout_s: float = 0.01) -> None:
        for message in self._reader.poll(timeout_s):
            value = message.value()
            if value is None:
                continue
            status = REPLICA_STATUS_CODEC.decode(value)
            self.states[status.replica_id] = status.state
            sequence = status.config_versions.get("churn", 0)
            self.applied_at.setdefault((status.replica_id, sequence), status.timestamp)

    def wait(self, done: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError("replicas did not report in time")
            self.pump()


def _start_replicas(env: dict[str, str], count: int, tag: str) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "safeloop.services.cli.main",
                "serve",
                "--replica-id",
                f"{tag}-{index}",
                "--port",
                str(free_port()),
            ],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for index in range(count)
    ]


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(30)


def _measure(settings: Settings, env: dict[str, str], count: int, rounds: int) -> dict[str, Any]:
    keys = load_keyring(settings)
    publisher = ControlPublisher(
        make_producer(settings, **{"linger.ms": 0}),
        settings.topics.control,
        keys,
        issuer="bench",
    )
    tag = f"r{count}"
    names = [f"{tag}-{index}" for index in range(count)]
    follower = StatusFollower(
        make_broadcast_reader(settings, settings.topics.replica_status, "bench")
    )
    processes = _start_replicas(env, count, tag)
    try:
        follower.wait(
            lambda: all(follower.states.get(n) is ReplicaState.READY for n in names), 120.0
        )
        latencies_ms: list[int] = []
        observed_ms: list[float] = []
        view = read_control_topic(
            make_broadcast_reader(settings, settings.topics.control, "bench"), keys
        )
        for round_index in range(rounds):
            command = publisher.next_command(
                view,
                "churn",
                CommandKind.SET_FLAG,
                lambda c, i=round_index: dataclasses.replace(
                    c, flags={**c.flags, "bench_round": str(i)}
                ),
                reason="bench",
                initial=ModelConfig("v1"),
            )
            started_ms = _now_ms()
            started = time.perf_counter()
            publisher.send(command)
            follower.wait(
                lambda s=command.sequence: all((n, s) in follower.applied_at for n in names),
                10.0,
            )
            observed_ms.append((time.perf_counter() - started) * 1000)
            latencies_ms.append(
                max(follower.applied_at[(n, command.sequence)] for n in names) - started_ms
            )
            view = dataclasses.replace(view, latest={**view.latest, "churn": command})
            time.sleep(0.02)
    finally:
        _stop(processes)
    applied = np.asarray(latencies_ms, dtype=np.float64)
    seen = np.asarray(observed_ms)
    return {
        "replicas": count,
        "rounds": rounds,
        "applied_on_all_p50_ms": round(float(np.percentile(applied, 50)), 1),
        "applied_on_all_p99_ms": round(float(np.percentile(applied, 99)), 1),
        "applied_on_all_max_ms": float(applied.max()),
        "seen_by_operator_p50_ms": round(float(np.percentile(seen, 50)), 1),
        "seen_by_operator_p99_ms": round(float(np.percentile(seen, 99)), 1),
    }


def run(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state_dir:
        env = _environment(Path(state_dir))
        settings = Settings.from_env({**os.environ, **env})
        broker = None if settings.kafka_bootstrap_servers else LocalKafkaBroker(settings)
        if broker is not None:
            broker.start()
        try:
            TopicAdmin.from_settings(settings).ensure(topic_specs(settings))
            dataset = make_dataset(ModelTask.CLASSIFICATION, 2000)
            ModelStore(settings.models_path).save(
                *train_model("churn", "v1", ModelTask.CLASSIFICATION, dataset)
            )
            cases = [_measure(settings, env, count, rounds) for count in REPLICA_COUNTS]
        finally:
            if broker is not None:
                broker.stop()
    headline = cases[-1]["applied_on_all_p99_ms"]
    return {
        "benchmark": "control_propagation",
        "what": "publish of a signed command -> applied (status stamped) on every replica; "
        "timestamps in ms; replicas are separate `safeloop serve` processes",
        "target_p99_ms_with_8": TARGET_P99_MS,
        "p99_ms_with_8": headline,
        "meets_target": headline < TARGET_P99_MS,
        "cases": cases,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    result = run(args.rounds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["cases"], indent=2))
    print(
        f"p99 with 8 replicas {result['p99_ms_with_8']} ms (target < {TARGET_P99_MS}) -> {RESULTS}"
    )


if __name__ == "__main__":
    main()
