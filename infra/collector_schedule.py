"""When a long-running hot loop lets CPython's cyclic garbage collector run.

CPython's default schedule (a young collection every 700 net allocations of tracked objects, a
full one whenever a quarter more objects have survived) rescans every long-lived object over and
over. In the stream worker that was 52 full collections, 6.6 s of 28 s of CPU for 300,000 events
(126 ms each, a stall of the event loop every half second at full rate; `bench.stream_join`,
2 Dec). The hot paths free what they allocate by reference count, so the collector has little
to find: objects alive once a service has started are frozen out of its reach, and collections
come rarely. A young collection costs what is alive among the young (rows waiting for their
flush, prefetched records), whatever the threshold: at 50,000 allocations the one-worker run
still spent 1.7 s of 17.7 s collecting (45 young and 2 middle collections, the latter 367 ms
each); at 1,000,000 it collects a few times a minute at full rate (46.5 -> 43-44 us per event
after start-up, one run each, same minutes).
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CollectorSchedule:
    """gc thresholds: young collections per `young_allocations` net tracked allocations, a
    middle one per `young_per_middle` young ones, a full one per `middle_per_full` middle ones
    (and only once a quarter more objects have survived, CPython's own condition)."""

    young_allocations: int = 1_000_000
    young_per_middle: int = 10
    middle_per_full: int = 100

    def apply(self) -> None:
        """Collect once, freeze what is alive (start-up's modules and services), then run on
        this schedule from now on."""
        gc.collect()
        gc.freeze()
        gc.set_threshold(self.young_allocations, self.young_per_middle, self.middle_per_full)
        log.debug("gc: %s objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold())


HOT_LOOP: Final = CollectorSchedule()
