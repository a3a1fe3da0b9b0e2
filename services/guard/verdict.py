"""What the guard concluded, with the figures that led there."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class VerdictKind(StrEnum):
    """HEALTHY: within every judged threshold. BREACH: roll back. INSUFFICIENT_SAMPLE: wait."""

    HEALTHY = "healthy"
    BREACH = "breach"
    INSUFFICIENT_SAMPLE = "insufficient_sample"


class GuardRule(StrEnum):
    """Which threshold a breach crossed."""

    ERROR_RATE = "error_rate"
    # Canary 4xx rate minus production's, on the same traffic.
    CLIENT_ERROR_EXCESS = "client_error_excess"
    P99_LATENCY_MS = "p99_latency_ms"
    P99_LATENCY_RATIO = "p99_latency_ratio"
    PERFORMANCE_DROP = "performance_drop"


@dataclass(frozen=True, slots=True)
class Breach:
    """One crossed threshold: the observed value and the limit it exceeded."""

    rule: GuardRule
    observed: float
    limit: float

    def describe(self) -> str:
        return f"{self.rule.value} {self.observed:.6g} > {self.limit:.6g}"


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """The outcome of one `judge` call; `breaches` is empty unless kind is BREACH."""

    kind: VerdictKind
    canary_requests: int
    canary_labelled: int
    breaches: tuple[Breach, ...] = ()
    # Whether the performance rule had enough labels on both sides to be applied.
    performance_judged: bool = False

    @property
    def reason(self) -> str:
        """A one-line explanation for logs and the rollback command."""
        if self.kind is VerdictKind.BREACH:
            return "canary breached " + "; ".join(breach.describe() for breach in self.breaches)
        if self.kind is VerdictKind.INSUFFICIENT_SAMPLE:
            return f"only {self.canary_requests} canary requests so far"
        return "canary within every judged threshold"

    def numbers(self) -> dict[str, str]:
        """The figures as strings, ready for `ControlCommand.details`."""
        figures = {
            "verdict": self.kind.value,
            "canary_requests": str(self.canary_requests),
            "canary_labelled": str(self.canary_labelled),
        }
        for breach in self.breaches:
            figures[breach.rule.value] = repr(breach.observed)
            figures[f"{breach.rule.value}_limit"] = repr(breach.limit)
        return figures
