"""The monitoring process (`safeloop metrics run`): reads predictions and feedback from Kafka,
runs the metrics core, guard, rollouts and retraining decisions, writes snapshots to ClickHouse.
"""
