"""Retraining decisions, recency weights and the weighted training export."""
