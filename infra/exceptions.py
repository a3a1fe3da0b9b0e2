"""Errors raised by the infrastructure layer; each says what the operator should do."""

from __future__ import annotations

from safeloop import SafeloopError


class InfraError(SafeloopError):
    """Root of every error raised by `infra`."""


class SettingsError(InfraError):
    """An environment variable holds a value that cannot be parsed."""

    def __init__(self, name: str, value: str, expected: str) -> None:
        super().__init__(f"{name}={value!r} is not valid: expected {expected}")
        self.name = name
        self.value = value


class ToolMissingError(InfraError):
    """A program the local stack needs (java, mvn) is not installed."""


class JarFetchError(InfraError):
    """Maven could not fetch the Kafka broker jars; the message quotes Maven's output."""


class ExternalClusterError(InfraError):
    """A local-broker operation was asked for while KAFKA_BOOTSTRAP_SERVERS names a cluster."""


class PortInUseError(InfraError):
    """A port the local stack wants to bind is held by another process."""

    def __init__(self, host: str, port: int, what: str) -> None:
        super().__init__(
            f"{what} cannot listen on {host}:{port}: the port is already in use. "
            f"Stop the process holding it or choose another port."
        )
        self.host = host
        self.port = port


class StartupError(InfraError):
    """A local component did not come up; the message names its log file."""


class KafkaAdminError(InfraError):
    """A topic operation failed on the broker."""

    def __init__(self, message: str, topic: str | None = None) -> None:
        super().__init__(message)
        self.topic = topic


class WarehouseError(InfraError):
    """ClickHouse could not be reached or refused a statement."""


class InsertError(WarehouseError):
    """ClickHouse did not take a batch; retrying with the same `token` cannot double it."""

    def __init__(self, table: str, rows: int, token: str, cause: Exception) -> None:
        super().__init__(f"insert of {rows} rows into {table} failed: {cause}")
        self.table = table
        self.rows = rows
        self.token = token


class DeliveryError(InfraError):
    """Records were not acknowledged by Kafka; `pending` of them are still unconfirmed."""

    def __init__(self, topic: str, sent: int, pending: int, reason: str) -> None:
        super().__init__(f"{sent - pending} of {sent} records acknowledged on {topic}: {reason}")
        self.topic = topic
        self.sent = sent
        self.pending = pending
        self.reason = reason


class RecordRejectedError(InfraError):
    """A consumed record that cannot be used; it becomes a dead letter with `reason`."""

    def __init__(
        self, reason: str, detail: str, *, topic: str, partition: int, offset: int
    ) -> None:
        super().__init__(f"{reason}: {detail} (at {topic}[{partition}]@{offset})")
        self.reason = reason
        self.detail = detail
        self.topic = topic
        self.partition = partition
        self.offset = offset


class KafkaAccessError(InfraError):
    """The broker refused this client; the message names the principal and what it tried."""

    def __init__(self, message: str, principal: str) -> None:
        super().__init__(message)
        self.principal = principal


class KafkaAuthenticationError(KafkaAccessError):
    """The broker did not accept who this client says it is (or that it said nothing)."""

    def __init__(self, principal: str, bootstrap: str, reason: str) -> None:
        super().__init__(
            f"Kafka at {bootstrap} refused to authenticate {principal}: {reason}. Check "
            "SAFELOOP_KAFKA_SECURITY and the role's SAFELOOP_KAFKA_USERNAME / "
            "SAFELOOP_KAFKA_PASSWORD_FILE (or SAFELOOP_KAFKA_CLIENT_FILE)",
            principal,
        )
        self.bootstrap = bootstrap
        self.reason = reason


class KafkaAuthorizationError(KafkaAccessError):
    """An ACL refused `principal` the `operation` on `resource` (a topic or a group)."""

    def __init__(self, principal: str, operation: str, resource: str, reason: str) -> None:
        super().__init__(
            f"{principal} may not {operation} {resource}: {reason} (the role's ACLs do not "
            "allow it; see README, Security)",
            principal,
        )
        self.operation = operation
        self.resource = resource
        self.reason = reason


class ConsumerFencedError(InfraError):
    """Another consumer joined the group with this one's `group.instance.id`: this one is out
    of the group for good (librdkafka's fatal error), and must not go on as if it read."""

    def __init__(self, consumer: str, topic: str, reason: str) -> None:
        super().__init__(
            f"{consumer} was fenced out of its consumer group on {topic}: {reason}. Another "
            "process runs with the same instance id; give each live instance its own"
        )
        self.consumer = consumer
        self.topic = topic
        self.reason = reason
