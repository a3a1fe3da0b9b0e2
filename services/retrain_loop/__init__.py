"""`safeloop retrain run`: the process around the retraining state machine (services.retraining)."""
