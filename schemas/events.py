"""The typed events that travel on safeloop's topics; field names match the Avro schemas.

Timestamps are UTC epoch milliseconds (`int`), as Avro `timestamp-millis` stores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Route(StrEnum):
    """Which model answered (or shadowed) a request."""

    PRODUCTION = "production"
    CANARY = "canary"
    SHADOW = "shadow"


class ErrorKind(StrEnum):
    """Whose fault a failed request was: the model's side (5xx) or the caller's (4xx)."""

    # 5xx, timeouts, model exceptions, injected faults: they count against the model.
    SERVER = "server"
    # 4xx: a request the model cannot answer (missing or invalid features); they count against
    # a canary only relative to production's rate on the same traffic.
    CLIENT = "client"


class FeedbackStatus(StrEnum):
    """Whether a prediction found its outcome inside the join window."""

    JOINED = "joined"
    EXPIRED = "expired"


class CommandKind(StrEnum):
    """What an operator (or the rollback guard) asked for."""

    ROLLBACK = "rollback"
    SET_CANARY = "set_canary"
    PROMOTE = "promote"
    SET_FLAG = "set_flag"
    SET_SHADOW = "set_shadow"
    # A rehearsal: make one version fail or slow down on purpose, for a while.
    INJECT = "inject"


class Urgency(StrEnum):
    """How soon a model should be retrained."""

    NONE = "none"
    ROUTINE = "routine"
    ELEVATED = "elevated"
    CRITICAL = "critical"


class ReplicaState(StrEnum):
    """A serving replica's lifecycle, as it reports it on `replica-status`."""

    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class PredictionEvent:
    """One answered (or failed) request; shadow rows reuse the production prediction_id."""

    prediction_id: str
    model_name: str
    model_version: str
    timestamp: int
    features: dict[str, float]
    prediction: float | None
    confidence: float | None
    latency_ms: float
    route: Route
    replica_id: str
    routing_key: str
    routing_hash_version: int
    error: str | None = None
    # None without an error; an error without a kind (an older writer's) counts as SERVER.
    error_kind: ErrorKind | None = None
    # Multi-class models: P(class k) at index k; empty for binary and regression models.
    class_probabilities: list[float] = field(default_factory=list)
    # The request's attributes named by the model's segment_keys (country=BR, tenant=acme).
    segments: dict[str, str] = field(default_factory=dict)

    @property
    def server_error(self) -> bool:
        """Failed on the model's side (what the absolute error-rate limit counts)."""
        return self.error is not None and self.error_kind is not ErrorKind.CLIENT

    @property
    def client_error(self) -> bool:
        """Failed because of the request (what counts only relative to production)."""
        return self.error is not None and self.error_kind is ErrorKind.CLIENT


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    """The ground truth for one prediction, whenever it arrives."""

    prediction_id: str
    ground_truth: float
    timestamp: int
    source: str


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """A prediction paired with its outcome, or expired without one."""

    prediction_id: str
    model_name: str
    model_version: str
    route: Route
    replica_id: str
    features: dict[str, float]
    prediction: float | None
    confidence: float | None
    prediction_timestamp: int
    status: FeedbackStatus
    ground_truth: float | None
    outcome_timestamp: int | None
    label_delay_ms: int | None
    outcome_source: str | None
    emitted_at: int
    # Copied from the prediction: P(class k) at index k for multi-class models, else empty.
    class_probabilities: list[float] = field(default_factory=list)
    # Copied from the prediction: its segment attributes (segment key -> value).
    segments: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FaultInjection:
    """Fail `error_rate` of `version`'s requests as server errors and add `latency_ms` to each,
    until `until` (epoch ms); replicas stop by themselves then."""

    version: str
    error_rate: float
    latency_ms: float
    until: int

    def active(self, now_ms: int) -> bool:
        return now_ms < self.until


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The complete desired serving state of one model (control is compacted by model)."""

    production_version: str
    canary_version: str | None = None
    # Basis points: 1 = 0.01 % of traffic, 10_000 = all of it.
    canary_basis_points: int = 0
    canary_enabled: bool = True
    shadow_version: str | None = None
    shadow_enabled: bool = False
    kill_switch: bool = False
    fallback_version: str | None = None
    # Values are JSON-encoded so one map carries booleans, numbers and strings.
    flags: dict[str, str] = field(default_factory=dict)
    # A rehearsal fault (`safeloop inject`), in force until its own expiry.
    injection: FaultInjection | None = None


@dataclass(frozen=True, slots=True)
class ControlCommand:
    """A signed change to one model's serving state, broadcast to every replica."""

    command_id: str
    model_name: str
    kind: CommandKind
    # Strictly increasing per model; a replica refuses anything not newer than what it applied.
    sequence: int
    issued_at: int
    issuer: str
    reason: str
    config: ModelConfig
    key_id: str
    signature: str
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """What one serving replica has applied, and when it last said so."""

    replica_id: str
    timestamp: int
    state: ReplicaState
    started_at: int
    # model name -> sequence of the last applied command for that model
    config_versions: dict[str, int]
    last_command_id: str | None
    refused_count: int
    last_refusal: str | None = None
    # model name -> versions this replica has loaded (empty from replicas that predate it).
    loaded_versions: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RetrainingDecision:
    """Whether a model version should be retrained, why, and how urgently."""

    decision_id: str
    model_name: str
    model_version: str
    timestamp: int
    should_retrain: bool
    urgency: Urgency
    reason: str
    max_psi: float | None
    performance_drop: float | None
    drifted_features: list[str]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not be processed, with why and where it came from."""

    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    error_type: str
    timestamp: int
    consumer: str
