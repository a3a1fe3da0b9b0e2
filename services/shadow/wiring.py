"""Build a `ShadowScorerProcess` from Settings: the predictions consumer, the control follower,
the model store and the producer of shadow answers."""

from __future__ import annotations

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.kafka.clients import ConfigValue, make_consumer, make_producer
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import PREDICTION_CODEC
from safeloop.schemas.events import ModelConfig, PredictionEvent
from safeloop.schemas.validation import validate_prediction
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.follower import ControlFollower
from safeloop.services.control.keys import load_keyring
from safeloop.services.models.open_store import open_model_store
from safeloop.services.monitor.consumer import EventConsumer
from safeloop.services.monitor.writer import MetricWriter
from safeloop.services.shadow.process import ShadowScorerProcess
from safeloop.services.shadow.scorer import ShadowModels, ShadowScorer

GROUP = "safeloop-shadow-scorer"


def build_shadow_scorer(
    settings: Settings, scorer_id: str, *, group: str = GROUP
) -> ShadowScorerProcess:
    """Everything `safeloop shadow-scorer` needs; the control topic is read to its end first.

    A new consumer group starts at the end of `predictions`: a shadow turned on today is not
    owed answers for last month's requests.
    """
    topics = settings.topics
    follower = ControlFollower(
        make_broadcast_reader(settings, topics.control, f"shadow-{scorer_id}"),
        load_keyring(settings),
    )
    follower.start()

    def config_of(model_name: str) -> ModelConfig | None:
        command = follower.latest(model_name)
        return None if command is None else command.config

    def valid(event: PredictionEvent, now_ms: int) -> None:
        validate_prediction(event, now_ms)

    overrides: dict[str, ConfigValue] = {"fetch.wait.max.ms": 10, "auto.offset.reset": "latest"}
    consumer = EventConsumer(
        make_consumer(settings, group, **overrides),
        topics.predictions,
        PREDICTION_CODEC,
        make_producer(settings),
        topics.dead_letter,
        name="shadow-scorer",
        validate=valid,
    )
    store = open_model_store(settings)
    scorer = ShadowScorer(ShadowModels(store.load), config_of, scorer_id)
    producer = make_producer(settings, **{"linger.ms": 5})
    return ShadowScorerProcess(
        consumer,
        follower,
        producer,
        topics.predictions,
        scorer,
        writer=lambda: MetricWriter(clickhouse_client(settings)),
    )
