"""`ReplicaWatcher`: polls every replica's /healthz and remembers when each applied what.

The rollback time the summary reports ends when the last replica applied the rollback, as
the replicas themselves say (their applied config sequence per model).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

logger = logging.getLogger(__name__)

POLL_S = 0.1


class ReplicaWatcher:
    def __init__(self, urls: Sequence[str], model: str) -> None:
        self._urls = list(urls)
        self._model = model
        # replica url -> [(wall-clock time first seen, applied sequence)], in order seen
        self._seen: dict[str, list[tuple[float, int]]] = {url: [] for url in self._urls}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def applied_everywhere_at(self, sequence: int) -> float | None:
        """When the last replica first reported a sequence >= `sequence`; None if one has not."""
        times = []
        with self._lock:
            for history in self._seen.values():
                first = next((at for at, seq in history if seq >= sequence), None)
                if first is None:
                    return None
                times.append(first)
        return max(times) if times else None

    def _run(self) -> None:
        while not self._stop.is_set():
            for url in self._urls:
                sequence = self._applied(url)
                if sequence is None:
                    continue
                with self._lock:
                    history = self._seen[url]
                    if not history or history[-1][1] != sequence:
                        history.append((time.time(), sequence))
            self._stop.wait(POLL_S)

    def _applied(self, url: str) -> int | None:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1.0) as answer:  # noqa: S310
                health = json.loads(answer.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None
        value = health.get("config_versions", {}).get(self._model)
        return int(value) if value is not None else None
