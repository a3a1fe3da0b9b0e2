"""Build a `MetricsService` from Settings: Kafka consumers and producers, ClickHouse, keys."""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.kafka.clients import make_consumer, make_producer
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import FEEDBACK_CODEC, PREDICTION_CODEC
from safeloop.schemas.events import ModelConfig, PredictionEvent
from safeloop.schemas.validation import validate_prediction
from safeloop.services.alerts.notifier import notifier_from_settings
from safeloop.services.control.champion_alias import ChampionAliasSync
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.follower import ControlFollower
from safeloop.services.control.issuer import CommandIssuer
from safeloop.services.control.keys import load_keyring
from safeloop.services.control.publisher import ControlPublisher
from safeloop.services.models.exceptions import ModelError
from safeloop.services.models.open_store import open_model_store
from safeloop.services.models.store_protocol import ModelStoreProtocol
from safeloop.services.monitor.consumer import CommitListener, ConsumerCounts, EventConsumer
from safeloop.services.monitor.dead_letter_watch import DeadLetterWatch
from safeloop.services.monitor.label_counts import ClickHouseLabelCounts
from safeloop.services.monitor.model_info import ModelInfoCache
from safeloop.services.monitor.service import MetricsConfig, MetricsService
from safeloop.services.monitor.summary_exchange import SummaryExchange
from safeloop.services.monitor.writer import MetricWriter
from safeloop.services.retraining.publisher import RetrainingPublisher

GROUP_PREFIX = "safeloop-metrics"
ISSUER = "safeloop-metrics"


# A dead instance's partitions go to the others after this long (librdkafka's default is 45 s,
# during which nobody reads them; the broker's minimum is 6 s).
SESSION_TIMEOUT_MS = 10_000


