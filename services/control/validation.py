"""Checks that a model config is coherent, shared by the CLI (before signing) and replicas."""

from __future__ import annotations

from safeloop.schemas.events import ModelConfig

MAX_BASIS_POINTS = 10_000
# Longer holds look like an outage, not a rehearsal.
MAX_INJECTED_LATENCY_MS = 60_000.0


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
    injection = config.injection
    if injection is not None:
        if not injection.version:
            return "injection without a version"
        if not 0.0 <= injection.error_rate <= 1.0:
            return f"injection error_rate {injection.error_rate} is outside 0..1"
        if not 0.0 <= injection.latency_ms <= MAX_INJECTED_LATENCY_MS:
            return (
                f"injection latency_ms {injection.latency_ms} is outside "
                f"0..{MAX_INJECTED_LATENCY_MS:g}"
            )
    return None
