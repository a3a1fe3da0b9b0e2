"""Admin requests retried while a cluster settles: a (re)started or stalled controller refuses
for a while what it takes a moment later."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

from safeloop.infra.exceptions import KafkaAdminError

log = logging.getLogger(__name__)

# A broker just (re)started may answer metadata before its controller takes admin requests
# ("Failed while waiting for controller"): such requests are retried this long by default.
RETRY_FOR_S = 120.0
# Client-side failures librdkafka does not call retriable, though they pass with the broker.
_LOCAL_RETRIABLE = frozenset({KafkaError._TIMED_OUT, KafkaError._TRANSPORT})

T = TypeVar("T")


def until_done(
    submit: Callable[[list[T]], Mapping[T, Future[None]]],
    items: list[T],
    what: Callable[[T], str],
    *,
    retry_for_s: float = RETRY_FOR_S,
    retry_every_s: float = 1.0,
    answer_timeout_s: float | None = None,
    passing: Collection[int] = (),
    settled: Collection[int] = (),
    topic_of: Callable[[T], str | None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[T]:
    """Submit `items`, again for those that failed retriably (or with a code in `passing`),
    until all are done or `retry_for_s` passed; any other failure raises at once. A failure
    with a code in `settled` means already done. Returns the items this call did.
    `answer_timeout_s` bounds the wait for one answer; None waits for the request's own."""
    deadline = time.monotonic() + retry_for_s
    done: list[T] = []
    pending = items
    while pending:
        retry: list[T] = []
        for item, future in submit(pending).items():
            try:
                future.result(timeout=answer_timeout_s)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                code = error.code() if isinstance(error, KafkaError) else None
                if code in settled:
                    continue
                retriable = isinstance(error, KafkaError) and (
                    error.retriable() or code in _LOCAL_RETRIABLE or code in passing
                )
                if not retriable:
                    raise KafkaAdminError(f"{what(item)} failed: {exc}", topic_of(item)) from exc
                if time.monotonic() >= deadline:
                    raise KafkaAdminError(
                        f"{what(item)} failed: {exc} (retried for {retry_for_s:.0f}s)",
                        topic_of(item),
                    ) from exc
                log.warning("%s: %s; retrying", what(item), error)
                retry.append(item)
                continue
            done.append(item)
        if retry:
            sleep(retry_every_s)
        pending = retry
    return done
