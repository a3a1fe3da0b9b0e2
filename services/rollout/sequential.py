"""Moved to services/metrics/sequential.py (the central guard shares it, and guard may not
import rollout); re-exported so rollout code reads as before."""

from safeloop.services.metrics.sequential import ConfidenceSequence, MeanSummary

__all__ = ["ConfidenceSequence", "MeanSummary"]
