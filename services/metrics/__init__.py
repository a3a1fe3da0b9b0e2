"""Rolling health, performance, drift and estimation metrics: pure numpy, no servers.

windows/keyed: count and time windows per (model, version, route); columns: events -> batches;
health, performance (classification, regression, calibration, labels), shadow; baseline and
drift; estimation (CBPE); active_learning; rows: snapshots -> ClickHouse long-layout rows.
"""
