"""Faults injected one at a time into the whole loop under steady load (tests/chaos/_chaos_loop.py):
after each, every acknowledged prediction and outcome is in ClickHouse exactly once (counts
without FINAL), the replicas kept answering, and control converged on every live replica.

The scenarios share one loop (starting three brokers and two workers' first rebalances costs
minutes on this box) and run in the order written; each writes bench/results/chaos_<name>.json.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace

import pytest
from _chaos_loop import (
    GUARD_MIN_REQUESTS,
    PAIRS_PER_SECOND,
    ChaosLoop,
    Tally,
    build_loop,
    fully_in_sync,
    leaders,
    wait_for,
)
from _metrics_harness import MODEL
from conftest import KafkaCluster

from safeloop.infra.portcheck import free_port
from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.keys import load_keyring
from safeloop.services.control.publisher import read_control_topic
from safeloop.services.guard.local import routed_canary
from safeloop.services.monitor.snapshot_retry import REPORT_EVERY_S

# How long ClickHouse stays down in its own scenario (the 60 s), and everything in the
# all-at-once one (shorter: three restarts' catch-up on top must stay inside CI's time).
OUTAGE_S = float(os.environ.get("SAFELOOP_CHAOS_OUTAGE_S", "60"))
ALL_AT_ONCE_DOWN_S = 20.0
# The first scenario also pays for starting the loop (minutes on a loaded 2-core box).
pytestmark = pytest.mark.timeout(1500)


@pytest.fixture(scope="module")
def loop(
    kafka_cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChaosLoop]:
    with ExitStack() as stack:
        yield build_loop(kafka_cluster.settings, tmp_path_factory.mktemp("chaos"), stack)


@pytest.fixture(autouse=True)
def every_broker_back(kafka_cluster: KafkaCluster, loop: ChaosLoop) -> Iterator[None]:
    """A scenario that fails with a broker down must not fail the next ones for it."""
    yield
    kafka_cluster.broker.start()
    wait_for(lambda: fully_in_sync(loop.settings, loop.settings.topics.control), 120)


def _exactly_once(tally: Tally) -> None:
    assert tally.lost == {"predictions": 0, "outcomes": 0, "feedback": 0}, tally
    assert tally.doubled == {"predictions": 0, "outcomes": 0, "feedback": 0}, tally


def _since(start: float) -> float:
    return round(time.monotonic() - start, 1)


def _latest_command(loop: ChaosLoop) -> ControlCommand:
    reader = make_broadcast_reader(loop.settings, loop.settings.topics.control, "c")
    return read_control_topic(reader, load_keyring(loop.settings)).latest[MODEL]


def _no_canary(config: ModelConfig) -> ModelConfig:
    return replace(config, canary_version=None, canary_basis_points=0)


def _rolled_back(loop: ChaosLoop) -> bool:
    return all(c is not None and c.canary_version is None for c in loop.fleet.configs())


def test_sigkill_of_the_partition_leader_loses_nothing_and_a_breach_is_still_rolled_back(
    loop: ChaosLoop, kafka_cluster: KafkaCluster
) -> None:
    """The leader dies just as a canary starts failing: writes move to the new leaders, the
    guard still rolls the canary back, and we time that from the breach becoming measurable
    (the guard's minimum sample of canary requests, all failing)."""
    settings = loop.settings
    mark = loop.mark()
    topic = settings.topics.predictions
    flaky = loop.flaky["v3"]
    flaky.failing.set()
    errors_before = loop.traffic.failed
    # The replicas' own guards act in this scenario: the fast path that needs no Kafka.
    for guard in loop.local_guards:
        guard.armed.set()
    canary = loop.publish(
        CommandKind.SET_CANARY, lambda c: replace(c, canary_version="v3", canary_basis_points=5_000)
    )
    assert wait_for(lambda: min(loop.fleet.applied_sequence()) >= canary, 60)
    victim = leaders(settings, topic)[0][0]
    control = settings.topics.control
    victim_led_control = leaders(settings, control)[0][0] == victim
    acked_at_kill = loop.load.acked_predictions()
    rolled_back_at: list[float] = []
    # Per replica: when it stopped routing to v3, and whether by its local guard (the command
    # it applied still had v3) or by the central guard's rollback.
    out_of_traffic: dict[int, tuple[float, str]] = {}

    def watch_rollback() -> None:
        if wait_for(lambda: _rolled_back(loop), 180, 0.01):
            rolled_back_at.append(time.monotonic())

    def watch_replicas() -> None:
        replicas = loop.fleet.replicas
        deadline = time.monotonic() + 180
        while len(out_of_traffic) < len(replicas) and time.monotonic() < deadline:
            for index, replica in enumerate(replicas):
                if index in out_of_traffic:
                    continue
                if routed_canary(replica.predictor.config_of(MODEL)) != "v3":
                    commanded = loop.fleet.configs()[index]
                    by = "local" if commanded and commanded.canary_version == "v3" else "central"
                    out_of_traffic[index] = (time.monotonic(), by)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch_rollback, daemon=True)
    watcher.start()
    replica_watcher = threading.Thread(target=watch_replicas, daemon=True)
    replica_watcher.start()
    killed = time.monotonic()
    kafka_cluster.broker.kill_node(victim)
    assert wait_for(
        lambda: all(leader not in (victim, -1) for leader, _ in leaders(settings, topic).values()),
        180,
        0.1,
    )
    leaders_moved_s = _since(killed)
    # No rollback can be published before the control partition has a live leader again.
    assert wait_for(lambda: leaders(settings, control)[0][0] not in (victim, -1), 180, 0.1)
    control_writable_s = _since(killed)
    # Writes go on without the victim (min ISR 2 of 3)...
    assert wait_for(lambda: loop.load.acked_predictions() >= acked_at_kill + 2 * PAIRS_PER_SECOND)
    writes_resumed_s = _since(killed)
    watcher.join(180)
    replica_watcher.join(180)
    flaky.failing.clear()
    for guard in loop.local_guards:
        guard.armed.clear()
    assert rolled_back_at, f"canary never rolled back:\n{loop.guard_diagnosis()}"
    assert len(out_of_traffic) == len(loop.fleet.replicas), out_of_traffic
    failures = loop.traffic.failed_at[errors_before:]
    assert len(failures) >= GUARD_MIN_REQUESTS, "rolled back before the breach was measurable?"
    measurable_at = failures[GUARD_MIN_REQUESTS - 1]
    local_guard = []
    # The traffic thread appends to both lists as failures come: pair only what both hold.
    failed_on = loop.traffic.failed_on[errors_before:]
    for index, (out_at, by) in sorted(out_of_traffic.items()):
        # A replica's guard judges its own answers: the breach is measurable there at its own
        # minimum sample of failing canary answers.
        own = [at for at, on in zip(failures, failed_on, strict=False) if on == index]
        own_measurable = own[GUARD_MIN_REQUESTS - 1] if len(own) >= GUARD_MIN_REQUESTS else None
        local_guard.append(
            {
                "replica": index,
                "out_of_traffic_by": by,
                "out_of_traffic_after_kill_s": round(out_at - killed, 3),
                "own_failures": len(own),
                "measurable_here_after_kill_s": (
                    None if own_measurable is None else round(own_measurable - killed, 3)
                ),
                "measurable_here_to_out_of_traffic_s": (
                    None if own_measurable is None else round(out_at - own_measurable, 3)
                ),
            }
        )
    rollback = _latest_command(loop)
    assert rollback.kind is CommandKind.ROLLBACK and rollback.sequence > canary, rollback
    kafka_cluster.broker.start()
    # ...and the victim comes back into every ISR.
    assert wait_for(lambda: fully_in_sync(settings, topic))
    rejoined_s = _since(killed)
    with loop.fleet_watcher() as fleet_status:
        fleet_status.read_to_end(10)
        assert wait_for(lambda: loop.process_replica_applied(fleet_status) >= rollback.sequence)
    injected = loop.traffic.failed - errors_before
    breach_to_rollback_s = rolled_back_at[0] - measurable_at
    # When Kafka could take the failing canary's predictions and the rollback again.
    writable_at = killed + max(leaders_moved_s, control_writable_s)
    tally = loop.report(
        "broker_failover",
        mark,
        fault="SIGKILL of the partition leader broker (3 nodes, RF 3, min ISR 2) as a canary "
        "(v3 at 50 %) starts failing, then the broker's restart",
        recover_s=writes_resumed_s,
        leaders_moved_s=leaders_moved_s,
        rejoined_isr_s=rejoined_s,
        breach={
            "measurable_after_kill_s": round(measurable_at - killed, 2),
            "measurable_to_rolled_back_s": round(breach_to_rollback_s, 3),
            "first_failure_to_rolled_back_s": round(rolled_back_at[0] - failures[0], 3),
            "victim_led_control": victim_led_control,
            "control_writable_after_kill_s": control_writable_s,
            "writable_to_rolled_back_s": round(
                rolled_back_at[0] - max(writable_at, measurable_at), 3
            ),
            "target_s": 1.0,
            "meets_target": breach_to_rollback_s <= 1.0,
            "rollback_decided_by": rollback.details.get("decided_by"),
            "local_guard": local_guard,
        },
        injected_canary_errors=injected,
    )
    _exactly_once(tally)
    # Every serving error was one of the injected canary failures.
    assert loop.serving_since(mark)["errors"] == injected


