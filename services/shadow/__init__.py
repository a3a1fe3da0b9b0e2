"""Shadow scoring off the serving process: a scorer that consumes `predictions` and publishes
the shadow version's answers under the production prediction_id."""
