"""The newest rollout state of a model, as the `control_log` audit trail recorded it."""

from __future__ import annotations

from clickhouse_connect.driver import Client

from safeloop.services.rollout.machine import RolloutState
from safeloop.services.rollout.persist import rollout_of
from safeloop.services.rollout.plan import RolloutPlan

_LATEST = (
    "SELECT details FROM control_log WHERE model_name = {model:String} AND entry_type = 'rollout' "
    "ORDER BY issued_at DESC, sequence DESC LIMIT 1"
)


def latest_rollout(client: Client, model_name: str) -> tuple[RolloutPlan, RolloutState] | None:
    """The plan and state after the model's last rollout transition, or None if it never had one."""
    result = client.query(_LATEST, parameters={"model": model_name})
    if not result.result_rows:
        return None
    details = {str(k): str(v) for k, v in dict(result.result_rows[0][0]).items()}
    return rollout_of(details)
