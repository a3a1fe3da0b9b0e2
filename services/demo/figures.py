"""What the story checks and the summary quotes, read from ClickHouse (parameterised SQL).

Every query is limited to rows since the story started, so a ClickHouse server that keeps
earlier runs does not inflate the figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver import Client


@dataclass(frozen=True, slots=True)
class ControlEvent:
    sequence: int
    kind: str
    issuer: str
    reason: str
    issued_at_ms: int
    canary_version: str | None
    production_version: str


@dataclass(frozen=True, slots=True)
class Decision:
    model_version: str
    urgency: str
    reason: str
    max_psi: float | None
    drifted_features: list[str]


@dataclass(frozen=True, slots=True)
class RetrainStep:
    run_id: str
    stage: str
    candidate_version: str
    reason: str
    lineage: dict[str, str]
    figures: dict[str, str]


class StoryFigures:
    def __init__(self, client: Client, model: str, since_ms: int) -> None:
        self._client = client
        self._params: dict[str, object] = {"m": model, "since": since_ms / 1000}

    def control_events(self) -> list[ControlEvent]:
        rows = self._client.query(
            "SELECT sequence, kind, issuer, reason, toUnixTimestamp64Milli(issued_at), "
            "canary_version, production_version FROM control_log FINAL "
            "WHERE model_name = {m:String} AND entry_type = 'command' "
            "AND issued_at >= toDateTime64({since:Float64}, 3) ORDER BY sequence",
            parameters=self._params,
        ).result_rows
        return [ControlEvent(*row) for row in rows]

    def rollback_after(self, sequence: int) -> ControlEvent | None:
        return next(
            (e for e in self.control_events() if e.kind == "rollback" and e.sequence > sequence),
            None,
        )

    def promotion(self) -> ControlEvent | None:
        return next((e for e in self.control_events() if e.kind == "promote"), None)

    def feedback_rows(self) -> dict[str, int]:
        """Feedback rows by status (joined, expired, ...)."""
        rows = self._client.query(
            "SELECT status, count() FROM feedback FINAL WHERE model_name = {m:String} "
            "AND prediction_timestamp >= toDateTime64({since:Float64}, 3) GROUP BY status",
            parameters=self._params,
        ).result_rows
        return {str(status): int(count) for status, count in rows}

    def predictions(self) -> dict[tuple[str, str], int]:
        """Predictions landed in ClickHouse by (version, route)."""
        rows = self._client.query(
            "SELECT model_version, route, count() FROM predictions FINAL "
            "WHERE model_name = {m:String} AND timestamp >= toDateTime64({since:Float64}, 3) "
            "GROUP BY model_version, route ORDER BY model_version, route",
            parameters=self._params,
        ).result_rows
        return {(str(version), str(route)): int(count) for version, route, count in rows}

    def accuracy(self) -> dict[tuple[str, str], tuple[float, int]]:
        """Live accuracy and label count by (version, route), from joined feedback."""
        rows = self._client.query(
            "SELECT model_version, route, avg((prediction >= 0.5) = (ground_truth >= 0.5)), "
            "count() FROM feedback FINAL WHERE model_name = {m:String} AND status = 'joined' "
            "AND prediction_timestamp >= toDateTime64({since:Float64}, 3) "
            "GROUP BY model_version, route ORDER BY model_version, route",
            parameters=self._params,
        ).result_rows
        return {(str(v), str(r)): (float(acc), int(n)) for v, r, acc, n in rows}

    def retraining_decision(self, feature: str) -> Decision | None:
        """The first decision that asks for retraining and names `feature` as drifted."""
        rows = self._client.query(
            "SELECT model_version, urgency, reason, max_psi, drifted_features "
            "FROM retraining_decisions FINAL WHERE model_name = {m:String} AND should_retrain "
            "AND has(drifted_features, {f:String}) "
            "AND timestamp >= toDateTime64({since:Float64}, 3) ORDER BY timestamp LIMIT 1",
            parameters={**self._params, "f": feature},
        ).result_rows
        if not rows:
            return None
        version, urgency, reason, max_psi, drifted = rows[0]
        return Decision(str(version), str(urgency), str(reason), max_psi, list(drifted))

    def retraining_steps(self) -> list[RetrainStep]:
        """The retraining loop's recorded steps since the story started, oldest first."""
        rows = self._client.query(
            "SELECT run_id, stage, candidate_version, reason, "
            "JSONExtract(state, 'lineage', 'Map(String, String)'), "
            "JSONExtract(state, 'figures', 'Map(String, String)') "
            "FROM retraining_steps FINAL WHERE model_name = {m:String} "
            "AND timestamp >= toDateTime64({since:Float64}, 3) ORDER BY timestamp, step",
            parameters=self._params,
        ).result_rows
        return [
            RetrainStep(str(r), str(s), str(c), str(why), dict(lineage), dict(figures))
            for r, s, c, why, lineage, figures in rows
        ]
