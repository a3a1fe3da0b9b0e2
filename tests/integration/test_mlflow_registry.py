"""MLflow as the model registry, the embedded SQLite one under a temporary state dir: versions
keep their baseline and holdout metrics, `safeloop serve` loads `models:/NAME@champion`, and
promotion and rollback move the champion alias with the control command's sequence and reason
as tags (whether an operator's CLI or the metrics process sent the command)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest
from _serving_harness import FEATURES, REPO, ServingStack, free_port, serving_stack, wait_for
from conftest import Stack
from mlflow.tracking import MlflowClient

from safeloop.infra.settings import Settings
from safeloop.schemas.events import CommandKind, ModelConfig
from safeloop.services.cli.main import main
from safeloop.services.control.champion_alias import ChampionAliasSync
from safeloop.services.control.follower import ControlFollower
from safeloop.services.control.issuer import CommandIssuer
from safeloop.services.models.metadata import ModelMetadata
from safeloop.services.models.open_store import open_model_store
from safeloop.services.models.store_protocol import CHAMPION_ALIAS, ModelStoreProtocol
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model
from safeloop.services.monitor.wiring import build_issuer, follow_champion, start_follower

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


@dataclasses.dataclass
class Registry:
    serving: ServingStack
    store: ModelStoreProtocol
    trained: dict[str, ModelMetadata]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, stack: Stack) -> Iterator[Registry]:
    warehouse = stack.fresh("mlflow")
    with serving_stack(tmp_path_factory.mktemp("mlflow"), warehouse) as serving:
        serving.env.update({name: warehouse.to_env()[name] for name in WAREHOUSE_VARS})
        serving.env["SAFELOOP_MODEL_STORE"] = "mlflow"
        serving.settings = Settings.from_env(serving.env)
        store = open_model_store(serving.settings)
        trained = {}
        for seed, label in enumerate(("v1", "v2")):
            dataset = make_dataset(ModelTask.CLASSIFICATION, 1000, tuple(FEATURES), seed=seed)
            model, metadata = train_model("churn", label, ModelTask.CLASSIFICATION, dataset)
            version = store.save(model, metadata, tags={"safeloop.lineage": f"seed {seed}"})
            trained[version] = metadata
        yield Registry(serving, store, trained)


@pytest.fixture
def cli(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    for name, value in registry.serving.env.items():
        monkeypatch.setenv(name, value)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_a_registered_version_keeps_its_baseline_and_holdout_metrics(registry: Registry) -> None:
    store = registry.store
    assert store.names() == ["churn"]
    assert store.versions("churn") == ["1", "2"]
    assert registry.trained["1"].version == "v1"
    stored = store.load_metadata("churn", "2")
    trained = registry.trained["2"]
    assert stored.version == "2"
    assert stored.baseline.to_dict() == trained.baseline.to_dict()
    assert stored.metrics == trained.metrics
    tags = store.version_tags("churn", "2")
    assert tags["safeloop.trained_as"] == "v2"
    assert tags["safeloop.lineage"] == "seed 1"
    # What MLflow's UI shows: the run's holdout metrics beside the registered version.
    client = MlflowClient(registry.serving.settings.mlflow_uri)
    run = client.get_run(client.get_model_version("churn", "2").run_id)
    assert run.data.metrics["holdout_accuracy"] == pytest.approx(trained.metrics["accuracy"])
    loaded = store.load("churn", "2")
    assert loaded.model.version == "2"
    assert 0.0 < loaded.model.predict(FEATURES) < 1.0


def _predicted_version(url: str) -> str:
    answer = httpx.post(f"{url}/predict", json={"routing_key": "u-1", "features": FEATURES})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["model_version"])


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _champion_moved_to(
    store: ModelStoreProtocol, follower: ControlFollower, version: str
) -> Callable[[], bool]:
    def moved() -> bool:
        follower.poll(0.1)
        return store.alias_version("churn", CHAMPION_ALIAS) == version

    return moved


def test_serve_by_alias_then_promotion_and_rollback_move_the_alias_with_tags(
    registry: Registry, cli: Cli
) -> None:
    store, settings = registry.store, registry.serving.settings
    store.set_alias("churn", CHAMPION_ALIAS, "1", {"safeloop.control_reason": "first champion"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        "serve",
        "--replica-id",
        "ml-1",
        "--port",
        str(port),
        "--model",
        "models:/churn@champion",
    ]
    server = subprocess.Popen(
        [sys.executable, "-m", "safeloop.services.cli.main", *argv],
        cwd=REPO,
        env={**os.environ, **registry.serving.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    follower = start_follower(settings, label="metrics")
    issuer: CommandIssuer = build_issuer(settings, follower, store)
    champion: ChampionAliasSync = follow_champion(store, follower, issuer)
    try:
        # MLflow takes seconds to import on a loaded machine.
        assert wait_for(lambda: _ready(url) or server.poll() is not None, timeout_s=180)
        assert server.poll() is None, server.communicate()[1]
        assert _predicted_version(url) == "1"

        # An operator's canary and promotion: the alias follows production to version 2.
        code, _, err = cli("canary", "churn", "--percent", "10", "--version", "2", "--force")
        assert code == 0, err
        code, out, err = cli("promote", "churn", "--reason", "canary healthy", "--json")
        assert code == 0, err
        promotion = json.loads(out)["command"]
        assert wait_for(_champion_moved_to(store, follower, "2"), timeout_s=60)
        tags = store.version_tags("churn", "2")
        assert tags["safeloop.control_kind"] == "promote"
        assert tags["safeloop.control_reason"] == "canary healthy"
        assert tags["safeloop.control_sequence"] == str(promotion["sequence"])
        assert tags["safeloop.previous_champion"] == "1"
        assert wait_for(lambda: _predicted_version(url) == "2", timeout_s=30)

        # The metrics process's own rollback (the guard's path) moves it back to version 1.
        def back_to_one(config: ModelConfig) -> ModelConfig:
            return dataclasses.replace(config, production_version="1", canary_version=None)

        rollback = issuer.issue(
            "churn", CommandKind.ROLLBACK, back_to_one, reason="guard: error rate", details={}
        )
        assert wait_for(_champion_moved_to(store, follower, "1"), timeout_s=60)
        tags = store.version_tags("churn", "1")
        assert tags["safeloop.control_kind"] == "rollback"
        assert tags["safeloop.control_reason"] == "guard: error rate"
        assert tags["safeloop.control_sequence"] == str(rollback.sequence)
        assert tags["safeloop.previous_champion"] == "2"
        # The registered model keeps every move, keyed by sequence (MLflow's UI lists them).
        model_tags = MlflowClient(settings.mlflow_uri).get_registered_model("churn").tags
        history = {k: v for k, v in model_tags.items() if k.startswith("safeloop.champion.")}
        assert f"safeloop.champion.{promotion['sequence']:08d}" in history
        assert history[f"safeloop.champion.{rollback.sequence:08d}"].startswith("champion -> 1;")
        assert wait_for(lambda: _predicted_version(url) == "1", timeout_s=30)
    finally:
        champion.stop()
        follower.close()
        server.terminate()
        server.communicate(timeout=30)


def test_model_train_and_list_use_the_registry(registry: Registry, cli: Cli) -> None:
    code, out, err = cli("model", "train", "churn", "--version", "v3", "--rows", "500", "--json")
    assert code == 0, err
    trained = json.loads(out)
    assert trained["version"] == "3"
    assert registry.store.version_tags("churn", "3")["safeloop.trained_as"] == "v3"
    code, out, err = cli("model", "list", "--json")
    assert code == 0, err
    listing = json.loads(out)
    assert listing["models"] == {"churn": ["1", "2", "3"]}
    assert listing["champion"] == {"churn": "1"}
    assert listing["store"].startswith("sqlite:///")
