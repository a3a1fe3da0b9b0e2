"""HTTP sessions (`session_id`): a chDB connection kept between requests, used by one at a time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from safeloop.infra.warehouse import exceptions
from safeloop.infra.warehouse.engine import Engine, EngineConnection

log = logging.getLogger(__name__)


@dataclass
class _Session:
    connection: EngineConnection
    timeout: float
    last_used: float
    busy: threading.Lock = field(default_factory=threading.Lock)


class SessionStore:
    """Named sessions; each expires `session_timeout` seconds after its last request ended."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._guard = threading.Lock()

    def __len__(self) -> int:
        with self._guard:
            return len(self._sessions)

    @contextmanager
    def acquire(self, session_id: str, timeout: float, check: bool) -> Iterator[EngineConnection]:
        """The session's connection, exclusively, for the duration of one request."""
        session = self._checkout(session_id, timeout, check)
        try:
            yield session.connection
        finally:
            session.timeout = timeout
            session.last_used = self._clock()
            session.busy.release()

    def _checkout(self, session_id: str, timeout: float, check: bool) -> _Session:
        with self._guard:
            self._expire_locked()
            session = self._sessions.get(session_id)
            if session is None:
                if check:
                    raise exceptions.server_error(
                        exceptions.SESSION_NOT_FOUND, f"Session {session_id} not found"
                    )
                session = _Session(self._engine.connect(), timeout, self._clock())
                self._sessions[session_id] = session
                log.debug("session %s opened", session_id)
            if not session.busy.acquire(blocking=False):
                raise exceptions.server_error(
                    exceptions.SESSION_IS_LOCKED,
                    f"Session {session_id} is locked by a concurrent client",
                )
            return session

    def _expire_locked(self) -> None:
        now = self._clock()
        for session_id, session in list(self._sessions.items()):
            if now - session.last_used < session.timeout:
                continue
            if not session.busy.acquire(blocking=False):
                continue
            del self._sessions[session_id]
            session.connection.close()
            session.busy.release()
            log.debug("session %s expired", session_id)

    def close_all(self) -> None:
        with self._guard:
            for session in self._sessions.values():
                session.connection.close()
            self._sessions.clear()
