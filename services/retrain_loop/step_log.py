"""Retraining runs in ClickHouse: one `retraining_steps` row per transition, read back to resume."""

from __future__ import annotations

import logging

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from safeloop.infra.clickhouse.insert import insert_idempotent
from safeloop.infra.exceptions import WarehouseError
from safeloop.schemas.tables import RETRAINING_STEPS
from safeloop.services.retraining.exceptions import RetrainingError
from safeloop.services.retraining.machine import RetrainRun
from safeloop.services.retraining.persist import run_from_json, step_of

logger = logging.getLogger(__name__)

# The newest recorded state of each run (ReplacingMergeTree: a retried row collapses).
_LATEST = (
    "SELECT run_id, argMax(state, step) FROM retraining_steps FINAL "
    "WHERE ({model:String} = '' OR model_name = {model:String}) "
    "AND ({run:String} = '' OR run_id = {run:String}) "
    "GROUP BY run_id ORDER BY max(timestamp)"
)


class StepLog:
    """Records transitions and reads runs back; WarehouseError becomes RetrainingError."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def record(self, run: RetrainRun) -> None:
        try:
            insert_idempotent(self._client, RETRAINING_STEPS, RETRAINING_STEPS.rows([step_of(run)]))
        except WarehouseError as exc:
            raise RetrainingError(f"retraining step not recorded: {exc}") from exc

    def runs(self, model_name: str = "", run_id: str = "") -> list[RetrainRun]:
        """The newest state of every recorded run (of one model, or one run), oldest first."""
        try:
            result = self._client.query(
                _LATEST, parameters={"model": model_name, "run": run_id}
            ).result_rows
        except ClickHouseError as exc:
            raise RetrainingError(f"retraining steps not read: {exc}") from exc
        return [run_from_json(str(row[1])) for row in result]

    def latest(self, model_name: str) -> RetrainRun | None:
        """The model's most recently started run."""
        runs = self.runs(model_name)
        return max(runs, key=lambda run: run.started_ms) if runs else None

    def find(self, run_id: str) -> RetrainRun | None:
        found = self.runs(run_id=run_id)
        return found[0] if found else None
