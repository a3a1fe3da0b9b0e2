"""Publishing from your own services: a prediction logger, an outcome publisher, an HTTP ingest.

    from safeloop.services.publishing import OutcomePublisher, PredictionLogger

README "Publishing from your own services" has examples and the wire contract.
"""

from safeloop.services.publishing.outcome_publisher import OutcomePublisher, PublishResult
from safeloop.services.publishing.prediction_logger import LoggerStats, PredictionLogger
from safeloop.services.publishing.rejection import Rejection

__all__ = ["LoggerStats", "OutcomePublisher", "PredictionLogger", "PublishResult", "Rejection"]
