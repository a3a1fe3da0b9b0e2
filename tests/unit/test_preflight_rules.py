"""Pre-flight rules: which versions a command puts on traffic, whether every live replica can
load them, and whether they accept the features production traffic carries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from safeloop.schemas.events import CommandKind, ModelConfig, ReplicaState, ReplicaStatus
from safeloop.services.control.exceptions import PreflightError
from safeloop.services.control.fleet import FleetSnapshot
from safeloop.services.control.preflight import (
    feature_problems,
    replica_problems,
    versions_to_check,
)
from safeloop.services.control.preflight_evidence import preflight

NOW = 1_700_000_000_000
FEATURES = ("age", "income")


def status(replica_id: str, loaded: dict[str, list[str]], age_ms: int = 0) -> ReplicaStatus:
    return ReplicaStatus(
        replica_id=replica_id,
        timestamp=NOW - age_ms,
        state=ReplicaState.READY,
        started_at=NOW - 60_000,
        config_versions={},
        last_command_id=None,
        refused_count=0,
        loaded_versions=loaded,
    )


def fleet(*statuses: ReplicaStatus) -> FleetSnapshot:
    return FleetSnapshot({s.replica_id: s for s in statuses}, NOW, liveness_ms=10_000)


BASE = ModelConfig(production_version="v1")


@pytest.mark.parametrize(
    ("kind", "config", "expected"),
    [
        (CommandKind.SET_CANARY, ModelConfig("v1", "v2", 500), ["v2"]),
        (CommandKind.SET_CANARY, ModelConfig("v1", "v2", 0), []),  # a canary at 0 % gets none
        (
            CommandKind.SET_SHADOW,
            ModelConfig("v1", shadow_version="v3", shadow_enabled=True),
            ["v3"],
        ),
        (CommandKind.SET_SHADOW, ModelConfig("v1", shadow_version="v3"), []),  # shadow off
        (CommandKind.PROMOTE, ModelConfig("v2"), ["v2"]),
        (CommandKind.ROLLBACK, ModelConfig("v1"), []),  # a rollback is never held up
        (CommandKind.SET_FLAG, ModelConfig("v1", "v2", 500), []),
    ],
)
def test_versions_put_on_traffic(
    kind: CommandKind, config: ModelConfig, expected: list[str]
) -> None:
    assert versions_to_check(kind, config) == expected


def test_a_version_every_live_replica_loaded_passes() -> None:
    snapshot = fleet(status("a", {"churn": ["v1", "v2"]}), status("b", {"churn": ["v1", "v2"]}))
    assert replica_problems("churn", "v2", snapshot) == ([], [])


def test_replicas_that_cannot_load_the_version_are_named() -> None:
    snapshot = fleet(
        status("a", {"churn": ["v1", "v2"]}),
        status("b", {"churn": ["v1"]}),
        status("c", {"other": ["x1"]}),  # does not serve churn: not asked
        status("gone", {"churn": ["v1"]}, age_ms=60_000),  # not live: not asked
    )
    problems, _ = replica_problems("churn", "v2", snapshot)
    assert problems == ["churn v2 is not loadable on replica(s) b"]


def test_a_replica_that_reports_no_versions_is_a_problem() -> None:
    problems, _ = replica_problems("churn", "v2", fleet(status("old", {})))
    assert problems and "old" in problems[0] and "do not report" in problems[0]


def test_no_live_replica_is_a_note_not_a_refusal() -> None:
    problems, notes = replica_problems("churn", "v2", fleet())
    assert problems == [] and "no live replica" in notes[0]


def test_missing_and_unknown_features_are_named() -> None:
    problems, _ = feature_problems("v2", ("age", "income", "region"), ["age", "income"], 60)
    assert problems == ["v2 needs features production traffic does not carry: region"]
    problems, _ = feature_problems("v2", ("age",), ["age", "income"], 60)
    assert problems == [
        "v2 would reject features production traffic sends (422 unknown features): income"
    ]
    assert feature_problems("v2", FEATURES, ["income", "age"], 60) == ([], [])


def test_no_recent_production_traffic_is_a_note() -> None:
    problems, notes = feature_problems("v2", FEATURES, None, 3600)
    assert problems == [] and "3600 s" in notes[0]


class _Store:
    def __init__(self, features: dict[str, tuple[str, ...]]) -> None:
        self.features = features

    def load_metadata(self, name: str, version: str) -> Any:
        class Metadata:
            feature_names = self.features[version]

        return Metadata()


class _Client:
    def __init__(self, rows: list[tuple[str]]) -> None:
        self.rows = rows
        self.closed = False

    def query(self, sql: str, parameters: dict[str, Any]) -> Any:
        class Result:
            result_rows = self.rows

        return Result()

    def close(self) -> None:
        self.closed = True


def run(
    config: ModelConfig, store: dict[str, tuple[str, ...]], rows: list[tuple[str]]
) -> Callable[[], Any]:
    snapshot = fleet(status("a", {"churn": ["v1", "v2"]}))
    return lambda: preflight(
        "churn",
        CommandKind.SET_CANARY,
        config,
        store=_Store(store),  # type: ignore[arg-type]
        fleet=lambda: snapshot,
        warehouse=lambda: _Client(rows),  # type: ignore[arg-type,return-value]
    )


def test_preflight_refuses_with_every_reason() -> None:
    check = run(
        ModelConfig("v1", "v3", 1_000),
        {"v3": ("age", "income", "region")},
        [("age",), ("income",)],
    )
    with pytest.raises(PreflightError) as refused:
        check()
    assert refused.value.problems == (
        "churn v3 is not loadable on replica(s) a",
        "v3 needs features production traffic does not carry: region",
    )
    assert "--force" in str(refused.value)


def test_preflight_passes_a_compatible_loaded_canary() -> None:
    report = run(ModelConfig("v1", "v2", 1_000), {"v2": FEATURES}, [("age",), ("income",)])()
    assert report.passed and report.checked_versions == ("v2",) and report.notes == []
