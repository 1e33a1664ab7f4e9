"""The scheduler's full collections: survivors are frozen, frozen cyclic garbage is swept."""
from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator

import pytest

from tests.conftest import wait_until
from vdcos.scheduler.collector import FrozenOldGeneration


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[list[Node], weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return [a], weakref.ref(a)


@pytest.fixture
def collector() -> Iterator[FrozenOldGeneration]:
    c = FrozenOldGeneration(min_sweep=0).install()
    try:
        yield c
    finally:
        c.uninstall()
        gc.unfreeze()
        gc.collect()


def tracked(obj: object) -> bool:
    """Whether the collector still walks `obj` (frozen objects are not listed)."""
    return any(o is obj for o in gc.get_objects())


def test_what_a_full_collection_finds_alive_is_frozen(collector: FrozenOldGeneration) -> None:
    kept = Node()
    assert tracked(kept)
    gc.collect()
    assert not tracked(kept) and collector.freezes == 1


def test_cyclic_garbage_frozen_while_alive_is_swept_once_the_frozen_objects_double(
        collector: FrozenOldGeneration) -> None:
    holder, ref = cycle()
    gc.collect()  # frozen with the cycle alive
    holder.clear()
    collector.swept = 10**9  # no sweep yet
    gc.collect()
    assert ref() is not None  # garbage, but out of sight
    collector.swept = 0
    gc.collect()  # the objects frozen since outnumber those the last sweep left: unfreeze
    assert collector.sweeping
    gc.collect()  # the sweep walks everything
    assert ref() is None
    assert (collector.sweeping, collector.sweeps) == (False, 1)
    assert collector.longest_sweep_ms > 0


def test_full_collections_run_more_often_while_installed() -> None:
    before = gc.get_threshold()
    c = FrozenOldGeneration(full_after=1).install()
    try:
        assert gc.get_threshold() == (*before[:2], 1)
    finally:
        c.uninstall()
        gc.unfreeze()
    assert gc.get_threshold() == before


def test_younger_collections_leave_the_generations_alone(collector: FrozenOldGeneration) -> None:
    kept = Node()
    gc.collect(0)
    gc.collect(1)
    assert tracked(kept) and collector.freezes == 0


def test_a_due_sweep_waits_until_the_daemon_is_idle(collector: FrozenOldGeneration) -> None:
    busy = [True]
    collector.min_sweep, collector.force_after = 1, 10**9
    collector.sweep_when_idle(lambda: 0.0 if busy[0] else 60.0, quiet=1.0, every=0.01)
    holder, ref = cycle()
    gc.collect()  # frozen with the cycle alive
    holder.clear()
    collector.swept = 1
    gc.collect()  # a sweep is due, but the daemon is busy: nothing is unfrozen
    assert collector.due and not collector.sweeping
    time.sleep(0.1)
    gc.collect()
    assert ref() is not None and collector.sweeps == 0
    busy[0] = False
    wait_until(lambda: collector.sweeps == 1, every=0.01)
    assert ref() is None
    assert (collector.idle_sweeps, collector.due, collector.sweeping) == (1, False, False)


def test_a_daemon_that_is_never_idle_is_swept_once_force_after_times_the_threshold_waits(
        collector: FrozenOldGeneration) -> None:
    collector.min_sweep, collector.force_after = 1, 10**9
    collector.sweep_when_idle(lambda: 0.0, quiet=1.0, every=0.01)
    holder, ref = cycle()
    gc.collect()
    holder.clear()
    collector.swept = 1
    gc.collect()
    assert collector.due and not collector.sweeping
    collector.force_after = 1  # what is frozen since now outnumbers force_after thresholds
    gc.collect()
    assert collector.sweeping
    gc.collect()  # the next full collection, whoever runs it, is the sweep
    assert ref() is None
    assert (collector.sweeps, collector.idle_sweeps) == (1, 0)
