"""The operator's control_log row, written on a thread after the command is published.

The command takes effect once it is on the control topic; the audit row only follows it. Writing
it on a thread keeps ClickHouse (and importing its client) off the operator's path: `--wait`
starts following the replicas at once.
"""

from __future__ import annotations

import logging
import threading

from safeloop.infra.settings import Settings
from safeloop.schemas.events import ControlCommand

logger = logging.getLogger(__name__)


class AuditJob:
    """Starts writing at construction; `finish` joins and says what went wrong, if anything."""

    def __init__(self, settings: Settings, command: ControlCommand) -> None:
        self._settings = settings
        self._command = command
        self._failure: str | None = None
        self._thread = threading.Thread(target=self._write, name="control-log-audit", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        # Imported here: clickhouse-connect (and numpy under it) costs ~0.3 s to import.
        from safeloop.infra.clickhouse.client import clickhouse_client
        from safeloop.infra.exceptions import WarehouseError
        from safeloop.services.control.audit import record

        try:
            record(clickhouse_client(self._settings), self._command)
        except WarehouseError as exc:
            self._failure = str(exc)
        except Exception as exc:
            logger.exception("writing the control_log row failed")
            self._failure = f"{type(exc).__name__}: {exc}"

    def finish(self, timeout_s: float) -> str | None:
        """Wait for the row; None once written, else why it is missing."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            return f"ClickHouse did not answer within {timeout_s:g}s"
        return self._failure
