"""Query rows -> the JSON the page draws: series per version and route, tables, markers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from safeloop.services.dashboard.reader import Row
from safeloop.services.rollout.exceptions import RolloutError
from safeloop.services.rollout.persist import rollout_of

JSON = dict[str, Any]


def iso(value: Any) -> str | None:
    """A UTC timestamp as 'YYYY-MM-DD HH:MM:SS.mmm' (what Plotly's date axes read)."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    text: str = value.isoformat(sep=" ", timespec="milliseconds")
    return text


def num(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN; ClickHouse returns NaN for 0/0)."""
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def ratio(part: Any, whole: Any) -> float | None:
    p, w = num(part), num(whole)
    return None if p is None or not w else p / w


def series_name(version: str, route: str) -> str:
    return f"{version} ({route})"


def _quantile(latency: Any, index: int) -> float | None:
    if isinstance(latency, Sequence) and len(latency) > index:
        return num(latency[index])
    return None


def _grouped(rows: Iterable[Row], *keys: str) -> dict[tuple[str, ...], list[Row]]:
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row[k]) for k in keys), []).append(row)
    return groups


def _seconds_covered(bucket: Any, step_seconds: int, until: datetime | None) -> float:
    # The newest bucket is still filling: a rate over its whole width would show a false drop.
    if until is None or not isinstance(bucket, datetime):
        return float(step_seconds)
    elapsed = (_naive_utc(until) - _naive_utc(bucket)).total_seconds()
    return float(min(step_seconds, max(elapsed, 1.0)))


def _naive_utc(value: datetime) -> datetime:
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def serving_series(
    rows: Iterable[Row], step_seconds: int, until: datetime | None = None
) -> list[JSON]:
    """One series per (version, route): requests per second, error rate, latency p50/95/99."""
    series = []
    for (version, route), group in _grouped(rows, "model_version", "route").items():
        series.append(
            {
                "name": series_name(version, route),
                "version": version,
                "route": route,
                "t": [iso(r["bucket"]) for r in group],
                "requests": [int(r["requests"]) for r in group],
                "rps": [
                    int(r["requests"]) / _seconds_covered(r["bucket"], step_seconds, until)
                    for r in group
                ],
                "error_rate": [ratio(r["errors"], r["requests"]) for r in group],
                "p50": [_quantile(r["latency"], 0) for r in group],
                "p95": [_quantile(r["latency"], 1) for r in group],
                "p99": [_quantile(r["latency"], 2) for r in group],
            }
        )
    return series


def coverage_series(rows: Iterable[Row]) -> list[JSON]:
    """Labelled share of each bucket's predictions, per (version, route); shadow answers are
    never labelled on their own, so their routes are left out."""
    return [
        {
            "name": series_name(version, route),
            "t": [iso(r["bucket"]) for r in group],
            "value": [_capped(ratio(r["labelled"], r["requests"])) for r in group],
        }
        for (version, route), group in _grouped(rows, "model_version", "route").items()
        if route != "shadow"
    ]


def _capped(share: float | None) -> float | None:
    # A feedback row replayed outside insert deduplication is counted twice by the rollup.
    return None if share is None else min(1.0, share)


def window_series(rows: Iterable[Row]) -> dict[str, list[JSON]]:
    """metric -> one series per (version, route) of windowed figures."""
    out: dict[str, list[JSON]] = {}
    for (metric, version, route), group in _grouped(
        rows, "metric", "model_version", "route"
    ).items():
        out.setdefault(metric, []).append(
            {
                "name": series_name(version, route),
                "t": [iso(r["bucket"]) for r in group],
                "value": [num(r["value"]) for r in group],
            }
        )
    return out


def event(row: Row) -> JSON:
    """A control entry for tables and chart markers."""
    details = row.get("details") or {}
    return {
        "t": iso(row["issued_at"]),
        "entry_type": row.get("entry_type", "command"),
        "kind": row["kind"],
        "issuer": row["issuer"],
        "reason": row["reason"],
        "production_version": row["production_version"],
        "canary_version": row["canary_version"],
        "canary_percent": num(row["canary_percent"]),
        "shadow_version": row["shadow_version"],
        "sequence": int(row["sequence"]),
        "details": dict(details) if isinstance(details, Mapping) else {},
    }


def canary_steps(events_newest_first: Sequence[JSON], until: datetime) -> JSON:
    """The canary share as a step line: each broadcast command sets it until the next one."""
    commands = [e for e in reversed(events_newest_first) if e["entry_type"] != "refusal"]
    t = [e["t"] for e in commands]
    percent = [e["canary_percent"] if e["canary_version"] else 0.0 for e in commands]
    if commands:
        t.append(iso(until))
        percent.append(percent[-1])
    return {"t": t, "percent": percent}


def traffic_mix(rows: Iterable[Row]) -> list[JSON]:
    """Requests, share of traffic, error rate and p95 per (version, route)."""
    materialised = list(rows)
    total = sum(int(r["requests"]) for r in materialised)
    return [
        {
            "version": r["model_version"],
            "route": r["route"],
            "requests": int(r["requests"]),
            "share": ratio(r["requests"], total),
            "error_rate": ratio(r["errors"], r["requests"]),
            "p95_ms": _quantile(r["latency"], 1),
            "last_seen": iso(r["last_seen"]),
        }
        for r in materialised
    ]


def serving_config(rows: Sequence[Row]) -> JSON | None:
    """What replicas were last told to serve, or None before any command."""
    if not rows:
        return None
    row = rows[0]
    return {
        "since": iso(row["issued_at"]),
        "kind": row["kind"],
        "production_version": row["production_version"],
        "canary_version": row["canary_version"] if row["canary_enabled"] else None,
        "canary_percent": num(row["canary_percent"]) if row["canary_enabled"] else 0.0,
        "shadow_version": row["shadow_version"] if row["shadow_enabled"] else None,
        "kill_switch": bool(row["kill_switch"]),
        "sequence": int(row["sequence"]),
        "rollout_step": (row.get("details") or {}).get("step"),
    }


def reliability_curves(rows: Iterable[Row]) -> list[JSON]:
    """Mean predicted probability vs observed rate per bin, per (version, route)."""
    return [
        {
            "name": series_name(version, route),
            "predicted": [num(r["mean_predicted"]) for r in group],
            "observed": [num(r["observed_rate"]) for r in group],
            "count": [int(num(r["count"]) or 0) for r in group],
        }
        for (version, route), group in _grouped(rows, "model_version", "route").items()
    ]


def drift_table(rows: Iterable[Row]) -> list[JSON]:
    return [
        {
            "feature": r["feature"] or "(score)",
            "version": r["model_version"],
            "route": r["route"],
            "psi": num(r["psi"]),
            "band": r["band"],
            "max_psi": num(r["max_psi"]),
            "window_end": iso(r["last_window_end"]),
            "sample_count": int(r["sample_count"]),
        }
        for r in rows
    ]


def retraining(rows: Iterable[Row]) -> list[JSON]:
    return [
        {
            "t": iso(r["timestamp"]),
            "version": r["model_version"],
            "should_retrain": bool(r["should_retrain"]),
            "urgency": r["urgency"],
            "reason": r["reason"],
            "max_psi": num(r["max_psi"]),
            "performance_drop": num(r["performance_drop"]),
            "drifted_features": list(r["drifted_features"]),
        }
        for r in rows
    ]


def retraining_steps(rows: Iterable[Row]) -> list[JSON]:
    return [
        {
            "t": iso(r["timestamp"]),
            "run_id": r["run_id"],
            "stage": r["stage"],
            "step": int(r["step"]),
            "base_version": r["base_version"],
            "candidate_version": r["candidate_version"],
            "actor": r["actor"],
            "reason": r["reason"],
            "lineage": dict(r["lineage"]),
        }
        for r in rows
    ]


def labelling_queue(rows: Iterable[Row]) -> list[JSON]:
    return [
        {
            "prediction_id": r["prediction_id"],
            "version": r["model_version"],
            "route": r["route"],
            "t": iso(r["timestamp"]),
            "prediction": num(r["prediction"]),
            "confidence": num(r["confidence"]),
        }
        for r in rows
    ]


def fitted_minutes(
    earliest: datetime | None,
    now: datetime,
    *,
    floor_minutes: int = 5,
    ceiling_minutes: int = 24 * 60,
    fallback_minutes: int = 60,
) -> int:
    """A range that shows all the data from `earliest` to now with a little room on the left
    (a tenth, at least a minute): a three-minute demo fills the charts instead of a sliver at
    the right edge; at most a day, and `fallback_minutes` when there is no data."""
    if earliest is None:
        return fallback_minutes
    if earliest.tzinfo is None:
        earliest = earliest.replace(tzinfo=UTC)
    span_minutes = max((now - earliest).total_seconds(), 0.0) / 60.0
    fitted = math.ceil(span_minutes + max(span_minutes / 10.0, 1.0))
    return min(max(fitted, floor_minutes), ceiling_minutes)


def data_extent(rows: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The extent row as the page reads it: first and last data, and the fitted range."""
    row = rows[0] if rows else {}
    found = int(row.get("found") or 0)
    earliest = row.get("earliest") if found else None
    latest = row.get("latest") if found else None
    return {
        "earliest": iso(earliest),
        "latest": iso(latest),
        "minutes": fitted_minutes(earliest if isinstance(earliest, datetime) else None, now),
    }


def pending_approval(row: Row) -> JSON | None:
    """A rollout waiting for a person: what it asks to do next and on what evidence (None if
    its recorded state cannot be read)."""
    details = {str(k): str(v) for k, v in dict(row["details"]).items()}
    try:
        found = rollout_of(details)
    except RolloutError:
        return None
    if found is None:
        return None
    plan, state = found
    steps = plan.steps_percent
    last = state.step_index >= len(steps) - 1
    gate = state.last_gate
    return {
        "model": state.model_name,
        "candidate_version": state.candidate_version,
        "known_good_version": state.known_good_version,
        "canary_percent": state.canary_percent(plan),
        "next": "promotion" if last else f"{steps[state.step_index + 1]:g}%",
        "approval": plan.approval.value,
        "since": iso(datetime.fromtimestamp(state.updated_ms / 1000, UTC)),
        "sequence": int(row["sequence"]),
        "reason": state.reason,
        "gate": None if gate is None else {"outcome": gate.outcome.value, "numbers": gate.numbers},
        "provisional": state.provisional,
    }
