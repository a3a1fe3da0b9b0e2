"""What the store keeps beside each artifact: identity, task, features and training baseline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from safeloop.services.metrics.baseline import ModelBaseline
from safeloop.services.models.task import ModelTask

METADATA_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelMetadata:
    """The contents of `metadata.json`; `kind` names the artifact format (e.g. `logistic`).

    `baseline` holds each feature's and the score's training distribution (quantile bins, for
    drift); `metrics` the holdout metrics, `primary_metric` the one performance is judged by;
    `lineage` where a retrained version came from (decision id, data window, half-life);
    `segment_keys` the request attributes (or features) whose values split metrics and gates
    per segment (country, tenant, device).
    """

    name: str
    version: str
    task: ModelTask
    kind: str
    feature_names: tuple[str, ...]
    created_at_ms: int
    training_rows: int
    baseline: ModelBaseline
    primary_metric: str
    metrics: dict[str, float]
    lineage: Mapping[str, str] = field(default_factory=dict)
    segment_keys: tuple[str, ...] = ()

    @property
    def primary_metric_value(self) -> float:
        return self.metrics[self.primary_metric]

    def to_json(self) -> dict[str, Any]:
        lineage = {"lineage": dict(self.lineage)} if self.lineage else {}
        # Absent rather than empty, so stores written before segments read back unchanged.
        segments = {"segment_keys": list(self.segment_keys)} if self.segment_keys else {}
        return {
            "format_version": METADATA_FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "task": self.task.value,
            "kind": self.kind,
            "feature_names": list(self.feature_names),
            "created_at_ms": self.created_at_ms,
            "training_rows": self.training_rows,
            "baseline": self.baseline.to_dict(),
            "primary_metric": self.primary_metric,
            "metrics": dict(self.metrics),
            **lineage,
            **segments,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ModelMetadata:
        """Parse `metadata.json`; missing keys raise KeyError, bad values ValueError."""
        if raw.get("format_version") != METADATA_FORMAT_VERSION:
            raise ValueError(f"unsupported metadata format {raw.get('format_version')!r}")
        feature_names = tuple(str(name) for name in raw["feature_names"])
        baseline = ModelBaseline.from_dict(raw["baseline"])
        if set(baseline.features) != set(feature_names):
            raise ValueError("baseline features differ from feature_names")
        metrics = {str(name): float(value) for name, value in raw["metrics"].items()}
        primary_metric = str(raw["primary_metric"])
        if primary_metric not in metrics:
            raise ValueError(f"primary metric {primary_metric!r} has no value")
        return cls(
            name=str(raw["name"]),
            version=str(raw["version"]),
            task=ModelTask(raw["task"]),
            kind=str(raw["kind"]),
            feature_names=feature_names,
            created_at_ms=int(raw["created_at_ms"]),
            training_rows=int(raw["training_rows"]),
            baseline=baseline,
            primary_metric=primary_metric,
            metrics=metrics,
            lineage={str(key): str(value) for key, value in raw.get("lineage", {}).items()},
            segment_keys=_segment_keys(raw.get("segment_keys", [])),
        )


def _segment_keys(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(key, str) and key for key in raw):
        raise ValueError(f"segment_keys must be a list of non-empty strings, got {raw!r}")
    if len(set(raw)) != len(raw):
        raise ValueError(f"segment_keys repeats a key: {raw!r}")
    return tuple(raw)