def unique_name() -> str:
    """A name for one consumer or exchange of this process, unique across hosts and runs."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def metrics_consumer(
    settings: Settings,
    group: str,
    on_commit: CommitListener | None = None,
    *,
    instance_id: str | None = None,
    **overrides: Any,
) -> Consumer:
    """A group consumer that hands over records as soon as they exist (the guard's latency).

    It is a static member: when the group's coordinator broker dies, the session can run out
    before another broker takes the group over. A dynamic member then rejoins under a new id
    and the new coordinator waits out the old id's session (~10 s without a guard); a static
    member is recognised and gets its partitions back at once. The id is unique per consumer
    unless `instance_id` is given (`metrics run --instance-id`), which a restarted process
    keeps to get its partitions back without waiting out its old session; a second live
    process with the same id fences the first (`ConsumerFencedError`). `EventConsumer.close`
    leaves the group explicitly, which a static member's `close()` alone does not."""
    return make_consumer(
        settings,
        group,
        on_commit,
        **{
            "group.instance.id": instance_id or unique_name(),
            "fetch.wait.max.ms": 10,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": SESSION_TIMEOUT_MS // 4,
            **overrides,
        },
    )


def start_exchange(settings: Settings) -> SummaryExchange:
    """This instance's link to the others of its group: their guard summaries and its own."""
    topic = settings.topics.metrics_summaries
    exchange = SummaryExchange(
        make_producer(settings, **{"linger.ms": 5}),
        make_broadcast_reader(settings, topic, "metrics"),
        topic,
        instance=unique_name(),
    )
    exchange.start()
    return exchange


def initial_config_from(store: ModelStoreProtocol) -> Any:
    """What replicas serve before any command: the store's default version (the oldest, or
    in MLflow the champion)."""

    def initial(model_name: str) -> ModelConfig | None:
        try:
            return ModelConfig(production_version=store.default_version(model_name))
        except (ModelError, ValueError):
            return None

    return initial


def build_issuer(
    settings: Settings,
    follower: ControlFollower,
    store: ModelStoreProtocol,
    *,
    issuer: str = ISSUER,
) -> CommandIssuer:
    publisher = ControlPublisher(
        make_producer(settings, **{"linger.ms": 0}),
        settings.topics.control,
        load_keyring(settings),
        issuer=issuer,
    )
    return CommandIssuer(
        publisher, follower, clickhouse_client(settings), initial_config_from(store)
    )


def follow_champion(
    store: ModelStoreProtocol, follower: ControlFollower, issuer: CommandIssuer
) -> ChampionAliasSync:
    """Move the store's champion alias with every command: ours, others', and (at start)
    whatever the control topic says production is now."""
    champion = ChampionAliasSync(store)
    for command in follower.view.latest.values():
        champion.on_command(command)
    follower.listeners.append(champion.on_command)
    issuer.listeners.append(champion.on_command)
    champion.start()
    return champion


def start_follower(settings: Settings, label: str = "metrics") -> ControlFollower:
    """The control topic read to its end; `label` names the consumer group (its role's ACLs
    allow `safeloop-<label>-*`: "metrics" for the service, "cli" for an operator)."""
    reader = make_broadcast_reader(settings, settings.topics.control, label)
    follower = ControlFollower(reader, load_keyring(settings))
    follower.start()
    return follower


def build_metrics_service(
    settings: Settings,
    config: MetricsConfig,
    *,
    group_prefix: str = GROUP_PREFIX,
    instance_id: str | None = None,
) -> MetricsService:
    """Everything `safeloop metrics run` needs, connected; the control topic is read to its end.
    `instance_id`: this instance's static member id in both groups, kept across restarts."""
    topics = settings.topics
    # The topics are created with settings.partitions (infra/kafka/topics.py).
    config = dataclasses.replace(config, guard_partitions=settings.partitions)
    store = open_model_store(settings)
    dead_letters = make_producer(settings)

    def valid_prediction(event: PredictionEvent, now_ms: int) -> None:
        validate_prediction(event, now_ms)

    # The loop commits without waiting (a dead coordinator must not stop the guard): each
    # consumer's answers are counted by its listener.
    prediction_counts, feedback_counts = ConsumerCounts(), ConsumerCounts()
    # One id for each consumer's clients, a client replacing a fenced one included.
    instance = instance_id or unique_name()

    def new_client(group: str, listener: CommitListener) -> Callable[[], Consumer]:
        return lambda: metrics_consumer(settings, group, listener, instance_id=instance)

    prediction_client = new_client(
        f"{group_prefix}-predictions", CommitListener("metrics-predictions", prediction_counts)
    )
    feedback_client = new_client(
        f"{group_prefix}-feedback", CommitListener("metrics-feedback", feedback_counts)
    )
    predictions = EventConsumer(
        prediction_client(),
        topics.predictions,
        PREDICTION_CODEC,
        dead_letters,
        topics.dead_letter,
        name="metrics-predictions",
        validate=valid_prediction,
        counts=prediction_counts,
        new_client=prediction_client,
    )
    feedback = EventConsumer(
        feedback_client(),
        topics.feedback,
        FEEDBACK_CODEC,
        dead_letters,
        topics.dead_letter,
        name="metrics-feedback",
        counts=feedback_counts,
        new_client=feedback_client,
    )
    follower = start_follower(settings)
    issuer = build_issuer(settings, follower, store)
    follow_champion(store, follower, issuer)
    client = clickhouse_client(settings)
    alerts = notifier_from_settings(settings)
    return MetricsService(
        config,
        predictions=predictions,
        feedback=feedback,
        follower=follower,
        issuer=issuer,
        writer=MetricWriter(client),
        retraining=RetrainingPublisher(make_producer(settings), topics.retraining, client),
        models=ModelInfoCache(store),
        alerts=alerts,
        dead_letter_watch=None
        if alerts is None
        else DeadLetterWatch(client, settings.alert_dead_letters_per_minute),
        labels=ClickHouseLabelCounts(client),
        exchange=start_exchange(settings),
    )