def test_sigkill_of_a_processor_worker_loses_and_doubles_nothing(loop: ChaosLoop) -> None:
    mark = loop.mark()
    acked_at_kill = loop.load.acked_predictions()
    killed = time.monotonic()
    loop.run.kill_worker("worker-1")
    # Load goes on while it is gone (its partitions move to worker-0 after its session ends).
    assert wait_for(lambda: loop.load.acked_predictions() >= acked_at_kill + 5 * PAIRS_PER_SECOND)
    loop.run.start_worker(1, free_port())
    restarted_s = _since(killed)
    # Recovered: everything acknowledged up to now is in ClickHouse.
    assert loop.wait_landed()[1] is not None, loop.logs()
    recover_s = _since(killed)
    assert loop.run.workers["worker-1"].poll() is None, loop.run.worker_log("worker-1")
    tally = loop.report(
        "worker_kill",
        mark,
        fault="SIGKILL of one of two processor workers, restarted after 5 s of load",
        recover_s=recover_s,
        restarted_s=restarted_s,
    )
    _exactly_once(tally)
    assert loop.serving_since(mark)["errors"] == 0


def test_sigkill_of_the_metrics_service_mid_rollout_still_rolls_back_a_breach(
    loop: ChaosLoop,
) -> None:
    mark = loop.mark()
    started = loop.cli(
        "rollout", "start", MODEL, "--candidate", "v2", "--steps", "50,100",
        "--bake-s", "600", "--min-sample", "1000000",
        "--max-p99-latency-ratio", "0", "--latency-ratio-tolerance", "0",
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    assert wait_for(
        lambda: [c and c.canary_basis_points for c in loop.fleet.configs()] == [5_000, 5_000], 60
    ), loop.fleet.configs()
    rollout = min(loop.fleet.applied_sequence())
    # The step collects healthy evidence under the service, which then dies.
    sent = loop.traffic.sent
    assert wait_for(lambda: loop.traffic.sent >= sent + 2 * GUARD_MIN_REQUESTS)
    assert loop.metrics is not None
    killed = time.monotonic()
    loop.metrics.kill()
    # While it is down the canary starts failing: the breach waits for the restarted guard.
    errors_before = loop.traffic.failed
    loop.fleet.flaky.failing.set()
    try:
        assert wait_for(lambda: loop.traffic.failed >= errors_before + GUARD_MIN_REQUESTS // 2)
        restarted = time.monotonic()
        # Not waiting for /readyz: the clock runs from the restart to the rollback applied.
        loop.start_metrics(ready=False)
        ready_at: list[float] = []

        def rolled_back_and_ready() -> bool:
            if not ready_at and loop.metrics_ready():
                ready_at.append(time.monotonic())
            return bool(ready_at) and _rolled_back(loop)

        assert wait_for(rolled_back_and_ready, 300), f"{loop.fleet.configs()}\n{loop.metrics_log()}"
        rolled_back_s = _since(restarted)
        ready_s = round(ready_at[0] - restarted, 1)
    finally:
        loop.fleet.flaky.failing.clear()
    injected = loop.traffic.failed - errors_before
    rollback = _latest_command(loop)
    assert rollback.kind is CommandKind.ROLLBACK, rollback
    assert rollback.sequence > rollout
    # Converged on every live replica, the process one included.
    with loop.fleet_watcher() as watcher:
        watcher.read_to_end(10)
        assert wait_for(lambda: loop.process_replica_applied(watcher) >= rollback.sequence, 60)
    tally = loop.report(
        "metrics_kill",
        mark,
        fault="SIGKILL of `safeloop metrics run` during a progressive rollout (v2 at 50 %); "
        "the canary breaches while it is down",
        recover_s=rolled_back_s,
        metrics_ready_after_restart_s=ready_s,
        rolled_back_after_restart_s=rolled_back_s,
        down_s=round(restarted - killed, 1),
        rollback_decided_by=rollback.details.get("decided_by"),
        injected_canary_errors=injected,
    )
    _exactly_once(tally)
    # Every serving error was one of the injected canary failures.
    assert loop.serving_since(mark)["errors"] == injected


def test_a_replica_killed_while_a_rollback_is_published_comes_back_rolled_back(
    loop: ChaosLoop,
) -> None:
    mark = loop.mark()
    canary = loop.publish(
        CommandKind.SET_CANARY,
        lambda c: replace(c, canary_version="v4", canary_basis_points=5_000),
    )
    with loop.fleet_watcher() as watcher:
        watcher.read_to_end(10)
        assert wait_for(
            lambda: (
                loop.process_replica_applied(watcher) >= canary
                and min(loop.fleet.applied_sequence()) >= canary
            ),
            60,
        )
        killed = time.monotonic()
        loop.kill_replica()
        rollback = loop.publish(CommandKind.ROLLBACK, _no_canary)
        assert wait_for(lambda: min(loop.fleet.applied_sequence()) >= rollback, 60)
        live_converged_s = _since(killed)
        restarted = time.monotonic()
        loop.start_replica()
        assert wait_for(
            lambda: loop.process_replica_applied(watcher) == rollback and loop.replica_ready(),
            120,
        ), f"replica process never applied rollback {rollback}"
        converged_s = _since(restarted)
    assert all(c is not None and c.canary_version is None for c in loop.fleet.configs())
    tally = loop.report(
        "replica_kill",
        mark,
        fault="SIGKILL of a `safeloop serve` replica; a rollback published while it is down; "
        "restarted",
        recover_s=converged_s,
        live_replicas_converged_s=live_converged_s,
        restarted_replica_converged_s=converged_s,
        rollback_sequence=rollback,
    )
    _exactly_once(tally)
    assert loop.serving_since(mark)["errors"] == 0


def test_clickhouse_down_then_back_loses_and_doubles_nothing(loop: ChaosLoop) -> None:
    mark = loop.mark()
    acked_at_stop = loop.load.acked_predictions()
    metrics_log_at_stop = loop.metrics_log_size()
    assert loop.warehouse.stop()
    stopped = time.monotonic()
    # Kafka keeps acknowledging while the workers' inserts fail and back off.
    assert wait_for(
        lambda: (
            time.monotonic() - stopped >= OUTAGE_S
            and loop.load.acked_predictions() > acked_at_stop + PAIRS_PER_SECOND
        ),
        OUTAGE_S + 120,
    )
    down_s = _since(stopped)
    restarted = time.monotonic()
    loop.warehouse.start()
    assert loop.wait_landed()[1] is not None, loop.logs()
    recover_s = _since(restarted)
    for name, worker in loop.run.workers.items():
        assert worker.poll() is None, loop.run.worker_log(name)
    assert loop.metrics is not None and loop.metrics.process.poll() is None
    # `metrics run` backed off and reported the outage, not each failed snapshot (at the
    # tier's 0.5 s snapshot interval that was 120 ERROR lines a minute, each with two more
    # from urllib3 and clickhouse-connect).
    assert wait_for(lambda: "snapshots written again" in loop.metrics_log(metrics_log_at_stop))
    during = loop.metrics_log(metrics_log_at_stop)
    reports = OUTAGE_S / REPORT_EVERY_S + 2
    failed_lines = during.count("snapshot not written")
    library_lines = during.count(" urllib3.") + during.count(" clickhouse_connect.")
    assert 1 <= failed_lines <= reports, during
    assert library_lines <= 2 * reports, during
    tally = loop.report(
        "clickhouse_outage",
        mark,
        fault=f"ClickHouse endpoint stopped for {OUTAGE_S:g} s, then started again",
        recover_s=recover_s,
        outage_s=down_s,
        metrics_log_lines_during_outage=len(during.splitlines()),
    )
    _exactly_once(tally)
    assert loop.serving_since(mark)["errors"] == 0


def _flag_through_the_cli(loop: ChaosLoop, value: str) -> tuple[int, bool]:
    """Set a flag as an operator does, with `safeloop flag`, in one attempt: the CLI waits out
    a control partition with no leader. The sequence, and whether the CLI said it waited."""
    done = loop.cli("flag", MODEL, "chaos", value, "--reason", "chaos: an operator's command")
    assert done.returncode == 0, done.stdout + done.stderr
    published = re.search(r"sequence (\d+)", done.stdout)
    assert published is not None, done.stdout
    return int(published.group(1)), "no reachable leader" in done.stderr


def test_everything_at_once_loses_and_doubles_nothing_and_control_converges(
    loop: ChaosLoop, kafka_cluster: KafkaCluster
) -> None:
    """The faults above together, seconds apart: the partition leader broker, a processor
    worker and the replica process SIGKILLed, ClickHouse stopped, and an operator's command
    published in the middle of it; then everything restarted."""
    settings = loop.settings
    topic = settings.topics.predictions
    mark = loop.mark()
    victim = leaders(settings, topic)[0][0]
    victim_led_control = leaders(settings, settings.topics.control)[0][0] == victim
    started = time.monotonic()
    kafka_cluster.broker.kill_node(victim)
    loop.run.kill_worker("worker-1")
    assert loop.warehouse.stop()
    loop.kill_replica()
    try:
        # An operator changes a flag while all of that is down.
        flag, waited_for_leader = _flag_through_the_cli(loop, "combined")
        published_s = _since(started)
        assert wait_for(lambda: min(loop.fleet.applied_sequence()) >= flag, 120)
        live_converged_s = _since(started)
        # The label feed keeps being acknowledged through it all.
        acked = loop.load.acked_predictions()
        assert wait_for(lambda: loop.load.acked_predictions() >= acked + 5 * PAIRS_PER_SECOND)
        assert wait_for(
            lambda: time.monotonic() - started >= ALL_AT_ONCE_DOWN_S, ALL_AT_ONCE_DOWN_S + 10
        )
    finally:
        # Restarted whatever happened: the tests after this one get the whole loop back.
        down_s = _since(started)
        loop.warehouse.start()
        loop.run.start_worker(1, free_port())
        loop.start_replica()
        kafka_cluster.broker.start()
    with loop.fleet_watcher() as watcher:
        watcher.read_to_end(10)
        assert wait_for(
            lambda: loop.process_replica_applied(watcher) >= flag and loop.replica_ready(), 300
        ), f"replica process never applied {flag}"
    replica_converged_s = _since(started)
    assert wait_for(lambda: fully_in_sync(settings, topic), 300)
    rejoined_s = _since(started)
    assert loop.wait_landed()[1] is not None, loop.logs()
    recover_s = _since(started)
    for name, worker in loop.run.workers.items():
        assert worker.poll() is None, loop.run.worker_log(name)
    tally = loop.report(
        "combined",
        mark,
        fault="all at once: SIGKILL of the partition leader broker, of a processor worker and "
        f"of the replica process, ClickHouse stopped for {ALL_AT_ONCE_DOWN_S:g} s, a flag "
        "published meanwhile; then all restarted",
        recover_s=recover_s,
        down_s=down_s,
        victim_led_control=victim_led_control,
        cli_waited_for_a_leader=waited_for_leader,
        command_published_s=published_s,
        live_replicas_converged_s=live_converged_s,
        restarted_replica_converged_s=replica_converged_s,
        rejoined_isr_s=rejoined_s,
    )
    _exactly_once(tally)
    assert loop.serving_since(mark)["errors"] == 0
