"""Task-figure rows -> per (version, route): class table, confusion matrix, error summary."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

from safeloop.services.dashboard.reader import Row
from safeloop.services.dashboard.shaping import JSON, iso, num, series_name

_PER_CLASS: Final = re.compile(r"^(precision|recall|f1|support)_class_(\d+)$")
_CONFUSION: Final = re.compile(r"^confusion_(\d+)_(\d+)$")
_REGRESSION: Final = ("mae", "rmse", "r2", "residual_mean", "residual_std", "residual_bias_shift")
_DRIFT: Final = ("residual_psi", "residual_ks")


def task_view(rows: Iterable[Row]) -> JSON:
    """{"task": "multiclass" | "regression" | None, "series": [...]}, one entry per
    (version, route): multi-class ones with classes and confusion, regression ones with errors."""
    grouped: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        grouped.setdefault((str(row["model_version"]), str(row["route"])), []).append(row)
    series = [_one(version, route, group) for (version, route), group in grouped.items()]
    task = None
    if any(s["kind"] == "multiclass" for s in series):
        task = "multiclass"
    elif series:
        task = "regression"
    return {"task": task, "series": series}


def _one(version: str, route: str, rows: list[Row]) -> JSON:
    figures: dict[str, float | None] = {}
    classes: dict[int, dict[str, Any]] = {}
    cells: dict[tuple[int, int], int] = {}
    for row in rows:
        metric = str(row["metric"])
        value = num(row["value"])
        if (found := _PER_CLASS.match(metric)) is not None:
            entry = classes.setdefault(int(found[2]), {"class": int(found[2])})
            entry[found[1]] = int(value or 0) if found[1] == "support" else value
        elif (found := _CONFUSION.match(metric)) is not None:
            cells[(int(found[1]), int(found[2]))] = int(value or 0)
        else:
            figures[metric] = value
    out: JSON = {
        "name": series_name(version, route),
        "version": version,
        "route": route,
        "window_end": iso(max((r["window_end"] for r in rows), default=None)),
        "labelled": figures.get("labelled_count"),
    }
    if "class_count" in figures:
        n = max(
            int(figures["class_count"] or 0),
            1 + max((k for k in classes), default=-1),
            1 + max((max(i, j) for i, j in cells), default=-1),
        )
        matrix = [[cells.get((i, j), 0) for j in range(n)] for i in range(n)]
        return {
            **out,
            "kind": "multiclass",
            "summary": {name: figures.get(name) for name in _MULTICLASS_SUMMARY},
            "classes": [
                {
                    "class": k,
                    "precision": classes.get(k, {}).get("precision"),
                    "recall": classes.get(k, {}).get("recall"),
                    "f1": classes.get(k, {}).get("f1"),
                    "support": classes.get(k, {}).get("support", sum(matrix[k])),
                }
                for k in range(n)
            ],
            "confusion": matrix,
        }
    return {
        **out,
        "kind": "regression",
        "summary": {name: figures.get(name) for name in (*_REGRESSION, *_DRIFT)},
    }


_MULTICLASS_SUMMARY: Final = (
    "accuracy",
    "macro_f1",
    "micro_f1",
    "weighted_f1",
    "macro_precision",
    "macro_recall",
    "log_loss",
    "brier_score",
    "expected_calibration_error",
)
