"""Alerts: guard rollbacks, promotions, stalled rollouts, retraining decisions and dead-letter
spikes sent to webhooks (generic signed, Slack- and PagerDuty-compatible), off the hot path."""
