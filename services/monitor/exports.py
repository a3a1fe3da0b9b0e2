"""Exports for people and trainers: the labelling queue and the recency-weighted training window."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
from clickhouse_connect.driver import Client

from safeloop.schemas.events import FeedbackRecord, FeedbackStatus, Route
from safeloop.services.metrics.active_learning import LabellingCandidate, select_for_labelling
from safeloop.services.monitor.model_info import ModelInfoCache

_UNLABELLED = (
    "SELECT prediction_id, model_name, model_version, confidence, features FROM predictions "
    "WHERE route != 'shadow' AND error IS NULL AND confidence IS NOT NULL "
    "AND ({model:String} = '' OR model_name = {model:String}) "
    "AND prediction_id NOT IN (SELECT prediction_id FROM feedback WHERE status = 'joined') "
    "ORDER BY timestamp DESC LIMIT {scan:UInt64}"
)
_LABELLED = (
    "SELECT prediction_id, model_name, model_version, route, replica_id, features, prediction, "
    "confidence, prediction_timestamp, status, ground_truth, outcome_timestamp, label_delay_ms, "
    "outcome_source, emitted_at FROM feedback FINAL "
    "WHERE model_name = {model:String} AND status = 'joined' "
    "AND prediction_timestamp >= fromUnixTimestamp64Milli({since:Int64}) "
    "AND ({version:String} = '' OR model_version = {version:String})"
)
QUEUE_COLUMNS = (
    "prediction_id",
    "model_name",
    "model_version",
    "priority",
    "uncertainty",
    "novelty",
    "reason",
    "rarest_feature",
)


def labelling_queue(
    client: Client, models: ModelInfoCache, limit: int, *, model_name: str = "", scan: int = 50_000
) -> list[tuple[str, str, LabellingCandidate]]:
    """(model, version, candidate) for the `limit` unlabelled predictions most worth a label."""
    rows = client.query(_UNLABELLED, parameters={"model": model_name, "scan": scan}).result_rows
    groups: dict[tuple[str, str], list[Sequence[Any]]] = {}
    for row in rows:
        groups.setdefault((str(row[1]), str(row[2])), []).append(row)
    chosen: list[tuple[str, str, LabellingCandidate]] = []
    for (name, version), group in groups.items():
        info = models.get(name, version)
        features: dict[str, npt.NDArray[np.float64]] | None = None
        if info is not None:
            features = {
                feature: np.array([float(r[4].get(feature, np.nan)) for r in group])
                for feature in info.baseline.features
            }
        candidates = select_for_labelling(
            [str(r[0]) for r in group],
            np.array([float(r[3]) for r in group]),
            limit,
            features=features,
            baseline=None if info is None else info.baseline,
        )
        chosen += [(name, version, candidate) for candidate in candidates]
    chosen.sort(key=lambda item: -item[2].priority)
    return chosen[:limit]


def write_queue_csv(out: IO[str], queue: Sequence[tuple[str, str, LabellingCandidate]]) -> None:
    writer = csv.writer(out)
    writer.writerow(QUEUE_COLUMNS)
    for name, version, c in queue:
        figures = [f"{c.priority:.6g}", f"{c.uncertainty:.6g}", f"{c.novelty:.6g}"]
        writer.writerow(
            [c.prediction_id, name, version, *figures, c.reason.value, c.rarest_feature or ""]
        )


def labelled_window(
    client: Client, model_name: str, since_ms: int, version: str = ""
) -> list[FeedbackRecord]:
    """Joined feedback of a model (optionally one version) for predictions since `since_ms`."""
    parameters = {"model": model_name, "since": since_ms, "version": version}
    rows = client.query(_LABELLED, parameters=parameters).result_rows
    return [_record(row) for row in rows]


def write_structured_csv(path: Path, rows: npt.NDArray[np.void]) -> None:
    names = rows.dtype.names or ()
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(names)
        for row in rows:
            writer.writerow([row[name] for name in names])


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def _record(row: Sequence[Any]) -> FeedbackRecord:
    return FeedbackRecord(
        prediction_id=str(row[0]),
        model_name=str(row[1]),
        model_version=str(row[2]),
        route=Route(row[3]),
        replica_id=str(row[4]),
        features={str(k): float(v) for k, v in dict(row[5]).items()},
        prediction=row[6],
        confidence=row[7],
        prediction_timestamp=_ms(row[8]) or 0,
        status=FeedbackStatus(row[9]),
        ground_truth=row[10],
        outcome_timestamp=_ms(row[11]),
        label_delay_ms=row[12],
        outcome_source=row[13],
        emitted_at=_ms(row[14]) or 0,
    )
