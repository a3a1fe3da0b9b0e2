"""How every safeloop process logs: one line format, and the lines libraries write per retry
(aiokafka and urllib3 while a broker or ClickHouse is down) collapsed to one per 30 s."""

from __future__ import annotations

import logging

from safeloop.infra.repeated_lines import RepeatedLineFilter

LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Each logs a line per failed attempt; our own code reports the outage that causes them.
RETRYING_LIBRARIES = ("aiokafka", "urllib3", "clickhouse_connect")
# Where librdkafka's own log lines go (infra/kafka/clients.py).
KAFKA_CLIENT_LOGGER = "safeloop.kafka.client"


def configure_logging(level: str | int) -> None:
    """Log to stderr at `level`; library retry lines collapsed (see `RepeatedLineFilter`)."""
    logging.basicConfig(level=level, format=LINE_FORMAT)
    repeats = RepeatedLineFilter(loggers=RETRYING_LIBRARIES)
    for handler in logging.getLogger().handlers:
        handler.addFilter(repeats)
