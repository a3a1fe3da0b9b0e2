"""Publishing from your own services: a prediction logger, an outcome publisher, an HTTP ingest.

    from safeloop.services.publishing import OutcomePublisher, PredictionLogger

README "Publishing from your own services" has examples and the wire contract. The names are
loaded on first use, so importing the package (e.g. for its exceptions) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safeloop.services.publishing.outcome_publisher import OutcomePublisher, PublishResult
    from safeloop.services.publishing.prediction_logger import LoggerStats, PredictionLogger
    from safeloop.services.publishing.rejection import Rejection

_WHERE = {
    "OutcomePublisher": "outcome_publisher",
    "PublishResult": "outcome_publisher",
    "LoggerStats": "prediction_logger",
    "PredictionLogger": "prediction_logger",
    "Rejection": "rejection",
}

__all__ = ["LoggerStats", "OutcomePublisher", "PredictionLogger", "PublishResult", "Rejection"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
