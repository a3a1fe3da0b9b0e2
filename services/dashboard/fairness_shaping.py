"""Fairness rows -> per version, the same figures for every group of a segment key and the gap
between the best and the worst group; groups under the minimum sample are marked and left
out of the gaps (a gap between two handfuls of rows is noise)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from safeloop.services.dashboard.reader import Row
from safeloop.services.dashboard.shaping import num, ratio, series_name
from safeloop.services.metrics.performance import Task

JSON = dict[str, Any]


class Basis(StrEnum):
    """What a figure is computed over: every request, or the labelled pairs."""

    REQUESTS = "requests"
    LABELLED = "labelled"


@dataclass(frozen=True)
class Figure:
    name: str
    basis: Basis
    higher_is_better: bool


ERROR_RATE: Final = Figure("error_rate", Basis.REQUESTS, higher_is_better=False)
FIGURES: Final[dict[Task, tuple[Figure, ...]]] = {
    Task.CLASSIFICATION: (
        ERROR_RATE,
        Figure("accuracy", Basis.LABELLED, higher_is_better=True),
        Figure("f1", Basis.LABELLED, higher_is_better=True),
    ),
    Task.MULTICLASS: (ERROR_RATE, Figure("accuracy", Basis.LABELLED, higher_is_better=True)),
    Task.REGRESSION: (
        ERROR_RATE,
        Figure("mae", Basis.LABELLED, higher_is_better=False),
        Figure("rmse", Basis.LABELLED, higher_is_better=False),
    ),
}


def task_of(rows: Iterable[Row]) -> Task:
    """The task the model's windows show (model_task rows); binary classification otherwise."""
    for row in rows:
        if int(row.get("regression") or 0):
            return Task.REGRESSION
        if int(row.get("multiclass") or 0):
            return Task.MULTICLASS
    return Task.CLASSIFICATION


def label_figures(task: Task, row: Row) -> dict[str, float | None]:
    """The label-based figures of one group's counts (group_labels row)."""
    n = int(row["labelled"])
    if task is Task.REGRESSION:
        mse = ratio(row["squared_error_sum"], n)
        return {
            "mae": ratio(row["abs_error_sum"], n),
            "rmse": None if mse is None else math.sqrt(mse),
        }
    if task is Task.MULTICLASS:
        return {"accuracy": ratio(row["exact"], n)}
    tp, fp, fn = int(row["tp"]), int(row["fp"]), int(row["fn"])
    return {
        "accuracy": ratio(n - fp - fn, n),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


def _gap(figure: Figure, groups: list[JSON]) -> JSON | None:
    """Best and worst group of `figure` among groups with enough sample; None under two."""
    enough = [g for g in groups if g[f"{figure.basis.value}_enough"] and g[figure.name] is not None]
    if len(enough) < 2:
        return None
    ranked = sorted(enough, key=lambda g: (g[figure.name], g["group"]))
    best, worst = (ranked[-1], ranked[0]) if figure.higher_is_better else (ranked[0], ranked[-1])
    return {
        "gap": abs(best[figure.name] - worst[figure.name]),
        "best": best["group"],
        "best_value": best[figure.name],
        "worst": worst["group"],
        "worst_value": worst[figure.name],
        "groups": len(enough),
    }


def fairness_view(
    key: str,
    task: Task,
    serving: Iterable[Row],
    labels: Iterable[Row],
    min_sample: int,
) -> JSON:
    """Per (version, route): every group's figures, sample flags, and each figure's gap."""
    figures = FIGURES[task]
    series: dict[tuple[str, str], dict[str, JSON]] = {}

    def group(row: Row) -> JSON:
        groups = series.setdefault((str(row["model_version"]), str(row["route"])), {})
        name = str(row["segment"])
        if name not in groups:
            groups[name] = {"group": name, "requests": 0, "errors": 0, "labelled": 0}
            groups[name].update(dict.fromkeys((f.name for f in figures), None))
        return groups[name]

    for row in serving:
        entry = group(row)
        entry["requests"], entry["errors"] = int(row["requests"]), int(row["errors"])
        entry["error_rate"] = ratio(row["errors"], row["requests"])
    for row in labels:
        entry = group(row)
        entry["labelled"] = int(row["labelled"])
        entry.update({k: num(v) for k, v in label_figures(task, row).items()})
    shaped = []
    for (version, route), by_name in sorted(series.items()):
        groups = [by_name[name] for name in sorted(by_name)]
        for entry in groups:
            entry["requests_enough"] = entry["requests"] >= min_sample
            entry["labelled_enough"] = entry["labelled"] >= min_sample
        shaped.append(
            {
                "name": series_name(version, route),
                "version": version,
                "route": route,
                "groups": groups,
                "gaps": {f.name: _gap(f, groups) for f in figures},
            }
        )
    return {
        "key": key,
        "task": task.value,
        "min_sample": min_sample,
        "figures": [
            {"name": f.name, "basis": f.basis.value, "higher_is_better": f.higher_is_better}
            for f in figures
        ],
        "series": shaped,
    }
