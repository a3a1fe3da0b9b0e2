"""The local guard's thread: judge canaries every few tens of ms, pull traffic off breaches."""

from __future__ import annotations

import logging
import threading

from safeloop.services.guard.local import ReplicaGuard
from safeloop.services.guard.verdict import VerdictKind
from safeloop.services.serving.predictor import Predictor

logger = logging.getLogger(__name__)

DEFAULT_CHECK_INTERVAL_MS = 50


class GuardLoop:
    """Calls `guard.check()` off the request path; a BREACH suppresses that canary locally.

    Suppression is only the fast path: the canary stays configured until the central guard's
    signed rollback (or an operator) replaces it. That rollback needs the central guard's
    minimum sample, which it is sure to have once any replica trips because the replica's
    `GuardPolicy.min_requests` is at least the central one's and the replica counts only its
    own, published, traffic (see `services.guard.local`).
    """

    def __init__(
        self,
        guard: ReplicaGuard,
        predictor: Predictor,
        interval_ms: int = DEFAULT_CHECK_INTERVAL_MS,
    ) -> None:
        self._guard = guard
        self._predictor = predictor
        self._interval_s = interval_ms / 1000.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-guard", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stopping.set()
        self._thread.join(timeout_s)

    def check_once(self) -> None:
        for verdict in self._guard.check():
            if verdict.verdict.kind is not VerdictKind.BREACH:
                continue
            if self._predictor.suppress_canary(verdict.model_name, verdict.canary_version):
                logger.warning(
                    "local guard: no more traffic to %s canary %s: %s",
                    verdict.model_name,
                    verdict.canary_version,
                    verdict.verdict.reason,
                )
                # Acted on: the rest of this try (requests already in flight) is not judged
                # again; a later config that routes to it again starts clean.
                self._guard.forget(verdict.model_name, verdict.canary_version)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                self.check_once()
            except Exception:
                logger.exception("local guard check failed; serving continues unguarded")
