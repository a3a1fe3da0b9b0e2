"""Rollback guard rules shared by the central metrics consumer and each replica's fast path."""

from safeloop.services.guard.judge import judge
from safeloop.services.guard.local import CanaryVerdict, ReplicaGuard
from safeloop.services.guard.policy import GuardPolicy
from safeloop.services.guard.verdict import Breach, GuardRule, GuardVerdict, VerdictKind

__all__ = [
    "Breach",
    "CanaryVerdict",
    "GuardPolicy",
    "GuardRule",
    "GuardVerdict",
    "ReplicaGuard",
    "VerdictKind",
    "judge",
]
