"""The champion alias follows production: promotions move it, rollbacks move it back, tagged."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from safeloop.schemas.events import CommandKind, ControlCommand, ModelConfig
from safeloop.services.control.champion_alias import ChampionAliasSync
from safeloop.services.models.store import ModelStore
from safeloop.services.models.store_protocol import CHAMPION_ALIAS, ModelStoreProtocol
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model


def command(sequence: int, kind: CommandKind, production: str, reason: str) -> ControlCommand:
    return ControlCommand(
        command_id=f"cmd-{sequence}",
        model_name="churn",
        kind=kind,
        sequence=sequence,
        issued_at=1000 + sequence,
        issuer="safeloop-metrics",
        reason=reason,
        config=ModelConfig(production),
        key_id="",
        signature="",
    )


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "models")
    for seed, version in enumerate(("v1", "v2")):
        dataset = make_dataset(ModelTask.CLASSIFICATION, 300, seed=seed)
        store.save(*train_model("churn", version, ModelTask.CLASSIFICATION, dataset))
    return store


def test_the_folder_store_is_a_model_store(store: ModelStore) -> None:
    assert isinstance(store, ModelStoreProtocol)


def test_promotion_moves_the_alias_and_rollback_moves_it_back_with_tags(store: ModelStore) -> None:
    sync = ChampionAliasSync(store)
    assert sync.apply(command(1, CommandKind.SET_CANARY, "v1", "canary 5%"))
    assert store.alias_version("churn", CHAMPION_ALIAS) == "v1"
    assert sync.apply(command(4, CommandKind.PROMOTE, "v2", "rollout: promoted"))
    assert store.alias_version("churn", CHAMPION_ALIAS) == "v2"
    tags = store.version_tags("churn", "v2")
    assert tags["safeloop.control_sequence"] == "4"
    assert tags["safeloop.control_kind"] == "promote"
    assert tags["safeloop.control_reason"] == "rollout: promoted"
    assert tags["safeloop.previous_champion"] == "v1"
    assert sync.apply(command(5, CommandKind.ROLLBACK, "v1", "guard: error rate"))
    assert store.alias_version("churn", CHAMPION_ALIAS) == "v1"
    back = store.version_tags("churn", "v1")
    assert (back["safeloop.control_sequence"], back["safeloop.control_kind"]) == ("5", "rollback")
    assert back["safeloop.previous_champion"] == "v2"
    assert sync.moves == 3


def test_a_command_that_keeps_production_does_not_move_the_alias(store: ModelStore) -> None:
    sync = ChampionAliasSync(store)
    sync.apply(command(1, CommandKind.PROMOTE, "v2", "promoted"))
    assert not sync.apply(command(2, CommandKind.SET_CANARY, "v2", "canary of v3"))
    assert store.version_tags("churn", "v2")["safeloop.control_sequence"] == "1"


def test_the_thread_applies_the_newest_command_and_skips_unknown_versions(
    store: ModelStore,
) -> None:
    sync = ChampionAliasSync(store, retry_s=0.01)
    sync.on_command(command(1, CommandKind.PROMOTE, "v9", "not in this store"))
    sync.on_command(command(2, CommandKind.PROMOTE, "v2", "promoted"))
    sync.on_command(command(1, CommandKind.PROMOTE, "v1", "older: ignored"))
    sync.start()
    pause = threading.Event()
    try:
        for _ in range(200):
            if sync.idle() and sync.moves:
                break
            pause.wait(0.05)
    finally:
        sync.stop()
    assert store.alias_version("churn", CHAMPION_ALIAS) == "v2"
