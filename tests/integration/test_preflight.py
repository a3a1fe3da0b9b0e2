"""Pre-flight against real replicas, Kafka and ClickHouse: a canary whose version needs a
feature production traffic does not carry, or that a replica cannot load, is refused with the
reason before anything is published; `--force` sends it anyway."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from _serving_harness import FEATURES, ServingStack, serving_stack, wait_for
from conftest import Stack

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.infra.settings import Settings
from safeloop.schemas.events import ErrorKind, PredictionEvent, Route
from safeloop.schemas.tables import PREDICTIONS
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.cli.main import main
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.fleet import FleetWatcher
from safeloop.services.control.publisher import read_control_topic
from safeloop.services.models.store import ARTIFACT_FILE, ModelStore
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model
from safeloop.services.serving.replica import Replica

pytestmark = pytest.mark.integration

Cli = Callable[..., tuple[int, str, str]]
WAREHOUSE_VARS = (
    "CLICKHOUSE_URL",
    "CLICKHOUSE_USER",
    "CLICKHOUSE_PASSWORD",
    "CLICKHOUSE_DATABASE",
    "SAFELOOP_WAREHOUSE_HOST",
    "SAFELOOP_WAREHOUSE_PORT",
)
# v4 needs one feature more than production's callers send.
V4_FEATURES = (*FEATURES, "region_code")


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[ServingStack]:
    warehouse = stack.fresh("preflight")
    with serving_stack(tmp_path_factory.mktemp("preflight"), warehouse) as serving:
        serving.env.update({name: warehouse.to_env()[name] for name in WAREHOUSE_VARS})
        serving.settings = Settings.from_env(serving.env)
        store = ModelStore(serving.settings.models_path)
        dataset = make_dataset(ModelTask.CLASSIFICATION, 500, V4_FEATURES, seed=4)
        store.save(*train_model("churn", "v4", ModelTask.CLASSIFICATION, dataset))
        yield serving


@pytest.fixture(scope="module")
def replicas(serving: ServingStack) -> Iterator[list[Replica]]:
    started = [serving.replica("replica-a"), serving.replica("replica-b")]
    try:
        for replica in started:
            assert replica.wait_ready(30), f"{replica.replica_id} never caught up"
        assert serving.wait_reported_ready([replica.replica_id for replica in started])
        yield started
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture
def cli(
    serving: ServingStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    for name, value in serving.env.items():
        monkeypatch.setenv(name, value)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _production_traffic(settings: Settings, count: int = 50) -> None:
    """What the stream processor lands for answered production requests (and a 422)."""
    now = time.time_ns() // 1_000_000
    events = [
        PredictionEvent(
            prediction_id=uuid.uuid4().hex,
            model_name="churn",
            model_version="v1",
            timestamp=now - index,
            features=dict(FEATURES),
            prediction=0.4,
            confidence=0.6,
            latency_ms=0.2,
            route=Route.PRODUCTION,
            replica_id="replica-a",
            routing_key=f"user-{index}",
            routing_hash_version=1,
        )
        for index in range(count)
    ]
    # A caller's junk feature on a rejected request is not something traffic "carries".
    events.append(
        PredictionEvent(
            prediction_id="rejected",
            model_name="churn",
            model_version="v1",
            timestamp=now,
            features={"junk": 1.0},
            prediction=None,
            confidence=None,
            latency_ms=0.1,
            route=Route.PRODUCTION,
            replica_id="replica-a",
            routing_key="user-x",
            routing_hash_version=1,
            error="missing features: age",
            error_kind=ErrorKind.CLIENT,
        )
    )
    insert_idempotent(clickhouse_client(settings), PREDICTIONS, PREDICTIONS.rows(events))


def _reported_loaded(serving: ServingStack, version: str) -> set[str]:
    """Replicas whose newest replica-status report says they loaded churn `version`."""
    settings = serving.settings
    reader = make_broadcast_reader(settings, settings.topics.replica_status, "t")
    with FleetWatcher(reader, settings.replica_liveness_ms) as watcher:
        snapshot = watcher.read_to_end(10)
    return {s.replica_id for s in snapshot.live() if version in s.loaded_versions.get("churn", [])}


def _canary_of(serving: ServingStack) -> str | None:
    settings = serving.settings
    view = read_control_topic(
        make_broadcast_reader(settings, settings.topics.control, "t"), serving.keys
    )
    config = view.config_of("churn")
    return None if config is None else config.canary_version


def test_model_list_shows_each_versions_features(cli: Cli) -> None:
    code, out, _ = cli("model", "list", "churn", "--json")
    assert code == ExitCode.OK
    features = json.loads(out)["features"]["churn"]
    assert features["v1"] == list(FEATURES)
    assert features["v4"] == list(V4_FEATURES)
    code, out, _ = cli("model", "list", "churn")
    assert "v4  features: " + ", ".join(V4_FEATURES) in out


def test_incompatible_canary_is_refused_and_force_sends_it(
    serving: ServingStack, replicas: list[Replica], cli: Cli
) -> None:
    _production_traffic(serving.settings)
    code, out, _ = cli("canary", "churn", "--percent", "10", "--version", "v4", "--json")
    assert code == ExitCode.FAILURE
    error = json.loads(out)["error"]
    assert "v4 needs features production traffic does not carry: region_code" in error
    assert "junk" not in error
    assert _canary_of(serving) is None, "a refused canary must not reach the control topic"

    code, out, err = cli("canary", "churn", "--percent", "10", "--version", "v2", "--wait")
    assert code == ExitCode.OK, err
    assert _canary_of(serving) == "v2"

    code, out, err = cli(
        "canary", "churn", "--percent", "10", "--version", "v4", "--force", "--wait", "--json"
    )
    assert code == ExitCode.OK, err
    assert json.loads(out)["preflight"] == {"skipped": "--force"}
    assert wait_for(
        lambda: all(
            (a := r.state.applied("churn")) is not None and a.config.canary_version == "v4"
            for r in replicas
        )
    )


def test_a_version_no_replica_can_load_is_refused_naming_the_replicas(
    serving: ServingStack, replicas: list[Replica], cli: Cli
) -> None:
    store = ModelStore(serving.settings.models_path)
    dataset = make_dataset(ModelTask.CLASSIFICATION, 500, tuple(FEATURES), seed=5)
    version = store.save(*train_model("churn", "v5", ModelTask.CLASSIFICATION, dataset))
    # The metadata is fine; the artifact is gone.
    (store.path_of("churn", version) / ARTIFACT_FILE).unlink()
    # Each replica rescans the store on its heartbeat and notes that v5 does not load.
    assert wait_for(lambda: all(("churn", "v5") in r.unloadable for r in replicas))
    code, _, err = cli("shadow", "churn", "on", "--version", "v5")
    assert code == ExitCode.FAILURE
    assert "churn v5 is not loadable on replica(s) replica-a, replica-b" in err


def test_a_version_trained_after_start_up_is_loaded_and_passes(
    serving: ServingStack, replicas: list[Replica], cli: Cli
) -> None:
    store = ModelStore(serving.settings.models_path)
    dataset = make_dataset(ModelTask.CLASSIFICATION, 500, tuple(FEATURES), seed=6)
    store.save(*train_model("churn", "v6", ModelTask.CLASSIFICATION, dataset))
    assert wait_for(lambda: all(r.catalog.has("churn", "v6") for r in replicas))
    assert wait_for(lambda: _reported_loaded(serving, "v6") == {"replica-a", "replica-b"})
    code, out, err = cli("shadow", "churn", "on", "--version", "v6", "--json")
    assert code == ExitCode.OK, err
    assert json.loads(out)["preflight"]["checked_versions"] == ["v6"]
