"""Rows -> the page's JSON: series per version and route, NaN-free, events as steps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from safeloop.services.dashboard import shaping

T0 = datetime(2026, 1, 2, 12, 0)
T1 = datetime(2026, 1, 2, 12, 1)


def test_serving_series_groups_by_version_and_route() -> None:
    rows = [
        {
            "bucket": T0,
            "model_version": "v1",
            "route": "production",
            "requests": 120,
            "errors": 6,
            "latency": [4.0, 9.0, 20.0],
        },
        {
            "bucket": T1,
            "model_version": "v1",
            "route": "production",
            "requests": 60,
            "errors": 0,
            "latency": [5.0, 10.0, 30.0],
        },
        {
            "bucket": T0,
            "model_version": "v2",
            "route": "canary",
            "requests": 0,
            "errors": 0,
            "latency": [float("nan")] * 3,
        },
    ]
    series = shaping.serving_series(rows, step_seconds=60)
    assert [s["name"] for s in series] == ["v1 (production)", "v2 (canary)"]
    prod, canary = series
    assert prod["t"] == ["2026-01-02 12:00:00.000", "2026-01-02 12:01:00.000"]
    assert prod["rps"] == [2.0, 1.0]
    assert prod["error_rate"] == [0.05, 0.0]
    assert prod["p95"] == [9.0, 10.0]
    assert canary["error_rate"] == [None]
    assert canary["p99"] == [None]
    json.dumps(series, allow_nan=False)


def test_iso_converts_aware_timestamps_to_utc() -> None:
    aware = datetime(2026, 1, 2, 13, 0, tzinfo=UTC).astimezone()
    assert shaping.iso(aware) == "2026-01-02 13:00:00.000"
    assert shaping.iso(None) is None


def test_window_series_keys_by_metric() -> None:
    rows = [
        {
            "bucket": T0,
            "model_version": "v1",
            "route": "production",
            "metric": "accuracy",
            "value": 0.9,
        },
        {
            "bucket": T0,
            "model_version": "v1",
            "route": "shadow",
            "metric": "shadow_agreement_rate",
            "value": 0.97,
        },
    ]
    out = shaping.window_series(rows)
    assert out["accuracy"][0]["value"] == [0.9]
    assert out["shadow_agreement_rate"][0]["name"] == "v1 (shadow)"


def _event(t: datetime, kind: str, percent: float, canary: str | None = "v2") -> dict[str, object]:
    return shaping.event(
        {
            "issued_at": t,
            "entry_type": "command",
            "kind": kind,
            "issuer": "stepper",
            "reason": "why",
            "production_version": "v1",
            "canary_version": canary,
            "canary_percent": percent,
            "canary_enabled": True,
            "shadow_version": None,
            "sequence": 1,
            "details": {"step": "2"},
        }
    )


def test_canary_steps_hold_each_share_until_the_next_command() -> None:
    newest_first = [_event(T1, "rollback", 0.0, canary=None), _event(T0, "set_canary", 5.0)]
    steps = shaping.canary_steps(newest_first, until=datetime(2026, 1, 2, 12, 5))
    assert steps["percent"] == [5.0, 0.0, 0.0]
    assert steps["t"][-1] == "2026-01-02 12:05:00.000"
    assert shaping.canary_steps([], until=T1) == {"t": [], "percent": []}


def test_serving_config_reports_rollout_step_and_hides_disabled_canary() -> None:
    row = {
        "issued_at": T0,
        "kind": "set_canary",
        "production_version": "v1",
        "canary_version": "v2",
        "canary_percent": 25.0,
        "canary_enabled": False,
        "shadow_version": "v3",
        "shadow_enabled": True,
        "kill_switch": False,
        "sequence": 7,
        "details": {"step": "3"},
    }
    config = shaping.serving_config([row])
    assert config is not None
    assert config["canary_version"] is None
    assert config["canary_percent"] == 0.0
    assert config["shadow_version"] == "v3"
    assert config["rollout_step"] == "3"
    assert shaping.serving_config([]) is None


def test_traffic_mix_shares_sum_to_one() -> None:
    rows = [
        {
            "model_version": "v1",
            "route": "production",
            "requests": 90,
            "errors": 0,
            "latency": [1.0, 2.0, 3.0],
            "last_seen": T1,
        },
        {
            "model_version": "v2",
            "route": "canary",
            "requests": 10,
            "errors": 1,
            "latency": [1.0, 5.0, 9.0],
            "last_seen": T1,
        },
    ]
    mix = shaping.traffic_mix(rows)
    assert sum(m["share"] for m in mix) == 1.0
    assert mix[1]["error_rate"] == 0.1
    assert mix[1]["p95_ms"] == 5.0


def test_reliability_and_drift_and_queue_shapes() -> None:
    curves = shaping.reliability_curves(
        [
            {
                "model_version": "v1",
                "route": "production",
                "bin": b,
                "count": 10.0,
                "mean_predicted": b / 10,
                "observed_rate": b / 10,
            }
            for b in range(3)
        ]
    )
    assert curves[0]["predicted"] == [0.0, 0.1, 0.2]
    assert curves[0]["count"] == [10, 10, 10]
    drift = shaping.drift_table(
        [
            {
                "feature": "",
                "model_version": "v1",
                "route": "production",
                "psi": 0.3,
                "band": "major",
                "max_psi": 0.4,
                "last_window_end": T0,
                "sample_count": 100,
            }
        ]
    )
    assert drift[0]["feature"] == "(score)"
    queue = shaping.labelling_queue(
        [
            {
                "prediction_id": "p1",
                "model_version": "v1",
                "route": "canary",
                "timestamp": T0,
                "prediction": None,
                "confidence": 0.51,
            }
        ]
    )
    assert queue[0]["prediction"] is None
    assert queue[0]["confidence"] == 0.51


def test_coverage_leaves_shadow_out_and_caps_replayed_labels_at_one() -> None:
    rows = [
        {"bucket": T0, "model_version": "v1", "route": "production", "requests": 10, "labelled": 4},
        {
            "bucket": T1,
            "model_version": "v1",
            "route": "production",
            "requests": 10,
            "labelled": 12,
        },
        {"bucket": T1, "model_version": "v1", "route": "production", "requests": 0, "labelled": 0},
        {"bucket": T0, "model_version": "v2", "route": "shadow", "requests": 10, "labelled": 0},
    ]
    (production,) = shaping.coverage_series(rows)
    assert production["value"] == [0.4, 1.0, None]


def test_the_newest_bucket_rate_counts_only_the_seconds_it_covers() -> None:
    rows = [
        {
            "bucket": T0,
            "model_version": "v1",
            "route": "production",
            "requests": 120,
            "errors": 0,
            "latency": [1.0, 2.0, 3.0],
        },
        {
            "bucket": T1,
            "model_version": "v1",
            "route": "production",
            "requests": 30,
            "errors": 0,
            "latency": [1.0, 2.0, 3.0],
        },
    ]
    until = datetime(2026, 1, 2, 12, 1, 15, tzinfo=UTC)
    (series,) = shaping.serving_series(rows, step_seconds=60, until=until)
    assert series["rps"] == [2.0, 2.0]


def test_the_default_range_fits_the_data_up_to_a_day() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    # A three-minute demo: the whole of it plus a minute of room, never under five minutes.
    assert shaping.fitted_minutes(now - timedelta(minutes=3), now) == 5
    assert shaping.fitted_minutes(now - timedelta(minutes=7, seconds=30), now) == 9
    # An hour of data: the hour and a tenth more.
    assert shaping.fitted_minutes(now - timedelta(hours=1), now) == 66
    # Naive datetimes from ClickHouse are UTC.
    naive = (now - timedelta(hours=1)).replace(tzinfo=None)
    assert shaping.fitted_minutes(naive, now) == 66
    assert shaping.fitted_minutes(now - timedelta(days=3), now) == 1440
    assert shaping.fitted_minutes(None, now) == 60


def test_data_extent_of_no_rows_is_the_fallback() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    empty = {"found": 0, "earliest": datetime(1970, 1, 1), "latest": datetime(1970, 1, 1)}
    assert shaping.data_extent([empty], now) == {"earliest": None, "latest": None, "minutes": 60}
    row = {"found": 3, "earliest": datetime(2026, 1, 2, 11, 50), "latest": datetime(2026, 1, 2, 12)}
    extent = shaping.data_extent([row], now)
    assert extent == {
        "earliest": "2026-01-02 11:50:00.000",
        "latest": "2026-01-02 12:00:00.000",
        "minutes": 11,
    }


def test_a_pending_approval_says_what_would_happen_next() -> None:
    from safeloop.services.rollout.gate import GateOutcome, GateResult
    from safeloop.services.rollout.machine import Phase, RolloutState
    from safeloop.services.rollout.persist import PLAN_KEY, STATE_KEY, plan_to_json, state_to_json
    from safeloop.services.rollout.plan import Approval, RolloutPlan

    plan = RolloutPlan(steps_percent=(5.0, 50.0, 100.0), approval=Approval.EVERY_STEP)
    gate = GateResult(GateOutcome.PASS, "healthy", {"canary_error_rate": "0.01"})
    state = RolloutState(
        "fraud", "v2", "v1", Phase.AWAITING_APPROVAL, 1, 0, 0, 1_767_355_200_000, gate, "waits"
    )
    details = {STATE_KEY: state_to_json(state), PLAN_KEY: plan_to_json(plan), "x": "1"}
    shaped = shaping.pending_approval({"details": details, "sequence": 4})
    assert shaped is not None
    assert shaped["next"] == "100%"
    assert shaped["canary_percent"] == 50.0
    assert (shaped["candidate_version"], shaped["known_good_version"]) == ("v2", "v1")
    assert shaped["since"] == "2026-01-02 12:00:00.000"
    assert shaped["gate"] == {"outcome": "pass", "numbers": {"canary_error_rate": "0.01"}}
    last = state_to_json(RolloutState("fraud", "v2", "v1", Phase.AWAITING_APPROVAL, 2, 0, 0, 0))
    promotion = shaping.pending_approval({"details": {**details, STATE_KEY: last}, "sequence": 5})
    assert promotion is not None and promotion["next"] == "promotion"
    json.dumps([shaped, promotion])
    # Rows that are not readable rollouts are left out rather than breaking the panel.
    assert shaping.pending_approval({"details": {"x": "1"}, "sequence": 1}) is None
    broken = {**details, STATE_KEY: "{not json"}
    assert shaping.pending_approval({"details": broken, "sequence": 1}) is None
