"""What the retraining process does in the world: train and register, read the shadow's and the
rollout's figures, and turn effects into signed control commands. Every effect is idempotent:
a restart that repeats one finds it already true and sends nothing."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from safeloop.schemas.events import CommandKind, ModelConfig, Route
from safeloop.services.control.exceptions import ControlError
from safeloop.services.control.follower import ControlFollower
from safeloop.services.control.issuer import CommandIssuer
from safeloop.services.control.publisher import ConfigChange
from safeloop.services.models.exceptions import ModelError, ModelRegistryError
from safeloop.services.models.loaded import LoadedModel
from safeloop.services.models.store_protocol import ModelStoreProtocol
from safeloop.services.monitor.exports import labelled_window
from safeloop.services.retraining.candidate import CandidateSpec, build_candidate
from safeloop.services.retraining.exceptions import CandidateError, RetrainingError
from safeloop.services.retraining.export import weighted_export
from safeloop.services.retraining.machine import (
    Effect,
    Evaluation,
    RetrainRun,
    RolloutPhase,
    ShadowEvidence,
    StartCanary,
    StartShadow,
    StopShadow,
    Trained,
    TrainingFailed,
)
from safeloop.services.retraining.registry import register_candidate, registered_candidate
from safeloop.services.retraining.trainer import Trainer
from safeloop.services.rollout.controller import publish_transition
from safeloop.services.rollout.history import latest_rollout
from safeloop.services.rollout.machine import start
from safeloop.services.rollout.plan import RolloutPlan

logger = logging.getLogger(__name__)

_SHADOW_FIGURES = (
    "SELECT metric, argMax(value, window_end) FROM performance_metrics "
    "WHERE model_name = {model:String} AND model_version = {version:String} AND route = 'shadow' "
    "AND metric IN ('shadow_pair_count', 'shadow_agreement_rate') "
    "AND window_end >= fromUnixTimestamp64Milli({since:Int64}) GROUP BY metric"
)
# Lineage keys that keep the estimate with the candidate, so a restart need not retrain.
_ESTIMATE_KEYS = ("estimate_metric", "estimate_higher_is_better", "estimate_candidate")


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """Where the training data comes from and how it is weighted."""

    trainer: Trainer
    trainer_name: str
    window_ms: int
    half_life_ms: float
    evaluation_share: float = 0.2
    min_rows: int = 50


class LoopActions:
    """The real side of the loop: ClickHouse, the registry, the control topic."""

    def __init__(
        self,
        client: Client,
        store: ModelStoreProtocol,
        issuer: CommandIssuer,
        training: TrainingConfig,
        *,
        plan: RolloutPlan,
        follower: ControlFollower,
    ) -> None:
        self._follower = follower
        self._client = client
        self._store = store
        self._issuer = issuer
        self._training = training
        self._plan = plan

    def refresh(self) -> None:
        """Take in the control topic's new commands (the guard's, the rollout's, operators')."""
        self._follower.poll()

    def close(self) -> None:
        self._follower.close()

    def production_version(self, model_name: str) -> str | None:
        config = self._issuer.config_of(model_name)
        return None if config is None else config.production_version

    def train(self, run: RetrainRun, now_ms: int) -> Trained | TrainingFailed:
        """Export the weighted window, call the trainer, register the candidate with lineage
        (the run's candidate is the version the store numbers it, e.g. MLflow's)."""
        existing = self._registered(run)
        if existing is not None:
            return existing
        try:
            base = self._store.load(run.model_name, run.base_version)
        except ModelRegistryError as exc:
            # Unreachable, not broken: nothing recorded, tried again next tick.
            raise RetrainingError(f"base version {run.base_version} not read: {exc}") from exc
        except (ModelError, ValueError) as exc:
            return TrainingFailed(f"base version {run.base_version} not loadable: {exc}")
        training = self._training
        since_ms = now_ms - training.window_ms
        try:
            records = labelled_window(self._client, run.model_name, since_ms)
        except ClickHouseError as exc:
            raise RetrainingError(f"labelled window not read: {exc}") from exc
        # Shadow answers share their request's label: count each request once.
        records = [record for record in records if record.route is not Route.SHADOW]
        feature_names = base.metadata.feature_names
        rows = weighted_export(
            records, now_ms, training.half_life_ms, feature_names=feature_names, normalise=True
        )
        spec = CandidateSpec(
            model_name=run.model_name,
            run_id=run.run_id,
            base_version=run.base_version,
            task=base.metadata.task,
            feature_names=feature_names,
            half_life_ms=training.half_life_ms,
            evaluation_share=training.evaluation_share,
            min_rows=training.min_rows,
            n_classes=getattr(base.model, "n_classes", None),
        )
        lineage = {
            "decision_id": run.run_id,
            "window_from_ms": str(since_ms),
            "window_to_ms": str(now_ms),
            "trainer": training.trainer_name,
        }
        try:
            candidate = build_candidate(
                spec, rows, training.trainer, self._production(run), now_ms=now_ms, lineage=lineage
            )
            evaluation = candidate.evaluation
            metadata = dataclasses.replace(
                candidate.metadata,
                lineage={**candidate.metadata.lineage, **_estimate_lineage(evaluation)},
            )
            version = register_candidate(self._store, candidate.model, metadata)
        except CandidateError as exc:
            return TrainingFailed(str(exc))
        except (ModelError, ValueError, OSError) as exc:
            # The registry is down or refused it: nothing recorded, tried again next tick.
            raise RetrainingError(
                f"candidate not registered in {self._store.location}: {exc}"
            ) from exc
        logger.info(
            "retraining %s: candidate %s registered as version %s in %s",
            run.model_name, metadata.version, version, self._store.location,
        )  # fmt: skip
        return Trained(version, metadata.lineage, evaluation)

    def shadow_evidence(self, run: RetrainRun) -> ShadowEvidence:
        """The shadow scorer's newest agreement figures for the candidate since shadow began."""
        parameters = {
            "model": run.model_name,
            "version": run.candidate_version,
            "since": run.stage_started_ms,
        }
        try:
            rows = self._client.query(_SHADOW_FIGURES, parameters=parameters).result_rows
        except ClickHouseError as exc:
            raise RetrainingError(f"shadow figures not read: {exc}") from exc
        figures = {str(metric): float(value) for metric, value in rows}
        pairs = figures.get("shadow_pair_count")
        return ShadowEvidence(
            pair_count=0 if pairs is None else int(pairs),
            agreement_rate=figures.get("shadow_agreement_rate"),
        )

    def rollout_phase(self, run: RetrainRun) -> tuple[RolloutPhase, str] | None:
        """The candidate's rollout phase and reason as last recorded (None: not recorded yet)."""
        try:
            found = latest_rollout(self._client, run.model_name)
        except ClickHouseError as exc:
            raise RetrainingError(f"rollout state not read: {exc}") from exc
        if found is None or found[1].candidate_version != run.candidate_version:
            return None
        state = found[1]
        return RolloutPhase(state.phase.value), state.reason

    def perform(self, effect: Effect, now_ms: int) -> None:
        """Make one effect true (ControlError and RolloutError propagate: retried next tick)."""
        config = self._config(effect.model_name)
        if isinstance(effect, StartShadow):
            if config.shadow_enabled and config.shadow_version == effect.version:
                return
            self._issue(
                effect.model_name,
                CommandKind.SET_SHADOW,
                lambda c: dataclasses.replace(
                    c, shadow_version=effect.version, shadow_enabled=True
                ),
                f"retraining: shadow {effect.version}",
            )
        elif isinstance(effect, StopShadow):
            if config.shadow_version != effect.version or not config.shadow_enabled:
                return
            self._issue(
                effect.model_name,
                CommandKind.SET_SHADOW,
                lambda c: dataclasses.replace(c, shadow_version=None, shadow_enabled=False),
                f"retraining: shadow of {effect.version} off",
            )
        elif isinstance(effect, StartCanary):
            if config.canary_version == effect.version and config.canary_enabled:
                return
            transition = start(
                self._plan, effect.model_name, config.production_version, effect.version, now_ms
            )
            publish_transition(self._issuer, self._plan, transition)

    def _issue(self, model: str, kind: CommandKind, change: ConfigChange, reason: str) -> None:
        self._issuer.issue(model, kind, change, reason=reason, details={})

    def _config(self, model_name: str) -> ModelConfig:
        config = self._issuer.config_of(model_name)
        if config is None:
            raise ControlError(f"{model_name}: no command yet and not in the model store")
        return config

    def _production(self, run: RetrainRun) -> LoadedModel | None:
        config = self._issuer.config_of(run.model_name)
        version = run.base_version if config is None else config.production_version
        try:
            return self._store.load(run.model_name, version)
        except (ModelError, ValueError) as exc:
            logger.warning("production %s of %s not loadable: %s", version, run.model_name, exc)
            return None

    def _registered(self, run: RetrainRun) -> Trained | None:
        """The run's candidate if an earlier attempt registered it (then crashed)."""
        try:
            found = registered_candidate(self._store, run.model_name, run.run_id)
        except (ModelError, ValueError) as exc:
            raise RetrainingError(f"model store {self._store.location} not read: {exc}") from exc
        if found is None:
            return None
        version, metadata = found
        lineage = metadata.lineage
        if any(key not in lineage for key in _ESTIMATE_KEYS):
            return None
        production = lineage.get("estimate_production", "")
        evaluation = Evaluation(
            metric=lineage["estimate_metric"],
            higher_is_better=lineage["estimate_higher_is_better"] == "true",
            candidate=float(lineage["estimate_candidate"]),
            production=float(production) if production else None,
            rows=int(lineage.get("evaluation_rows", "0")),
        )
        return Trained(version, lineage, evaluation)


def _estimate_lineage(evaluation: Evaluation) -> dict[str, str]:
    return {
        "estimate_metric": evaluation.metric,
        "estimate_higher_is_better": "true" if evaluation.higher_is_better else "false",
        "estimate_candidate": repr(evaluation.candidate),
        "estimate_production": "" if evaluation.production is None else repr(evaluation.production),
    }
