"""The labelled window as a numpy structured array with recency weights, ready for a trainer.

One row per joined feedback record; features become `feature_<name>` columns (NaN where a
record lacks one). `pandas.DataFrame(array)` or a Parquet/CSV writer can take it from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from safeloop.schemas.events import FeedbackRecord, FeedbackStatus
from safeloop.services.retraining.exceptions import ExportError
from safeloop.services.retraining.weights import recency_weights

FEATURE_PREFIX = "feature_"

_FIXED_COLUMNS: tuple[tuple[str, npt.DTypeLike], ...] = (
    ("prediction_timestamp", np.int64),
    ("label_delay_ms", np.float64),
    ("prediction", np.float64),
    ("ground_truth", np.float64),
    ("weight", np.float64),
)


def weighted_export(
    records: Sequence[FeedbackRecord],
    now_ms: int,
    half_life_ms: float,
    feature_names: Sequence[str] | None = None,
    normalise: bool = False,
) -> npt.NDArray[np.void]:
    """Joined records with their recency weight by prediction age; expired ones are skipped.

    `feature_names` fixes the feature columns and their order; by default every feature seen,
    sorted by name.
    """
    labelled = [
        record
        for record in records
        if record.status is FeedbackStatus.JOINED and record.ground_truth is not None
    ]
    if feature_names is None:
        feature_names = sorted({name for record in labelled for name in record.features})
    elif len(set(feature_names)) != len(feature_names):
        raise ExportError(f"feature_names repeats a name: {list(feature_names)}")
    id_width = max((len(record.prediction_id) for record in labelled), default=1)
    version_width = max((len(record.model_version) for record in labelled), default=1)
    dtype: list[tuple[str, Any]] = [
        ("prediction_id", f"U{id_width}"),
        ("model_version", f"U{version_width}"),
        *_FIXED_COLUMNS,
        *((FEATURE_PREFIX + name, np.float64) for name in feature_names),
    ]
    rows = np.empty(len(labelled), dtype=dtype)
    if not labelled:
        return rows
    nan = math.nan
    rows["prediction_id"] = [record.prediction_id for record in labelled]
    rows["model_version"] = [record.model_version for record in labelled]
    rows["prediction_timestamp"] = [record.prediction_timestamp for record in labelled]
    rows["label_delay_ms"] = [
        nan if record.label_delay_ms is None else record.label_delay_ms for record in labelled
    ]
    rows["prediction"] = [
        nan if record.prediction is None else record.prediction for record in labelled
    ]
    rows["ground_truth"] = [record.ground_truth for record in labelled]
    for name in feature_names:
        rows[FEATURE_PREFIX + name] = [record.features.get(name, nan) for record in labelled]
    rows["weight"] = recency_weights(rows["prediction_timestamp"], now_ms, half_life_ms, normalise)
    return rows
