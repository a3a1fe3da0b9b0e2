"""The stream worker's garbage-collector schedule: start-up's objects frozen, rare collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from safeloop.infra.collector_schedule import HOT_LOOP, CollectorSchedule


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_apply_freezes_live_objects_and_sets_thresholds(restored_collector: None) -> None:
    alive = [[object()] for _ in range(1_000)]
    CollectorSchedule(young_allocations=10_000, young_per_middle=5, middle_per_full=7).apply()
    assert gc.get_threshold() == (10_000, 5, 7)
    # Frozen objects are out of every generation: a full collection no longer scans them.
    assert gc.get_freeze_count() >= len(alive)
    in_generations = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
    assert not any(id(lst) in in_generations for lst in alive)


def test_cyclic_garbage_is_still_collected_after_apply(restored_collector: None) -> None:
    HOT_LOOP.apply()

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    # Young objects stay collectable: the frozen ones are only what was alive at `apply`.
    assert gc.collect(0) >= 2


def test_hot_loop_collects_young_objects_less_often_than_cpython() -> None:
    assert HOT_LOOP.young_allocations > 700
