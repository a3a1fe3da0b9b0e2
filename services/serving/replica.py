"""One serving replica wired together: models, predictor, Kafka sink, control listener, status."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from safeloop.infra.exceptions import DeliveryError
from safeloop.infra.kafka.clients import make_producer
from safeloop.infra.kafka.produce import produce_confirmed
from safeloop.infra.settings import Settings
from safeloop.schemas.events import ControlCommand, ModelConfig, ReplicaState
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.keys import KeyRing, load_keyring
from safeloop.services.control.listener import ControlListener
from safeloop.services.control.state import AppliedConfig, ApplyOutcome, ApplyResult, ControlState
from safeloop.services.control.status_reporter import StatusReporter, status_producer_settings
from safeloop.services.guard.local import ReplicaGuard
from safeloop.services.models.exceptions import ModelError, ModelNotFoundError
from safeloop.services.models.open_store import open_model_store
from safeloop.services.models.reference import is_model_uri, parse_model_uri, resolve
from safeloop.services.models.store_protocol import ModelStoreProtocol
from safeloop.services.serving.app import create_app
from safeloop.services.serving.catalog import ModelCatalog
from safeloop.services.serving.guard_loop import GuardLoop
from safeloop.services.serving.kafka_sink import KafkaEventSink, event_producer_settings
from safeloop.services.serving.predictor import Predictor

logger = logging.getLogger(__name__)

# The warm-up tombstone's key on replica-status: readers skip tombstones (FleetWatcher) and
# compaction removes it; no replica id starts with it.
WARM_UP_KEY_PREFIX = "__warm-up__/"
WARM_UP_TIMEOUT_S = 5.0


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def load_catalog(store: ModelStoreProtocol, model_names: list[str] | None = None) -> ModelCatalog:
    """Load and validate the served models now, so a broken artifact stops the replica at
    start-up instead of failing requests later.

    A plain NAME loads every version (the store's default served first); a `models:/NAME/V`
    or `models:/NAME@ALIAS` URI loads that version, served before any control command (the
    other versions load in the background, see `Replica.load_new_versions`).
    """
    names = model_names or store.names()
    if not names:
        raise ModelNotFoundError(None)
    catalog = ModelCatalog()
    for given in names:
        if is_model_uri(given):
            reference = parse_model_uri(given)
            version = resolve(store, reference)
            catalog.add(store.load(reference.name, version), default=True)
            continue
        default = store.default_version(given)
        for version, loaded in store.load_all(given).items():
            catalog.add(loaded, default=version == default)
    return catalog


def referenced_versions(config: ModelConfig) -> set[str]:
    versions = {config.production_version}
    versions.update(
        v for v in (config.canary_version, config.shadow_version, config.fallback_version) if v
    )
    return versions


class Replica:
    """Serves predictions from local snapshots; the control listener keeps them current."""

    def __init__(
        self,
        settings: Settings,
        replica_id: str,
        *,
        model_names: list[str] | None = None,
        catalog: ModelCatalog | None = None,
        keys: KeyRing | None = None,
        guard: ReplicaGuard | None = None,
        store: ModelStoreProtocol | None = None,
    ) -> None:
        self.settings = settings
        self.replica_id = replica_id
        self.store = store if store is not None else open_model_store(settings)
        self.catalog = catalog if catalog is not None else load_catalog(self.store, model_names)
        self.keys = keys if keys is not None else load_keyring(settings)
        topics = settings.topics
        self._event_producer = make_producer(
            settings, **event_producer_settings(settings.event_buffer_messages)
        )
        self.sink = KafkaEventSink(self._event_producer, topics.predictions)
        # Ready = control state rebuilt AND the event producer has delivered once.
        self._ready_lock = threading.Lock()
        self._control_rebuilt = False
        self._events_deliver = False
        self.ready = threading.Event()
        self.warm_up_failures = 0
        self._stopping = threading.Event()
        self._warm_up = threading.Thread(
            target=self._warm_up_events, name="event-warm-up", daemon=True
        )
        self.predictor = Predictor(self.catalog, self.sink, replica_id, guard=guard)
        self.guard_loop = None if guard is None else GuardLoop(guard, self.predictor)
        # (model, version) -> why it could not be loaded; not retried (versions are immutable).
        self.unloadable: dict[tuple[str, str], str] = {}
        self.state = ControlState(self.keys, check=self._check_versions)
        self.state.subscribe(self._install)
        self.reporter = StatusReporter(
            make_producer(settings, **status_producer_settings()),
            topics.replica_status,
            replica_id,
            self.state,
            settings.status_heartbeat_ms,
            loaded_versions=self._loaded_versions,
            before_beat=self.load_new_versions,
        )
        self.listener = ControlListener(
            lambda: make_broadcast_reader(settings, topics.control, f"replica-{replica_id}"),
            self.state,
            on_result=self._on_result,
            on_ready=self._on_ready,
        )
        self._watch_metrics()
        self.app = create_app(self.predictor, health=self.health)

    def start(self) -> None:
        """Begin rebuilding control state; the replica turns ready once it has caught up."""
        self.reporter.start()
        self._warm_up.start()
        self.listener.start()
        if self.guard_loop is not None:
            self.guard_loop.start()

    def wait_ready(self, timeout_s: float) -> bool:
        """Control state rebuilt and the event producer able to deliver (what /readyz says)."""
        return self.ready.wait(timeout_s)

    def stop(self) -> None:
        self._stopping.set()
        if self.guard_loop is not None:
            self.guard_loop.stop()
        self.listener.stop()
        self.reporter.stop()
        self.sink.close()

    def health(self) -> dict[str, Any]:
        return {
            "replica_id": self.replica_id,
            "ready": self.predictor.ready,
            "config_versions": self.state.config_versions(),
            "refused_commands": self.state.refused_count,
            "models": {name: self.catalog.versions(name) for name in self.catalog.names()},
        }

    def _loaded_versions(self) -> dict[str, list[str]]:
        return {name: self.catalog.versions(name) for name in self.catalog.names()}

    def load_new_versions(self) -> list[str]:
        """Load versions of the served models added to the store since start-up (off the
        request path), so `replica-status` tells pre-flight what this replica can serve.

        Returns the versions newly loaded; a broken one is logged once and left out.
        """
        loaded: list[str] = []
        for name in self.catalog.names():
            try:
                versions = self.store.versions(name)
            except (ModelError, ValueError) as exc:
                logger.warning("cannot list versions of %s in the model store: %s", name, exc)
                continue
            for version in versions:
                if self.catalog.has(name, version) or (name, version) in self.unloadable:
                    continue
                try:
                    self.catalog.add(self.store.load(name, version))
                except (ModelError, ValueError) as exc:
                    self.unloadable[(name, version)] = str(exc)
                    logger.warning("version %s of %s cannot be loaded: %s", version, name, exc)
                    continue
                loaded.append(f"{name}/{version}")
        if loaded:
            logger.info("loaded new model versions: %s", ", ".join(loaded))
        return loaded

    def _install(self, model_name: str, applied: AppliedConfig) -> None:
        self.predictor.apply_config(model_name, applied.config, applied.sequence)

    def _on_ready(self) -> None:
        with self._ready_lock:
            self._control_rebuilt = True
        self._mark_ready_if_able()

    def _warm_up_events(self) -> None:
        """Deliver one tombstone with the event producer: until it is acknowledged (topics
        reachable, broker answering), predictions would only pile up in the buffer."""
        record = ((WARM_UP_KEY_PREFIX + self.replica_id).encode(), None)
        while not self._stopping.is_set():
            try:
                produce_confirmed(
                    self._event_producer,
                    self.settings.topics.replica_status,
                    [record],
                    WARM_UP_TIMEOUT_S,
                )
            except DeliveryError as exc:
                self.warm_up_failures += 1
                logger.warning("event producer cannot deliver yet, retrying: %s", exc)
                self._stopping.wait(0.5)
                continue
            with self._ready_lock:
                self._events_deliver = True
            self._mark_ready_if_able()
            return

    def _mark_ready_if_able(self) -> None:
        with self._ready_lock:
            if not (self._control_rebuilt and self._events_deliver) or self.ready.is_set():
                return
            self.ready.set()
        self.predictor.mark_ready()
        self.reporter.mark(ReplicaState.READY)
        logger.info(
            "replica %s ready: config versions %s", self.replica_id, self.state.config_versions()
        )

    def _on_result(self, result: ApplyResult) -> None:
        # While rebuilding, one report at the end says it all.
        if self.listener.ready.is_set() and result.outcome is not ApplyOutcome.DUPLICATE:
            self.reporter.report()

    def _check_versions(self, command: ControlCommand) -> str | None:
        """Refuse a config naming versions this replica cannot load (it keeps the old one)."""
        name = command.model_name
        if name not in self.catalog.names():
            return None  # not served here: tracked, so status stays comparable across replicas
        for version in sorted(referenced_versions(command.config)):
            if self.catalog.has(name, version):
                continue
            try:
                # A version trained after start-up: load it here, off the request path.
                self.catalog.add(self.store.load(name, version))
            except (ModelError, ValueError) as exc:
                return f"version {version} of {name} cannot be loaded: {exc}"
        return None

    def _watch_metrics(self) -> None:
        metrics = self.predictor.metrics
        metrics.watch_sink(self.sink.stats)
        metrics.watch(
            "safeloop_events_pending",
            "Prediction events buffered, not yet acknowledged by Kafka.",
            lambda: float(self.sink.pending()),
        )
        metrics.watch(
            "safeloop_control_refused_total",
            "Control commands refused (unsigned, forged, replayed, out of order, invalid).",
            lambda: float(self.state.refused_count),
            kind="counter",
        )
