"""Harness for the serving and control integration tests: topics, models, keys, replicas.

Runs on the session's Kafka (tests/conftest.py `kafka`); a test that stops Kafka itself asks
for a private broker on free ports instead.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from _waiting import poller

from safeloop.infra.kafka.broker import LocalKafkaBroker
from safeloop.infra.kafka.topics import TopicAdmin, topic_specs
from safeloop.infra.portcheck import free_port
from safeloop.infra.settings import Secret, Settings
from safeloop.schemas.events import ReplicaState
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.fleet import FleetWatcher
from safeloop.services.control.keys import KeyRing, load_keyring
from safeloop.services.models.store import ModelStore
from safeloop.services.models.task import ModelTask
from safeloop.services.models.training import make_dataset, train_model
from safeloop.services.serving.replica import Replica

REPO = Path(__file__).resolve().parents[2]
KEY_HEX = "5a" * 32
FEATURES = {"age": 0.3, "income": -1.2, "tenure_months": 0.8, "sessions_7d": 1.5}


wait_for = poller(30.0, 0.05)


@dataclass
class ServingStack:
    settings: Settings
    env: dict[str, str]
    keys: KeyRing
    broker: LocalKafkaBroker | None

    def replica(self, replica_id: str, **overrides: Any) -> Replica:
        settings = replace(self.settings, **overrides) if overrides else self.settings
        replica = Replica(settings, replica_id)
        replica.start()
        return replica

    def wait_reported_ready(self, replica_ids: list[str], timeout_s: float = 30.0) -> bool:
        """True once replica-status shows every one of `replica_ids` READY (what --wait sees)."""
        reader = make_broadcast_reader(self.settings, self.settings.topics.replica_status, "t")
        with FleetWatcher(reader, self.settings.replica_liveness_ms) as watcher:
            watcher.read_to_end(timeout_s)

            def all_ready() -> bool:
                replicas = watcher.update(0.1).replicas
                return all(
                    r in replicas and replicas[r].state is ReplicaState.READY for r in replica_ids
                )

            return bool(wait_for(all_ready, timeout_s))


def _train_models(store: ModelStore) -> None:
    for seed, version in enumerate(("v1", "v2", "v3")):
        dataset = make_dataset(ModelTask.CLASSIFICATION, 2000, seed=seed)
        store.save(*train_model("churn", version, ModelTask.CLASSIFICATION, dataset))
        # created_at_ms orders versions; keep them distinct.
        time.sleep(0.002)


@contextmanager
def serving_stack(state_dir: Path, kafka: Settings | None = None) -> Iterator[ServingStack]:
    """Topics under a unique prefix, demo models and an operator key, on the session's Kafka
    (`kafka`, from tests/conftest.py) or, without it, on a private broker this stack owns."""
    bootstrap = kafka.bootstrap_servers if kafka is not None else ""
    env = {
        "SAFELOOP_STATE_DIR": str(state_dir),
        "SAFELOOP_CACHE_DIR": str(REPO / ".cache"),
        "SAFELOOP_TOPIC_PREFIX": f"it-{uuid.uuid4().hex[:8]}.",
        "SAFELOOP_CONTROL_KEY": KEY_HEX,
        "SAFELOOP_CONTROL_KEY_ID": "it-key",
        "SAFELOOP_STATUS_HEARTBEAT_MS": "300",
        "SAFELOOP_REPLICA_LIVENESS_MS": "3000",
        "SAFELOOP_LOG_LEVEL": "INFO",
    }
    if kafka is not None:
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        env.update(kafka.kafka_client_env())
    else:
        env["SAFELOOP_KAFKA_PORT"] = str(free_port())
        env["SAFELOOP_KAFKA_CONTROLLER_PORT"] = str(free_port())
    settings = Settings.from_env(env)
    broker = None if bootstrap else LocalKafkaBroker(settings)
    if broker is not None:
        broker.start()
    try:
        TopicAdmin.from_settings(settings).ensure(topic_specs(settings))
        _train_models(ModelStore(settings.models_path))
        yield ServingStack(settings, env, load_keyring(settings), broker)
    finally:
        if broker is not None:
            broker.stop()


def settings_with_key(settings: Settings, key_hex: str, key_id: str) -> Settings:
    return replace(settings, control_key=Secret(key_hex), control_key_id=key_id)
