"""`--wait` for the operator commands: follow the fleet, stream progress, say what is in force."""

from __future__ import annotations

import sys
from typing import Any

from safeloop.infra.settings import Settings
from safeloop.schemas.events import ControlCommand
from safeloop.services.cli.exit_codes import ExitCode
from safeloop.services.control.clients import make_broadcast_reader
from safeloop.services.control.exceptions import ControlError
from safeloop.services.control.fleet import FleetWatcher
from safeloop.services.control.keys import KeyRing
from safeloop.services.control.wait import (
    CommandRef,
    CommandWait,
    Outcome,
    ReplicaOutcome,
    WaitReport,
)

EXIT_CODES = {
    "in_force": ExitCode.OK,
    "superseded": ExitCode.SUPERSEDED,
    "refused": ExitCode.REFUSED,
    "timeout": ExitCode.TIMEOUT,
}


def wait_for_command(
    settings: Settings,
    keys: KeyRing,
    command: ControlCommand,
    timeout_s: float,
    *,
    stream: bool,
) -> tuple[int, dict[str, Any]]:
    """Wait for every live replica to decide on `command`; (exit code, its JSON)."""
    fleet_reader = make_broadcast_reader(settings, settings.topics.replica_status, "cli-wait")
    control_reader = make_broadcast_reader(settings, settings.topics.control, "cli-wait")
    progress = _write_progress if stream else None
    try:
        with FleetWatcher(fleet_reader, settings.replica_liveness_ms) as fleet:
            report = CommandWait(fleet, control_reader, keys, command, progress=progress).run(
                timeout_s
            )
    except ControlError as exc:
        if stream:
            sys.stderr.write(f"safeloop: {exc}\n")
        return ExitCode.FAILURE, {"applied": False, "outcome": "error", "error": str(exc)}
    finally:
        control_reader.close()
    if stream:
        # A timeout is a failure line on stderr, as before; any other ending is an answer.
        out = sys.stderr if report.verdict == "timeout" else sys.stdout
        out.write(summary_text(report, timeout_s))
    return EXIT_CODES[report.verdict], report_json(report)


def report_json(report: WaitReport) -> dict[str, Any]:
    """The `wait` object of `--json`: the verdict and each live replica's outcome."""
    in_force = report.verdict == "in_force"
    return {
        "outcome": report.verdict,
        "applied": in_force,
        "sequence": report.command.sequence,
        "replicas": [_replica_json(outcome) for outcome in report.replicas],
        "laggards": report.laggards,
        "newest_command": _ref_json(report.newest) if report.newest else None,
    }


def _replica_json(outcome: ReplicaOutcome) -> dict[str, Any]:
    return {
        "replica_id": outcome.replica_id,
        "outcome": outcome.outcome.value,
        "applied_sequence": outcome.applied_sequence,
        "superseded_by": _ref_json(outcome.superseded_by) if outcome.superseded_by else None,
        "refusal": outcome.refusal,
    }


def _ref_json(ref: CommandRef) -> dict[str, Any]:
    return {
        "sequence": ref.sequence,
        "command_id": ref.command_id,
        "kind": ref.kind,
        "issuer": ref.issuer,
        "reason": ref.reason,
    }


def describe(outcome: ReplicaOutcome) -> str:
    """One line for one replica, e.g. `replica-a: superseded by sequence 8 (rollback by …)`."""
    if outcome.outcome is Outcome.IN_FORCE:
        return f"{outcome.replica_id}: applied sequence {outcome.applied_sequence}, in force"
    if outcome.outcome is Outcome.SUPERSEDED:
        by = outcome.superseded_by
        if by is None:
            return (
                f"{outcome.replica_id}: superseded by sequence {outcome.applied_sequence} "
                "(not verifiable with this key ring)"
            )
        why = f": {by.reason}" if by.reason else ""
        return (
            f"{outcome.replica_id}: superseded by sequence {by.sequence} "
            f"({by.kind} by {by.issuer}{why})"
        )
    if outcome.outcome is Outcome.REFUSED:
        return f"{outcome.replica_id}: refused: {outcome.refusal}"
    return f"{outcome.replica_id}: not applied yet (at sequence {outcome.applied_sequence})"


def _write_progress(outcome: ReplicaOutcome) -> None:
    sys.stderr.write(f"  {describe(outcome)}\n")
    sys.stderr.flush()


def summary_text(report: WaitReport, timeout_s: float) -> str:
    """The closing lines on stdout (the per-replica lines went to stderr as they came)."""
    sequence = report.command.sequence
    if not report.replicas:
        return "no live replicas to wait for\n"
    names = ", ".join(outcome.replica_id for outcome in report.replicas)
    verdict = report.verdict
    if verdict == "in_force":
        return (
            f"sequence {sequence} in force on all {len(report.replicas)} live replicas: {names}\n"
        )
    lines = []
    if verdict == "timeout":
        lines.append(
            f"safeloop: after {timeout_s:g}s, {len(report.laggards)} replica(s) have not applied "
            f"sequence {sequence}: {', '.join(report.laggards)}"
        )
    else:
        lines.append(f"sequence {sequence} is not in force everywhere ({verdict}):")
    lines.extend(
        f"  {describe(outcome)}"
        for outcome in report.replicas
        if outcome.outcome is not Outcome.PENDING
    )
    return "\n".join(lines) + "\n"
