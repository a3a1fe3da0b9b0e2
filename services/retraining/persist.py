"""A retraining run as JSON and as a `retraining_steps` row: what a restart resumes from."""

from __future__ import annotations

import json
from typing import Any

from safeloop.schemas.tables import RetrainingStep
from safeloop.services.retraining.exceptions import RetrainingError
from safeloop.services.retraining.machine import Evaluation, RetrainRun, Stage


def run_to_json(run: RetrainRun) -> str:
    evaluation = run.evaluation
    return json.dumps(
        {
            "run_id": run.run_id,
            "model_name": run.model_name,
            "base_version": run.base_version,
            "stage": run.stage.value,
            "step": run.step,
            "started_ms": run.started_ms,
            "stage_started_ms": run.stage_started_ms,
            "updated_ms": run.updated_ms,
            "reason": run.reason,
            "actor": run.actor,
            "candidate_version": run.candidate_version,
            "lineage": dict(run.lineage),
            "figures": dict(run.figures),
            "evaluation": None
            if evaluation is None
            else {
                "metric": evaluation.metric,
                "higher_is_better": evaluation.higher_is_better,
                "candidate": evaluation.candidate,
                "production": evaluation.production,
                "rows": evaluation.rows,
            },
        },
        sort_keys=True,
    )


def run_from_json(text: str) -> RetrainRun:
    """The run a `retraining_steps.state` holds; RetrainingError if it is not one."""
    try:
        raw: dict[str, Any] = json.loads(text)
        evaluation = raw.get("evaluation")
        production = None if evaluation is None else evaluation.get("production")
        return RetrainRun(
            run_id=str(raw["run_id"]),
            model_name=str(raw["model_name"]),
            base_version=str(raw["base_version"]),
            stage=Stage(raw["stage"]),
            step=int(raw["step"]),
            started_ms=int(raw["started_ms"]),
            stage_started_ms=int(raw["stage_started_ms"]),
            updated_ms=int(raw["updated_ms"]),
            reason=str(raw["reason"]),
            actor=str(raw["actor"]),
            candidate_version=str(raw["candidate_version"]),
            lineage={str(k): str(v) for k, v in raw["lineage"].items()},
            figures={str(k): str(v) for k, v in raw["figures"].items()},
            evaluation=None
            if evaluation is None
            else Evaluation(
                metric=str(evaluation["metric"]),
                higher_is_better=bool(evaluation["higher_is_better"]),
                candidate=float(evaluation["candidate"]),
                production=None if production is None else float(production),
                rows=int(evaluation["rows"]),
            ),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RetrainingError(f"not a recorded retraining run: {exc!r}") from exc


def step_of(run: RetrainRun) -> RetrainingStep:
    """The row recording `run` as it is after its latest transition."""
    return RetrainingStep(
        run_id=run.run_id,
        model_name=run.model_name,
        base_version=run.base_version,
        candidate_version=run.candidate_version,
        stage=run.stage.value,
        step=run.step,
        timestamp_ms=run.updated_ms,
        actor=run.actor,
        reason=run.reason,
        state=run_to_json(run),
    )
