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
class SegmentBreach:
    """A threshold crossed inside one segment only, significant after the correction over the
    segments judged (`adjusted_p` at most the guard's segment alpha)."""

    segment: str
    breach: Breach
    adjusted_p: float

    def describe(self) -> str:
        adjusted = f"adjusted p {self.adjusted_p:.3g}"
        return f"segment {self.segment}: {self.breach.describe()} ({adjusted})"


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """The outcome of one `judge` call; `breaches` is empty unless kind is BREACH."""

    kind: VerdictKind
    canary_requests: int
    canary_labelled: int
    breaches: tuple[Breach, ...] = ()
    # Whether the performance rule had enough labels on both sides to be applied.
    performance_judged: bool = False
    # Breaches found per segment when the whole canary is within every threshold.
    segment_breaches: tuple[SegmentBreach, ...] = ()
    # Segments with the minimum sample, and the family corrected over (every segment seen).
    segments_judged: int = 0
    segments_seen: int = 0

    @property
    def reason(self) -> str:
        """A one-line explanation for logs and the rollback command."""
        if self.kind is VerdictKind.BREACH:
            parts = [breach.describe() for breach in self.breaches]
            parts += [breach.describe() for breach in self.segment_breaches]
            return "canary breached " + "; ".join(parts)
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
        if self.segments_seen:
            figures["segments_judged"] = str(self.segments_judged)
            figures["segments_seen"] = str(self.segments_seen)
        if self.segment_breaches:
            # The segment worst off (smallest adjusted p) names the rollback.
            worst = min(self.segment_breaches, key=lambda found: found.adjusted_p)
            figures["segment"] = worst.segment
            figures["failed_segments"] = ",".join(
                dict.fromkeys(found.segment for found in self.segment_breaches)
            )
        for found in self.segment_breaches:
            rule, label = found.breach.rule.value, found.segment
            figures[f"{rule}[{label}]"] = repr(found.breach.observed)
            figures[f"{rule}_limit[{label}]"] = repr(found.breach.limit)
            figures[f"{rule}_adjusted_p[{label}]"] = repr(found.adjusted_p)
        return figures
