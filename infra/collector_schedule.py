"""When a long-running hot loop lets CPython's cyclic garbage collector run.

CPython's default schedule (a young collection every 700 net allocations of tracked objects, a
full one whenever a quarter more objects have survived) rescans every long-lived object over and
over. In the stream worker that was 52 full collections, 6.6 s of 28 s of CPU for 300,000 events
(126 ms each, a stall of the event loop every half second at full rate; `bench.stream_join`,
2 Dec). The hot paths free what they allocate by reference count, so the collector has little
to find: objects alive once a service has started are frozen out of its reach, young objects
are collected every 50,000 allocations, and full collections come far less often.
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

    young_allocations: int = 50_000
    young_per_middle: int = 20
    middle_per_full: int = 100

    def apply(self) -> None:
        """Collect once, freeze what is alive (start-up's modules and services), then run on
        this schedule from now on."""
        gc.collect()
        gc.freeze()
        gc.set_threshold(self.young_allocations, self.young_per_middle, self.middle_per_full)
        log.debug("gc: %s objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold())


HOT_LOOP: Final = CollectorSchedule()
