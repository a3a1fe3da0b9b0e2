"""Canary routing: a stable, versioned hash of the routing key picks production or canary."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from safeloop.schemas.events import ModelConfig, Route

# Bump only with a migration plan: a new hash reshuffles which users see the canary.
ROUTING_HASH_VERSION = 1
BUCKET_COUNT = 10_000  # one bucket = 0.01 % of traffic = one basis point


def routing_bucket(model_name: str, routing_key: str) -> int:
    """Hash version 1: blake2b-64 of `model_name NUL routing_key`, modulo 10,000.

    The model name salts the hash so that the same users are not every model's canary.
    """
    digest = hashlib.blake2b(f"{model_name}\x00{routing_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKET_COUNT


@dataclass(frozen=True, slots=True)
class RouteDecision:
    route: Route
    version: str
    bucket: int


def choose_route(model_name: str, routing_key: str, config: ModelConfig) -> RouteDecision:
    """Canary iff its bucket is below the canary share, so growing the share only ever moves
    keys from production to canary, and a share of 0 sends everything back at once."""
    bucket = routing_bucket(model_name, routing_key)
    if config.kill_switch:
        return RouteDecision(
            Route.PRODUCTION, config.fallback_version or config.production_version, bucket
        )
    if (
        config.canary_enabled
        and config.canary_version is not None
        and bucket < config.canary_basis_points
    ):
        return RouteDecision(Route.CANARY, config.canary_version, bucket)
    return RouteDecision(Route.PRODUCTION, config.production_version, bucket)
