"""Rollback guard rules shared by the central metrics consumer and each replica's fast path."""

from services.guard.judge import judge
from services.guard.local import CanaryVerdict, ReplicaGuard
from services.guard.policy import GuardPolicy
from services.guard.verdict import Breach, GuardRule, GuardVerdict, VerdictKind

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
