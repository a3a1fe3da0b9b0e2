"""Gathering pre-flight evidence: live replicas' loadable versions (`replica-status`), each
version's features (the model store) and what production traffic sent (ClickHouse)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import closing

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseError

from safeloop.infra.exceptions import WarehouseError
from safeloop.schemas.events import CommandKind, ModelConfig
from safeloop.services.control.exceptions import PreflightError
from safeloop.services.control.fleet import FleetSnapshot
from safeloop.services.control.preflight import (
    PreflightReport,
    feature_problems,
    replica_problems,
    versions_to_check,
)
from safeloop.services.models.exceptions import ModelError
from safeloop.services.models.store_protocol import ModelStoreProtocol

logger = logging.getLogger(__name__)

# "Recent" production traffic: the last hour, at most this many answered requests.
TRAFFIC_WINDOW_S = 3_600
TRAFFIC_SAMPLE_ROWS = 10_000

_PRODUCTION_FEATURES = """
SELECT DISTINCT arrayJoin(mapKeys(features)) AS feature
FROM (
    SELECT features FROM predictions
    WHERE model_name = {model:String} AND route = 'production' AND error IS NULL
      AND timestamp >= now64(3) - toIntervalSecond({window_s:UInt32})
    ORDER BY timestamp DESC
    LIMIT {rows:UInt32}
)
"""


def production_features(client: Client, model_name: str, window_s: int) -> list[str] | None:
    """Feature names of production's recent answered requests; None when there were none."""
    try:
        result = client.query(
            _PRODUCTION_FEATURES,
            parameters={"model": model_name, "window_s": window_s, "rows": TRAFFIC_SAMPLE_ROWS},
        )
    except ClickHouseError as exc:
        raise WarehouseError(f"cannot read recent predictions of {model_name}: {exc}") from exc
    names = sorted(str(row[0]) for row in result.result_rows)
    return names or None


def preflight(
    model_name: str,
    kind: CommandKind,
    config: ModelConfig,
    *,
    store: ModelStoreProtocol,
    fleet: Callable[[], FleetSnapshot],
    warehouse: Callable[[], Client],
    window_s: int = TRAFFIC_WINDOW_S,
) -> PreflightReport:
    """Check the versions `config` puts on the traffic; PreflightError lists every problem."""
    versions = versions_to_check(kind, config)
    report = PreflightReport(tuple(versions))
    if not versions:
        return report
    snapshot = fleet()
    seen: list[str] | None = None
    try:
        with closing(warehouse()) as client:
            seen = production_features(client, model_name, window_s)
    except WarehouseError as exc:
        report.problems.append(f"cannot check features against production traffic: {exc}")
        seen = None
        warehouse_down = True
    else:
        warehouse_down = False
    for version in versions:
        problems, notes = replica_problems(model_name, version, snapshot)
        report.problems.extend(problems)
        report.notes.extend(notes)
        try:
            required = store.load_metadata(model_name, version).feature_names
        except (ModelError, ValueError) as exc:
            report.problems.append(f"{model_name} {version} is not in the model store: {exc}")
            continue
        if warehouse_down:
            continue
        problems, notes = feature_problems(version, required, seen, window_s)
        report.problems.extend(problems)
        report.notes.extend(notes)
    if report.problems:
        raise PreflightError(model_name, report.problems)
    for note in report.notes:
        logger.info("pre-flight %s: %s", model_name, note)
    return report
