"""The short text the demo ends with: counts, the rollback time, promotion, the retraining
decision and live figures, all but the request counts read back from ClickHouse."""

from __future__ import annotations

import time

from safeloop.services.demo.figures import RetrainStep, StoryFigures
from safeloop.services.demo.story import StoryResult
from safeloop.services.demo.traffic import TrafficCounts


def render(
    result: StoryResult,
    figures: StoryFigures,
    traffic: TrafficCounts,
    outcomes_published: int,
    dashboard_url: str,
) -> str:
    lines = ["", "=" * 72, "safeloop demo: summary", "=" * 72]
    served = ", ".join(f"{v} {r} {n}" for (v, r), n in sorted(traffic.routes.items()))
    lines.append(f"requests      {traffic.sent} sent, {traffic.failed} failed ({served})")
    landed = figures.predictions()
    lines.append(
        f"predictions   {sum(landed.values())} rows in ClickHouse; "
        f"outcomes published {outcomes_published}"
    )
    feedback = figures.feedback_rows()
    detail = ", ".join(f"{status} {count}" for status, count in sorted(feedback.items()))
    lines.append(f"feedback      {sum(feedback.values())} rows in ClickHouse ({detail or 'none'})")
    for (version, route), (accuracy, count) in sorted(figures.accuracy().items()):
        lines.append(f"  accuracy    {version:<4} {route:<10} {accuracy:6.1%} over {count} labels")
    if result.promotion is not None:
        lines.append(f"promotion     v2 promoted (control sequence {result.promotion.sequence})")
    if result.rollback is not None:
        took = (
            f"{result.rollback_seconds:.1f} s from the first v3 answer to applied on every replica"
            if result.rollback_seconds is not None
            else "time unknown"
        )
        lines.append(
            f"rollback      canary v3 set by the operator (sequence "
            f"{result.bad_canary_sequence}), rolled back by {result.rollback.issuer}:"
        )
        lines.append(f"              {result.rollback.reason}")
        lines.append(f"              {took}; applied on {', '.join(result.rolled_back_on)}")
    if result.decision is not None:
        decision = result.decision
        psi = f"{decision.max_psi:.2f}" if decision.max_psi is not None else "-"
        lines.append(
            f"retraining    {decision.model_version}: {decision.urgency} (max PSI {psi}, drifted "
            f"{', '.join(decision.drifted_features)})"
        )
    if result.retraining:
        first, last = result.retraining[0], result.retraining[-1]
        lineage = next((s.lineage for s in result.retraining if s.lineage), {})
        shadow = next((s.figures for s in reversed(result.retraining) if s.figures), {})
        lines.append(
            f"retrain loop  run {first.run_id}: {' -> '.join(s.stage for s in result.retraining)}"
        )
        if lineage:
            half_life = _duration(float(lineage.get("half_life_ms", "0")))
            lines.append(
                f"              candidate {last.candidate_version} trained on "
                f"{lineage.get('training_rows', '?')} labelled rows (half-life {half_life}), "
                f"shadow agreement {shadow.get('shadow_agreement', '?')} over "
                f"{shadow.get('shadow_pairs', '?')} pairs"
            )
        lines.append(f"              {last.reason[:100]}")
        lines.append(f"loop closed   {_closing(first.stage, last)}")
    lines.append("control log")
    for event in figures.control_events():
        at = time.strftime("%H:%M:%S", time.localtime(event.issued_at_ms / 1000))
        lines.append(f"  {at} #{event.sequence:<3} {event.kind:<11} {event.reason[:50]}")
    lines.append(f"story took    {time.time() - result.started_at:.0f} s")
    if result.missing:
        lines.append("MISSING       " + "; ".join(result.missing))
    else:
        lines.append("every expected outcome happened")
    lines.append(f"dashboard     {dashboard_url}")
    return "\n".join(lines) + "\n"


def _closing(first_stage: str, last: RetrainStep) -> str:
    """How the retraining run ended, in one line: the circle closes on a decided canary."""
    candidate = last.candidate_version or "the candidate"
    if last.stage == "promoted":
        return f"yes: decision -> {candidate} -> shadow -> canary -> promoted, now production"
    if last.stage == "rolled_back":
        return f"yes: {candidate} was worse on live traffic and rolled back; production unchanged"
    return f"no: the run went from {first_stage} to {last.stage}"


def _duration(ms: float) -> str:
    """A half-life as people say it: minutes, hours or days."""
    for unit, size in (("d", 86_400_000.0), ("h", 3_600_000.0)):
        if ms >= size:
            return f"{ms / size:g} {unit}"
    return f"{ms / 60_000:g} min"
