"""A seek back to committed offsets that also rewinds partitions with nothing committed.

faust seeks back to committed offsets to deliver again what it dropped (records fetched while
flow is stopped) and at the end of a recovery. aiokafka's `seek_to_committed` leaves a partition
whose committed offset is missing or 0 at its fetch position, so before a partition's first
commit such a seek delivered nothing again. Found while looking for the one failover loss
(README); no run has shown a loss through it, since a rebalance's new assignment repositions
every partition anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from aiokafka.errors import IllegalStateError

log = logging.getLogger(__name__)


async def rewind_uncommitted(
    committed: Mapping[Any, int | None],
    topics: Collection[str],
    seek_to_beginning: Callable[..., Awaitable[object]],
) -> list[Any]:
    """Seek the partitions of `topics` that `committed` (what seek_to_committed returned) has
    no offset above 0 for to their beginning, as a consumer with nothing committed starts there
    (auto_offset_reset "earliest"); return them."""
    rewound = [tp for tp, offset in committed.items() if not offset and tp.topic in topics]
    if not rewound:
        return []
    try:
        await seek_to_beginning(*rewound)
    except IllegalStateError:
        # Revoked meanwhile: a new assignment starts every partition from its committed offset
        # (or the beginning) anyway.
        log.info("partitions %s were reassigned before their rewind", rewound)
        return []
    log.info("partitions %s have no committed offset: read again from their beginning", rewound)
    return rewound
