"""What a rollout transition asks for; the control plane turns each into a signed command."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SetCanary:
    """Send `percent` of the model's traffic to `version`."""

    model_name: str
    version: str
    percent: float
    reason: str

    @property
    def basis_points(self) -> int:
        """The share as `ModelConfig.canary_basis_points` expects it (10_000 = all)."""
        return round(self.percent * 100)


@dataclass(frozen=True, slots=True)
class Promote:
    """Make `version` the production version; `previous_version` stays the rollback target."""

    model_name: str
    version: str
    previous_version: str
    reason: str


@dataclass(frozen=True, slots=True)
class Rollback:
    """Serve `to_version` alone again, now, with why and the figures that decided it."""

    model_name: str
    to_version: str
    from_version: str
    reason: str
    numbers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pause:
    """Hold the canary at its current share until an operator resumes or aborts."""

    model_name: str
    version: str
    percent: float
    reason: str
    numbers: Mapping[str, str] = field(default_factory=dict)


Intent = SetCanary | Promote | Rollback | Pause
