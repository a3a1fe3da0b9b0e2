"""CLI start-up: wall time of operator commands from exec to exit, beside a bare interpreter.

Start-up (the target): `safeloop --help`, `safeloop keygen` and `safeloop COMMAND --help` for
the operator commands status, canary, rollback and flag: exec, imports, the parser, exit. With
`--stack`, also end to end against a live stack (KAFKA_BOOTSTRAP_SERVERS, or a private local
broker this run starts, with one `safeloop serve` replica and one command on the control
topic): `safeloop status churn --json` to exit, and `safeloop rollback churn` to its
"published" line (the command is on the control topic; the audit row follows on a thread).
Each is a fresh `python -m safeloop.services.cli.main` process; runs are interleaved so that the
machine's load falls on all of them alike. The baseline, measured in the same run:
`python -c pass`.
Commands run with compiled bytecode, as an installed CLI has it (pip compiles at install):
.pyc files go to a temporary PYTHONPYCACHEPREFIX, written by the warm-up run. The case marked
"no .pyc" runs `--help` as a source checkout with PYTHONDONTWRITEBYTECODE=1 does: every
safeloop module compiled on each start.
`--before-ref REF` also times the same commands from that git revision (exported to a temporary
directory), for a before/after. Target: <= 300 ms p50 for operator commands' start-up.
Run: `python -m bench.cli_startup [--runs N] [--stack] [--before-ref REF]`; writes
bench/results/cli_startup.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safeloop.infra.portcheck import free_port

RESULTS = Path(__file__).parent / "results" / "cli_startup.json"
REPO = Path(__file__).resolve().parents[1]
TARGET_MS = 300.0
OPERATOR_COMMANDS = ("status", "canary", "rollback", "flag")
STATUS = "safeloop status churn --json (live stack, to exit)"
ROLLBACK = "safeloop rollback churn (live stack, to `published`)"
END_TO_END = (STATUS, ROLLBACK)
NO_PYC = "safeloop --help (no .pyc: source checkout, PYTHONDONTWRITEBYTECODE=1)"
SERVE = [sys.executable, "-m", "safeloop.services.cli.main", "serve"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[rank], 1)


def _children_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def _time_once(
    argv: list[str], env: dict[str, str], until_line: str | None = None
) -> tuple[float, float]:
    """Wall milliseconds from exec to exit (or to the first stdout line starting with
    `until_line`) and the process's CPU milliseconds to exit (less sensitive to load)."""
    cpu_before = _children_cpu_ms()
    started = time.perf_counter()
    if until_line is None:
        done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, timeout=120)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if done.returncode != 0:
            raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.decode()[-500:]}")
        return elapsed_ms, _children_cpu_ms() - cpu_before
    with subprocess.Popen(
        argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(until_line):
                elapsed_ms = (time.perf_counter() - started) * 1000
                break
        else:
            raise RuntimeError(f"{argv} never printed {until_line!r}: {process.stderr.read()}")
        process.communicate(timeout=120)
    return elapsed_ms, _children_cpu_ms() - cpu_before


def _until(case: str) -> str | None:
    return "published" if case.startswith(ROLLBACK) else None


@contextlib.contextmanager
def _stack(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Kafka (given or private), topics, a model, one command and one replica."""
    from safeloop.infra.kafka.broker import LocalKafkaBroker
    from safeloop.infra.kafka.clients import make_producer
    from safeloop.infra.kafka.topics import TopicAdmin, topic_specs
    from safeloop.infra.settings import Settings
    from safeloop.schemas.events import CommandKind, ModelConfig, ReplicaState
    from safeloop.services.control.clients import make_broadcast_reader
    from safeloop.services.control.fleet import FleetWatcher
    from safeloop.services.control.keys import load_keyring
    from safeloop.services.control.publisher import ControlPublisher, read_control_topic
    from safeloop.services.models.store import ModelStore
    from safeloop.services.models.task import ModelTask
    from safeloop.services.models.training import make_dataset, train_model

    with tempfile.TemporaryDirectory() as state_dir:
        stack_env = {
            **env,
            "SAFELOOP_STATE_DIR": state_dir,
            "SAFELOOP_CACHE_DIR": str(REPO / ".cache"),
            "SAFELOOP_TOPIC_PREFIX": f"bench-{uuid.uuid4().hex[:8]}.",
            "SAFELOOP_CONTROL_KEY": os.urandom(32).hex(),
            "SAFELOOP_CONTROL_KEY_ID": "bench",
            "SAFELOOP_LOG_LEVEL": "WARNING",
            # No warehouse: `rollback`'s audit row fails fast on a port nobody listens on
            # (and never lands in another process's ClickHouse).
            "SAFELOOP_WAREHOUSE_PORT": str(free_port()),
            "CLICKHOUSE_URL": "",
        }
        if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
            stack_env["SAFELOOP_KAFKA_PORT"] = str(free_port())
            stack_env["SAFELOOP_KAFKA_CONTROLLER_PORT"] = str(free_port())
        settings = Settings.from_env(stack_env)
        broker = None if settings.kafka_bootstrap_servers else LocalKafkaBroker(settings)
        if broker is not None:
            broker.start()
        replica = None
        try:
            TopicAdmin.from_settings(settings).ensure(topic_specs(settings))
            dataset = make_dataset(ModelTask.CLASSIFICATION, 2000)
            ModelStore(settings.models_path).save(
                *train_model("churn", "v1", ModelTask.CLASSIFICATION, dataset)
            )
            keys = load_keyring(settings)
            view = read_control_topic(
                make_broadcast_reader(settings, settings.topics.control, "bench"), keys
            )
            publisher = ControlPublisher(
                make_producer(settings, **{"linger.ms": 0}), settings.topics.control, keys
            )
            publisher.send(
                publisher.next_command(
                    view,
                    "churn",
                    CommandKind.SET_FLAG,
                    lambda config: config,
                    reason="bench",
                    initial=ModelConfig(production_version="v1"),
                )
            )
            replica = subprocess.Popen(
                [*SERVE, "--replica-id", "bench-a", "--port", str(free_port())],
                cwd=REPO,
                env=stack_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            reader = make_broadcast_reader(settings, settings.topics.replica_status, "bench")
            with FleetWatcher(reader, settings.replica_liveness_ms) as fleet:
                fleet.read_to_end(30)
                deadline = time.monotonic() + 60
                while not any(
                    s.state is ReplicaState.READY for s in fleet.update(0.2).replicas.values()
                ):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the bench replica never reported READY")
            yield stack_env
        finally:
            if replica is not None:
                replica.send_signal(signal.SIGTERM)
                replica.wait(30)
            if broker is not None:
                broker.stop()


@contextlib.contextmanager
def _revision(ref: str | None) -> Iterator[str | None]:
    """A PYTHONPATH under which `safeloop` is the tree at `ref` (None: no before)."""
    if ref is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as root:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--prefix=safeloop/", ref],
            check=True,
            capture_output=True,
        )
        subprocess.run(["tar", "-x", "-C", root], input=archive.stdout, check=True)
        yield root


def run(runs: int, with_stack: bool, before_ref: str | None) -> dict[str, Any]:
    python = sys.executable
    cli = [python, "-m", "safeloop.services.cli.main"]
    base_env = dict(os.environ)
    commands: dict[str, list[str]] = {
        "baseline: python -c pass": [python, "-c", "pass"],
        "safeloop --help": [*cli, "--help"],
        "safeloop keygen": [*cli, "keygen"],
        **{f"safeloop {c} --help": [*cli, c, "--help"] for c in OPERATOR_COMMANDS},
    }
    stack_cm = _stack(base_env) if with_stack else contextlib.nullcontext(base_env)
    with (
        stack_cm as env,
        _revision(before_ref) as before_path,
        tempfile.TemporaryDirectory() as pycache,
    ):
        if with_stack:
            commands[STATUS] = [*cli, "status", "churn", "--json"]
            commands[ROLLBACK] = [*cli, "rollback", "churn", "--reason", "bench"]
        compiled = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        compiled["PYTHONPYCACHEPREFIX"] = pycache
        cases: dict[str, tuple[list[str], dict[str, str]]] = {
            name: (argv, env if name == "baseline: python -c pass" else compiled)
            for name, argv in commands.items()
        }
        cases[NO_PYC] = ([*cli, "--help"], {**env, "PYTHONDONTWRITEBYTECODE": "1"})
        if before_path is not None:
            before_env = {**compiled, "PYTHONPATH": before_path}
            for name, argv in commands.items():
                if name.startswith("safeloop"):
                    cases[f"{name} (before: {before_ref})"] = (argv, before_env)
        timings: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for name, (argv, case_env) in cases.items():
            _time_once(argv, case_env, _until(name))  # warm the page cache and .pyc files
        for _ in range(runs):
            for name, (argv, case_env) in cases.items():
                wall_ms, cpu_ms = _time_once(argv, case_env, _until(name))
                timings[name].append(wall_ms)
                cpu[name].append(cpu_ms)
    results = {
        name: {
            "runs": len(values),
            "p50_ms": _percentile(values, 50),
            "p95_ms": _percentile(values, 95),
            "min_ms": round(min(values), 1),
            "cpu_p50_ms": _percentile(cpu[name], 50),
        }
        for name, values in timings.items()
    }
    baseline = results["baseline: python -c pass"]["p50_ms"]
    start_up = [n for n in results if n.startswith("safeloop") and n not in (*END_TO_END, NO_PYC)]
    worst_p50 = max(results[n]["p50_ms"] for n in start_up if "before" not in n)
    return {
        "benchmark": "cli_startup",
        "what": "wall time from exec to exit (rollback: to its `published` line) of a fresh "
        "`python -m safeloop.services.cli.main` process with compiled bytecode, runs "
        "interleaved; cpu_p50_ms: the process's own CPU time (user + system) to exit, "
        "which the machine's load inflates less; baseline: a bare interpreter in the same run",
        "target_ms": TARGET_MS,
        "worst_operator_p50_ms": worst_p50,
        "worst_operator_case": max(
            (n for n in start_up if "before" not in n), key=lambda n: results[n]["p50_ms"]
        ),
        "meets_target": worst_p50 <= TARGET_MS,
        "baseline_p50_ms": baseline,
        "worst_operator_cpu_p50_ms": max(
            results[n]["cpu_p50_ms"] for n in start_up if "before" not in n
        ),
        "baseline_cpu_p50_ms": results["baseline: python -c pass"]["cpu_p50_ms"],
        "end_to_end_p50_ms": {n: results[n]["p50_ms"] for n in END_TO_END if n in results},
        "cases": results,
        "stack": "private local broker + 1 replica" if with_stack else None,
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
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--stack", action="store_true", help="also time `status` on a live stack")
    parser.add_argument("--before-ref", help="also time the CLI of this git revision")
    args = parser.parse_args()
    result = run(args.runs, args.stack, args.before_ref)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["cases"], indent=2))
    print(
        f"worst operator command p50 {result['worst_operator_p50_ms']} ms "
        f"(target <= {TARGET_MS:g}), bare interpreter {result['baseline_p50_ms']} ms -> {RESULTS}"
    )


if __name__ == "__main__":
    main()
