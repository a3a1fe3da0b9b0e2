"""Pre-flight rules: before a version gets traffic (or shadows it), it must load on every live
replica and accept the features production traffic carries.

Pure: the evidence (replica reports, the version's features, what production sent) is gathered
by `preflight_evidence`; here it is only judged.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from safeloop.schemas.events import CommandKind, ModelConfig
from safeloop.services.control.fleet import FleetSnapshot


@dataclass(frozen=True, slots=True)
class PreflightReport:
    """`problems` refuse the change; `notes` say what could not be checked (and why)."""

    checked_versions: tuple[str, ...]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def versions_to_check(kind: CommandKind, config: ModelConfig) -> list[str]:
    """The versions a command of `kind` leading to `config` puts on (or beside) the traffic."""
    if kind is CommandKind.SET_CANARY and config.canary_version and config.canary_basis_points:
        return [config.canary_version]
    if kind is CommandKind.SET_SHADOW and config.shadow_enabled and config.shadow_version:
        return [config.shadow_version]
    if kind is CommandKind.PROMOTE:
        return [config.production_version]
    return []


def replica_problems(
    model_name: str, version: str, snapshot: FleetSnapshot
) -> tuple[list[str], list[str]]:
    """(problems, notes) about `version` on the live replicas that serve `model_name`."""
    live = snapshot.live()
    if not live:
        return [], [f"no live replica to check that {version} loads on"]
    silent = [s.replica_id for s in live if not s.loaded_versions]
    serving = [s for s in live if model_name in s.loaded_versions]
    lacking = [s.replica_id for s in serving if version not in s.loaded_versions[model_name]]
    problems = []
    if lacking:
        problems.append(
            f"{model_name} {version} is not loadable on replica(s) {', '.join(lacking)}"
        )
    if silent:
        problems.append(
            f"replica(s) {', '.join(silent)} do not report which versions they can load "
            "(an older safeloop?)"
        )
    notes = [] if serving or silent else [f"no live replica serves {model_name}"]
    return problems, notes


def feature_problems(
    version: str, required: Sequence[str], seen: Collection[str] | None, window_s: int
) -> tuple[list[str], list[str]]:
    """(problems, notes): `version` needs what production traffic sends, and no more.

    `seen` is every feature name of production's recent answered requests (None: none in the
    last `window_s`). A replica answers 422 both for a missing feature and an unknown one, so
    a version needing fewer features than traffic carries would fail every request too.
    """
    if seen is None:
        return [], [
            f"no production predictions in the last {window_s} s: features of {version} "
            "not checked against traffic"
        ]
    known = set(seen)
    needed = set(required)
    problems = []
    missing = [name for name in required if name not in known]
    if missing:
        problems.append(
            f"{version} needs features production traffic does not carry: {', '.join(missing)}"
        )
    unused = sorted(known - needed)
    if unused:
        problems.append(
            f"{version} would reject features production traffic sends (422 unknown "
            f"features): {', '.join(unused)}"
        )
    return problems, []
