"""Monitoring that survives restarts: `safeloop metrics run` is SIGKILLed mid-rollout and
started again; the rebuilt windows let the rollout finish its step (no evidence re-collected)
and let the guard roll back a canary whose breach needs evidence read before the kill."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from _metrics_harness import MODEL, Fleet, Traffic, fleet, metrics_settings, wait_for
from _metrics_process import metrics_process
from confluent_kafka import TopicPartition

from safeloop.infra.kafka.clients import make_consumer
from safeloop.infra.settings import Settings
from safeloop.schemas.events import CommandKind, ControlCommand, Route
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.keys import load_keyring
from safeloop.services.control.publisher import read_control_topic
from safeloop.services.monitor.wiring import GROUP_PREFIX
from safeloop.services.rollout.persist import rollout_of
from safeloop.services.serving.predictor import Prediction

pytestmark = pytest.mark.integration

# The guard needs more canary requests than either phase sends on its own: only windows
# rebuilt from what was read before the kill let it judge.
GUARD_MIN_REQUESTS = 200
STEP_CANARY_REQUESTS = 150
FAILING_REQUESTS = 60
METRICS_ARGS = [
    "--snapshot-interval-s", "0.3", "--rollout-tick-s", "0.2",
    "--min-requests", str(GUARD_MIN_REQUESTS),
    "--max-p99-latency-ratio", "0", "--max-performance-drop", "0",
]  # fmt: skip
ROLLOUT = [
    "rollout", "start", MODEL, "--candidate", "v2", "--steps", "50,100", "--bake-s", "60",
    "--min-sample", "100", "--max-p99-latency-ratio", "0", "--latency-ratio-tolerance", "0",
]  # fmt: skip


def _committed_everything(settings: Settings) -> bool:
    """The metrics group committed every prediction: a restart resumes after all of them."""
    topic = settings.topics.predictions
    consumer = make_consumer(settings, f"{GROUP_PREFIX}-predictions")
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, 10)}
        for tp in partitions:
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            if high > 0 and committed.get(tp.partition, -1) < high:
                return False
        return True
    finally:
        consumer.close()


def _send_until(replicas: Fleet, done: threading.Event, on: object) -> None:
    traffic = Traffic(replicas, 200, on_prediction=on)  # type: ignore[arg-type]
    traffic.start()
    try:
        assert done.wait(30), "traffic never reached its count"
    finally:
        traffic.stop()


def _canary_percent(replicas: Fleet) -> list[int]:
    return [0 if c is None else c.canary_basis_points for c in replicas.configs()]


def test_killed_mid_rollout_the_step_and_the_guard_carry_on(
    stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    settings = metrics_settings(stack.fresh("restart"), tmp_path / "models")
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    from safeloop.services.cli.main import main

    with fleet(settings, local_guard=False) as replicas:
        first = metrics_process(settings, *METRICS_ARGS)
        process = first.__enter__()
        try:
            assert main(ROLLOUT) == 0, capsys.readouterr().out
            assert wait_for(lambda: _canary_percent(replicas) == [5_000, 5_000], 30)
            started = min(replicas.applied_sequence())
            # Step 1 (50 %) gets its evidence, then the service dies before the step is baked.
            canary = [0]
            enough = threading.Event()

            def count(answer: Prediction) -> None:
                if answer.route is Route.CANARY:
                    canary[0] += 1
                    if canary[0] >= STEP_CANARY_REQUESTS:
                        enough.set()

            _send_until(replicas, enough, count)
            # On a loaded box the snapshot (and so the commit) can take tens of seconds.
            assert wait_for(lambda: _committed_everything(settings), 45)
            assert _canary_percent(replicas) == [5_000, 5_000], "step passed before the kill"
            process.kill()
        finally:
            first.__exit__(None, None, None)
        assert canary[0] < GUARD_MIN_REQUESTS

        # Restarted, with no traffic at all: only the rebuilt evidence can pass the step.
        with metrics_process(settings, *METRICS_ARGS) as process:
            assert wait_for(lambda: _canary_percent(replicas) == [10_000, 10_000], 120), (
                f"step not finished after the restart: {replicas.configs()}"
            )
            # The step went on (one more command), it did not start over at 50 %.
            assert min(replicas.applied_sequence()) == started + 1
            process.kill()
        passed = _latest_command(settings)
        carried = rollout_of(passed.details)
        assert carried is not None
        state = carried[1]
        assert state.step_index == 1
        assert state.last_gate is not None and state.last_gate.outcome.value == "pass"

        # While the service is down the canary fails; alone these failures are too few to judge.
        replicas.flaky.failing.set()
        traffic = Traffic(replicas, 200)
        traffic.start()
        try:
            assert wait_for(lambda: traffic.failed >= FAILING_REQUESTS, 30)
        finally:
            traffic.stop()
        assert traffic.failed < GUARD_MIN_REQUESTS
        with metrics_process(settings, *METRICS_ARGS):
            assert wait_for(
                lambda: all(c is not None and c.canary_version is None for c in replicas.configs()),
                30,
            ), f"canary not rolled back after the restart: {replicas.configs()}"
        rollback = _latest_command(settings)
        assert rollback.kind is CommandKind.ROLLBACK
        assert rollback.details["decided_by"] == "central_guard"
        assert int(rollback.details["canary_requests"]) >= GUARD_MIN_REQUESTS, rollback.details


def _latest_command(settings: Settings) -> ControlCommand:
    reader = make_broadcast_reader(settings, settings.topics.control, "it")
    return read_control_topic(reader, load_keyring(settings)).latest[MODEL]
