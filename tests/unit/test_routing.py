"""Canary routing: fixed hash vectors, stickiness as the share grows, accuracy, rollback."""

from __future__ import annotations

import pytest

from safeloop.schemas.events import ModelConfig, Route
from safeloop.services.serving.routing import (
    BUCKET_COUNT,
    ROUTING_HASH_VERSION,
    choose_route,
    routing_bucket,
)

KEYS = [f"user-{index}" for index in range(100_000)]


def canary_config(basis_points: int, **overrides: object) -> ModelConfig:
    fields: dict[str, object] = {
        "production_version": "v1",
        "canary_version": "v2",
        "canary_basis_points": basis_points,
    }
    fields.update(overrides)
    return ModelConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "key", "bucket"),
    [
        ("churn", "user-1", 8482),
        ("churn", "user-2", 172),
        ("churn", "", 4082),
        ("price", "user-1", 3262),
        ("churn", "Zoë ☃", 443),
    ],
)
def test_hash_version_1_is_stable(model: str, key: str, bucket: int) -> None:
    # These vectors pin hash version 1: if one changes, users were silently reshuffled.
    assert ROUTING_HASH_VERSION == 1
    assert routing_bucket(model, key) == bucket


def test_buckets_cover_the_range() -> None:
    buckets = {routing_bucket("churn", key) for key in KEYS[:50_000]}
    assert min(buckets) == 0
    assert max(buckets) == BUCKET_COUNT - 1


@pytest.mark.parametrize("percent", [0.01, 1, 5, 10, 25, 50, 75, 99])
def test_canary_share_within_half_a_point(percent: float) -> None:
    config = canary_config(round(percent * 100))
    canary = sum(choose_route("churn", key, config).route is Route.CANARY for key in KEYS)
    assert abs(100 * canary / len(KEYS) - percent) < 0.5


def test_growing_the_share_only_moves_keys_to_canary() -> None:
    previous: set[str] = set()
    for basis_points in (0, 1, 100, 500, 1000, 2500, 5000, 10_000):
        config = canary_config(basis_points)
        current = {k for k in KEYS if choose_route("churn", k, config).route is Route.CANARY}
        assert previous <= current
        previous = current
    assert len(previous) == len(KEYS)


def test_same_key_same_answer() -> None:
    config = canary_config(3000)
    first = [choose_route("churn", key, config) for key in KEYS[:1000]]
    assert first == [choose_route("churn", key, config) for key in KEYS[:1000]]


def test_rollback_sends_everyone_to_production_at_once() -> None:
    config = canary_config(0)
    decisions = {choose_route("churn", key, config).version for key in KEYS[:10_000]}
    assert decisions == {"v1"}


def test_canary_disabled_flag_wins() -> None:
    config = canary_config(10_000, canary_enabled=False)
    assert choose_route("churn", "user-1", config).route is Route.PRODUCTION


def test_kill_switch_routes_to_fallback() -> None:
    config = canary_config(10_000, kill_switch=True, fallback_version="v0")
    decision = choose_route("churn", "user-1", config)
    assert (decision.route, decision.version) == (Route.PRODUCTION, "v0")


def test_kill_switch_without_fallback_uses_production() -> None:
    config = canary_config(10_000, kill_switch=True)
    assert choose_route("churn", "user-1", config).version == "v1"


def test_models_are_salted_independently() -> None:
    config = canary_config(1000)
    churn = {k for k in KEYS[:20_000] if choose_route("churn", k, config).route is Route.CANARY}
    price = {k for k in KEYS[:20_000] if choose_route("price", k, config).route is Route.CANARY}
    # Independent 10 % samples overlap on about 1 % of keys, not 10 %.
    assert len(churn & price) < 0.2 * len(churn)
