"""A replica's follower of the control topic: rebuild state to the end, then apply as it comes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import Message

from safeloop.schemas.codec import CONTROL_CODEC
from safeloop.schemas.exceptions import DecodeError
from safeloop.services.control.broadcast import BroadcastReader
from safeloop.services.control.exceptions import ControlTopicError
from safeloop.services.control.state import ApplyResult, ControlState

logger = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.05
RETRY_DELAY_S = 1.0

ApplyCallback = Callable[[ApplyResult], None]


class ControlListener:
    """Runs one thread; `ready` is set once everything already on the topic has been applied."""

    def __init__(
        self,
        reader_factory: Callable[[], BroadcastReader],
        state: ControlState,
        *,
        on_result: ApplyCallback | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self._reader_factory = reader_factory
        self._state = state
        self._on_result = on_result
        self._on_ready = on_ready
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        reader: BroadcastReader | None = None
        try:
            while not self._stopping.is_set():
                if reader is None:
                    reader = self._connect()
                    if reader is None:
                        continue
                try:
                    self._step(reader)
                except Exception:
                    # Never let the thread die: a dead listener is a replica that silently
                    # stops obeying rollbacks. Re-reading the whole topic is idempotent.
                    logger.exception("control listener failed; re-reading %s", reader.topic)
                    reader.close()
                    reader = None
                    self._stopping.wait(RETRY_DELAY_S)
        finally:
            if reader is not None:
                reader.close()

    def _step(self, reader: BroadcastReader) -> None:
        for message in reader.poll(POLL_TIMEOUT_S):
            self._handle(message)
        if not self.ready.is_set() and reader.caught_up:
            logger.info(
                "control state rebuilt from %s records of %s", reader.records_read, reader.topic
            )
            if self._on_ready is not None:
                self._on_ready()
            self.ready.set()

    def _connect(self) -> BroadcastReader | None:
        reader = self._reader_factory()
        try:
            reader.assign_from_beginning()
        except ControlTopicError as exc:
            logger.warning("control topic not readable yet, retrying: %s", exc)
            reader.close()
            self._stopping.wait(RETRY_DELAY_S)
            return None
        return reader

    def _handle(self, message: Message) -> None:
        where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
        value = message.value()
        if value is None:
            # A tombstone deletes a model's key on compaction; it carries no command.
            logger.info("ignoring tombstone at %s", where)
            return
        try:
            command = CONTROL_CODEC.decode(value)
        except DecodeError as exc:
            self._state.refuse(where, f"undecodable: {exc}")
            return
        key = message.key()
        if key is not None and key.decode(errors="replace") != command.model_name:
            # Compaction is by key: a mismatched key could silently erase another model's state.
            self._state.refuse(where, f"key {key!r} does not match model {command.model_name!r}")
            return
        result = self._state.apply(command)
        if self._on_result is not None:
            self._on_result(result)
