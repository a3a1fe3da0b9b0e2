"""The dashboard's one write: an operator approves or rejects a rollout waiting for approval.

The command is signed and published exactly as `safeloop rollout approve|reject` does
(services/monitor/rollout_change); the request must carry the operator token.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

from clickhouse_connect.driver.exceptions import Error as ClickHouseError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from safeloop import SafeloopError
from safeloop.infra.settings import Secret, Settings
from safeloop.services.dashboard.access import operator_token_matches
from safeloop.services.dashboard.exceptions import RequestRefusedError
from safeloop.services.monitor.rollout_change import RolloutChanged, approve_rollout, reject_rollout
from safeloop.services.rollout.exceptions import NoRolloutError, TransitionError
from safeloop.services.rollout.persist import state_to_json

logger = logging.getLogger(__name__)

# A header, not `Authorization`: that one carries the dashboard's HTTP Basic login. A header
# also keeps other sites' forms out (a cross-site request cannot set it without CORS).
TOKEN_HEADER: Final = "x-safeloop-operator-token"  # noqa: S105 - a header name
# The control reader's consumer group: the operator role may use `safeloop-cli*` groups.
FOLLOWER_LABEL: Final = "cli-dashboard"
MAX_REASON: Final = 500
_OPERATOR = re.compile(r"[\w.@+-]{1,64}")
NO_STORE: Final = {"Cache-Control": "no-store"}


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class RolloutDecider(Protocol):
    """Applies an operator's decision to a model's rollout and publishes it."""

    def decide(self, decision: Decision, model: str, operator: str, why: str) -> RolloutChanged:
        """Raise NoRolloutError, TransitionError, or the error of a failed publish."""
        ...


@dataclass(frozen=True)
class PublishingDecider:
    """Signs and publishes with the dashboard's settings (operator role, control key)."""

    settings: Settings

    def decide(self, decision: Decision, model: str, operator: str, why: str) -> RolloutChanged:
        apply = approve_rollout if decision is Decision.APPROVE else reject_rollout
        return apply(self.settings, model, operator, why, follower_label=FOLLOWER_LABEL)


@dataclass(frozen=True)
class Writes:
    """What the write endpoints need: the token operators present and who publishes."""

    token: Secret
    decider: RolloutDecider


def writes_from(settings: Settings) -> Writes | None:
    """Writes are on only when an operator token is configured."""
    if not settings.dashboard_operator_token:
        return None
    return Writes(settings.dashboard_operator_token, PublishingDecider(settings))


def issuer_of(operator: str) -> str:
    """How a dashboard decision names its author in the command and `control_log`."""
    return f"{operator} (dashboard)"


def _text(body: dict[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise RequestRefusedError(400, f"{name} is required (at most {limit} characters)")
    return value.strip()


async def _parsed(request: Request) -> tuple[str, str, str]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise RequestRefusedError(400, "the body must be a JSON object") from exc
    if not isinstance(body, dict):
        raise RequestRefusedError(400, "the body must be a JSON object")
    model = _text(body, "model", 200)
    operator = _text(body, "operator", 64)
    if not _OPERATOR.fullmatch(operator):
        raise RequestRefusedError(400, "operator: letters, digits and . _ @ + - only")
    return model, operator, _text(body, "reason", MAX_REASON)


def decision_endpoint(
    decision: Decision, writes: Writes | None
) -> Callable[[Request], Awaitable[Response]]:
    """POST handler: check the token, then approve or reject the named model's rollout."""

    async def endpoint(request: Request) -> Response:
        model = "(unparsed)"
        try:
            if writes is None:
                raise RequestRefusedError(
                    403,
                    "the dashboard is read-only: set SAFELOOP_DASHBOARD_OPERATOR_TOKEN to let "
                    "operators approve or reject from it",
                )
            if not operator_token_matches(request.headers.get(TOKEN_HEADER), writes.token):
                raise RequestRefusedError(401, "operator token missing or wrong")
            model, operator, why = await _parsed(request)
            changed = await run_in_threadpool(
                writes.decider.decide, decision, model, issuer_of(operator), why
            )
        except RequestRefusedError as refused:
            return JSONResponse({"error": str(refused)}, refused.status, headers=NO_STORE)
        except NoRolloutError as exc:
            return JSONResponse({"error": str(exc)}, 404, headers=NO_STORE)
        except TransitionError as exc:
            return JSONResponse({"error": str(exc)}, 409, headers=NO_STORE)
        except (SafeloopError, ClickHouseError) as exc:
            logger.warning("dashboard %s of %s failed: %s", decision.value, model, exc)
            return JSONResponse({"error": f"not published: {exc}"}, 503, headers=NO_STORE)
        logger.info(
            "%s from the dashboard: %s the rollout of %s (sequence %s): %s",
            operator,
            decision.value,
            model,
            changed.sequence,
            why,
        )
        return JSONResponse(
            {
                "model": model,
                "phase": changed.state.phase.value,
                "sequence": changed.sequence,
                "state": json.loads(state_to_json(changed.state)),
            },
            headers=NO_STORE,
        )

    return endpoint
