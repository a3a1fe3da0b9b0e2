"""The metrics core: windows, health, performance, calibration, drift and estimation in numpy.

Pure logic (no Kafka, ClickHouse, HTTP or model store); the monitor and the guard run it.
"""
