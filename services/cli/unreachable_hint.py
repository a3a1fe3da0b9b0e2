"""What to do when a command failed because Kafka or ClickHouse did not answer at all."""

from __future__ import annotations

from collections.abc import Callable

from safeloop.infra.settings import Settings

# librdkafka's words for "nobody answered" (a refused or timed-out connection), as they reach
# the message of the error a command raises.
_KAFKA_SILENT = (
    "Broker transport failure",
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "Connection refused",
)
_CLICKHOUSE_SILENT = ("Connection refused", "Failed to establish a new connection")


def unreachable_hint(error: BaseException, settings: Settings | None) -> str | None:
    """One line on how to start or point at the server `error` could not reach, if that is
    what happened (judged from its chain of causes); None otherwise."""
    if _any_in_chain(error, _is_kafka_silence):
        where = settings.bootstrap_servers if settings is not None else "the configured broker"
        return (
            f"is Kafka running at {where}? `safeloop kafka start` starts the local broker; "
            "KAFKA_BOOTSTRAP_SERVERS points at another"
        )
    if _any_in_chain(error, _is_clickhouse_silence):
        return (
            "is ClickHouse running? `safeloop warehouse start` starts the embedded endpoint; "
            "CLICKHOUSE_URL points at a server"
        )
    return None


def _any_in_chain(error: BaseException, test: Callable[[BaseException], bool]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if test(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_kafka_silence(error: BaseException) -> bool:
    module = type(error).__module__
    text = str(error)
    from_kafka = module.startswith("confluent_kafka") or "KafkaError{" in text
    return from_kafka and any(word in text for word in _KAFKA_SILENT)


def _is_clickhouse_silence(error: BaseException) -> bool:
    module = type(error).__module__
    from_http = module.startswith(("clickhouse_connect", "urllib3"))
    return from_http and any(word in str(error) for word in _CLICKHOUSE_SILENT)
