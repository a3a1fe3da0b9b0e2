"""Kafka's refusals translated at the edge: which principal was refused what, as a SafeloopError."""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer

from safeloop.infra.exceptions import (
    KafkaAccessError,
    KafkaAuthenticationError,
    KafkaAuthorizationError,
)

log = logging.getLogger(__name__)

_AUTHORIZATION_CODES = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)
_AUTHENTICATION_CODES = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
)


def is_refusal(error: KafkaError) -> bool:
    """True for an authentication or authorization refusal (retrying will not help)."""
    return error.code() in _AUTHORIZATION_CODES or _is_authentication_failure(error)


def _is_authentication_failure(error: KafkaError) -> bool:
    if error.code() in _AUTHENTICATION_CODES:
        return True
    # A TLS error is a refusal when a certificate failed to verify (a wrong CA file, say);
    # a handshake cut short by a restarting broker is not.
    return error.code() == KafkaError._SSL and "certificate" in error.str().lower()


def access_error(
    error: KafkaError, *, principal: str, bootstrap: str, operation: str, resource: str
) -> KafkaAccessError | None:
    """The SafeloopError for a refusal `error`, or None when `error` is something else."""
    code = error.code()
    if code in _AUTHORIZATION_CODES:
        return KafkaAuthorizationError(principal, operation, resource, error.str())
    if _is_authentication_failure(error):
        return KafkaAuthenticationError(principal, bootstrap, error.str())
    return None


class ClientErrors:
    """An `error_cb` that remembers the last refusal, so a caller can name it instead of timing
    out; other client errors are logged at debug (broker-down errors repeat every reconnect)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.refusal: KafkaError | None = None
        self.refusals = 0
        # No broker answered (down, or it speaks another security protocol than this client).
        self.unreachable = False

    def __call__(self, error: KafkaError) -> None:
        if is_refusal(error):
            with self._lock:
                self.refusal = error
                self.refusals += 1
            # The client retries every reconnect: say it once, count the rest.
            level = logging.WARNING if self.refusals == 1 else logging.DEBUG
            log.log(level, "kafka client refused: %s", error)
            return
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.unreachable = True
        log.debug("kafka client: %s", error)


class SafeloopProducer(Producer):
    """A confluent-kafka Producer that knows its principal and remembers refusals."""

    def __init__(self, config: dict[str, Any], *, principal: str, bootstrap: str) -> None:
        self.errors = ClientErrors()
        super().__init__({**config, "error_cb": self.errors})
        self.principal = principal
        self.bootstrap = bootstrap


class SafeloopConsumer(Consumer):
    """A confluent-kafka Consumer that knows its principal and remembers refusals."""

    def __init__(self, config: dict[str, Any], *, principal: str, bootstrap: str) -> None:
        self.errors = ClientErrors()
        super().__init__({**config, "error_cb": self.errors})
        self.principal = principal
        self.bootstrap = bootstrap


def silence_reason(client: object) -> str | None:
    """Why a client heard nothing, when it knows: no broker answered its principal."""
    errors = getattr(client, "errors", None)
    if not isinstance(errors, ClientErrors) or not errors.unreachable:
        return None
    principal = getattr(client, "principal", "this client")
    bootstrap = getattr(client, "bootstrap", "the configured brokers")
    return (
        f"no broker at {bootstrap} answered {principal}: it is down, or it expects another "
        "security protocol (SAFELOOP_KAFKA_SECURITY; a secured broker refuses plaintext clients)"
    )


def refusal_of(
    client: object, error: KafkaError | None, *, operation: str, resource: str
) -> KafkaAccessError | None:
    """The refusal behind `error` (or behind a client's silence), named with its principal.

    `client` is any producer or consumer; one built by `make_producer`/`make_consumer`
    knows its principal and remembers authentication failures reported out of band.
    """
    principal = str(getattr(client, "principal", "this client"))
    bootstrap = str(getattr(client, "bootstrap", "the configured brokers"))
    if error is not None:
        found = access_error(
            error, principal=principal, bootstrap=bootstrap, operation=operation, resource=resource
        )
        if found is not None:
            return found
    errors = getattr(client, "errors", None)
    remembered = errors.refusal if isinstance(errors, ClientErrors) else None
    if remembered is None:
        return None
    return access_error(
        remembered, principal=principal, bootstrap=bootstrap, operation=operation, resource=resource
    )
