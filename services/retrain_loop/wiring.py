"""Build `safeloop retrain run` from Settings: the decisions consumer, the step log, the model
store the settings choose (folder or MLflow), the control issuer and the configured trainer."""

from __future__ import annotations

from safeloop.infra.clickhouse.client import clickhouse_client
from safeloop.infra.kafka.clients import make_consumer, make_producer
from safeloop.infra.settings import Settings
from safeloop.schemas.codec import RETRAINING_CODEC
from safeloop.schemas.events import RetrainingDecision
from safeloop.services.models.open_store import open_model_store
from safeloop.services.monitor.consumer import EventConsumer
from safeloop.services.monitor.wiring import build_issuer, start_follower
from safeloop.services.retrain_loop.actions import LoopActions, TrainingConfig
from safeloop.services.retrain_loop.service import RetrainService
from safeloop.services.retrain_loop.step_log import StepLog
from safeloop.services.retraining.loop_policy import LoopPolicy
from safeloop.services.retraining.trainer import load_trainer
from safeloop.services.rollout.plan import RolloutPlan

# Under the metrics role's group prefix: the loop runs with the metrics service's credentials.
GROUP = "safeloop-metrics-retrain"
ISSUER = "safeloop-retrain"


def build_retrain_service(
    settings: Settings,
    policy: LoopPolicy,
    plan: RolloutPlan,
    *,
    group: str = GROUP,
    tick_ms: int = 1_000,
) -> RetrainService:
    """Everything the loop needs, connected; the control topic is read to its end first."""
    trainer = load_trainer(settings.retrain_trainer)
    store = open_model_store(settings)
    client = clickhouse_client(settings)
    follower = start_follower(settings, label="metrics")
    issuer = build_issuer(settings, follower, store, issuer=ISSUER)
    training = TrainingConfig(
        trainer=trainer,
        trainer_name=settings.retrain_trainer,
        window_ms=settings.retrain_window_ms,
        half_life_ms=float(settings.retrain_half_life_ms),
    )
    actions = LoopActions(client, store, issuer, training, plan=plan, follower=follower)
    topics = settings.topics
    # A new group reads decisions from the start: one not yet acted on is still owed a run.
    consumer: EventConsumer[RetrainingDecision] = EventConsumer(
        make_consumer(settings, group, **{"auto.offset.reset": "earliest"}),
        topics.retraining,
        RETRAINING_CODEC,
        make_producer(settings),
        topics.dead_letter,
        name="retrain",
    )
    return RetrainService(StepLog(client), actions, policy, consumer=consumer, tick_ms=tick_ms)
