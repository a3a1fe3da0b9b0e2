"""Checks that a model config is coherent, shared by the CLI (before signing) and replicas."""

from __future__ import annotations

from safeloop.schemas.events import ModelConfig

MAX_BASIS_POINTS = 10_000


def config_problem(config: ModelConfig) -> str | None:
    """Why `config` cannot be served, or None when it can."""
    if not config.production_version:
        return "production_version is empty"
    if not 0 <= config.canary_basis_points <= MAX_BASIS_POINTS:
        return f"canary_basis_points {config.canary_basis_points} is outside 0..{MAX_BASIS_POINTS}"
    if config.canary_basis_points > 0 and config.canary_version is None:
        return "a canary share without a canary_version"
    if config.shadow_enabled and config.shadow_version is None:
        return "shadow enabled without a shadow_version"
    return None
