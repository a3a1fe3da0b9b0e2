"""The CLI's pre-flight step: before a canary, shadow or promotion is published, check it
(`services/control/preflight_evidence.py`) unless the operator passed `--force`.

Kafka, ClickHouse and model-store imports happen inside the check, so that registering the
sub-commands stays cheap for every other command.
"""

from __future__ import annotations

import argparse
from typing import Any

from safeloop.infra.settings import Settings
from safeloop.schemas.events import ControlCommand

FLEET_READ_TIMEOUT_S = 15.0
GATED_COMMANDS = ("canary", "promote", "shadow")


def add_force_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="skip pre-flight (the version loads on every live replica and accepts the "
        "features production traffic carries)",
    )


def check_before_publish(
    settings: Settings, args: argparse.Namespace, command: ControlCommand
) -> dict[str, Any]:
    """What pre-flight checked and noted; raises PreflightError when it refuses."""
    if getattr(args, "force", False):
        return {"skipped": "--force"}
    # Lazy: only the gated commands pay for these.
    from safeloop.infra.clickhouse.client import clickhouse_client
    from safeloop.services.control.clients import make_broadcast_reader
    from safeloop.services.control.fleet import FleetSnapshot, FleetWatcher
    from safeloop.services.control.preflight_evidence import preflight
    from safeloop.services.models.open_store import open_model_store

    def fleet() -> FleetSnapshot:
        reader = make_broadcast_reader(settings, settings.topics.replica_status, "cli-preflight")
        with FleetWatcher(reader, settings.replica_liveness_ms) as watcher:
            return watcher.read_to_end(FLEET_READ_TIMEOUT_S)

    report = preflight(
        command.model_name,
        command.kind,
        command.config,
        store=open_model_store(settings),
        fleet=fleet,
        warehouse=lambda: clickhouse_client(settings),
    )
    return {"checked_versions": list(report.checked_versions), "notes": report.notes}
