"""`TrafficDriver`: generated feature rows POSTed to the replicas at a steady rate.

Each request carries a routing key per simulated user (so the canary share is a share of users)
and alternates over the replicas. Features follow the training distribution, N(0, 1) each, until
`shift` moves one of them (the story's drift). Every answer is handed to `on_answer`.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

USERS = 5_000
RATE_WINDOW_S = 5.0


@dataclass(frozen=True, slots=True)
class Answer:
    prediction_id: str
    version: str
    route: str
    features: dict[str, float]
    answered_at: float


@dataclass
class TrafficCounts:
    sent: int = 0
    failed: int = 0
    # (version, route) -> answers
    routes: Counter[tuple[str, str]] = field(default_factory=Counter)
    # version -> wall-clock time of its first answer
    first_answer_at: dict[str, float] = field(default_factory=dict)


class _Replica:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> dict[str, object]:
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=5.0)
        try:
            self.connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
            response = self.connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = None
            raise
        if response.status != 200:
            raise http.client.HTTPException(f"{response.status}: {payload[:200]!r}")
        answer: dict[str, object] = json.loads(payload)
        return answer


class TrafficDriver:
    """Sends `rate` requests a second on its own thread until `stop`."""

    def __init__(
        self,
        replicas: Sequence[tuple[str, int]],
        model: str,
        feature_names: Sequence[str],
        *,
        rate: float,
        on_answer: Callable[[Answer], None],
        seed: int = 11,
    ) -> None:
        self._replicas = [_Replica(host, port) for host, port in replicas]
        self._model = model
        self._features = tuple(feature_names)
        self._interval_s = 1.0 / rate
        self._on_answer = on_answer
        self._rng = np.random.default_rng(seed)
        self._shift: dict[str, float] = {}
        self._recent: deque[tuple[float, str]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)
        self.counts = TrafficCounts()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def shift(self, feature: str, amount: float) -> None:
        """From now on, `feature` is drawn from N(amount, 1): drift in one feature."""
        with self._lock:
            self._shift[feature] = amount

    def recent(self) -> tuple[float, float]:
        """Answers per second and the canary's share of them (percent), over the last seconds."""
        now = time.monotonic()
        with self._lock:
            while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
                self._recent.popleft()
            answers = len(self._recent)
            canary = sum(1 for _, route in self._recent if route == "canary")
        return answers / RATE_WINDOW_S, (100.0 * canary / answers if answers else 0.0)

    def routes(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter(self.counts.routes)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._send_one()
            next_at += self._interval_s
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -1.0:
                next_at = time.monotonic()  # fell behind: do not burst to catch up

    def _send_one(self) -> None:
        with self._lock:
            shift = dict(self._shift)
        values = self._rng.normal(0.0, 1.0, len(self._features))
        features = {
            name: float(value) + shift.get(name, 0.0)
            for name, value in zip(self._features, values, strict=True)
        }
        user = int(self._rng.integers(USERS))
        body = json.dumps(
            {"model": self._model, "routing_key": f"user-{user}", "features": features}
        ).encode()
        replica = self._replicas[self.counts.sent % len(self._replicas)]
        self.counts.sent += 1
        try:
            payload = replica.post(body)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            self.counts.failed += 1
            logger.debug("request to %s:%s failed: %s", replica.host, replica.port, exc)
            return
        answer = Answer(
            prediction_id=str(payload["prediction_id"]),
            version=str(payload["model_version"]),
            route=str(payload["route"]),
            features=features,
            answered_at=time.time(),
        )
        with self._lock:
            self._recent.append((time.monotonic(), answer.route))
            self.counts.routes[(answer.version, answer.route)] += 1
            self.counts.first_answer_at.setdefault(answer.version, answer.answered_at)
        self._on_answer(answer)
