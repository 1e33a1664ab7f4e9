"""Keeps the scheduler's full garbage collections short as the cluster grows.

CPython's full collection walks every tracked object, and the scheduler's cache holds a few per
placed VM (its allocation entry, its reservation, the records around them). In the placement
benchmark the full collections grew from ~10 to 40-60 ms over 20,000 placements, each a pause
of the whole daemon that every call in flight waits out. After each full collection, what
survived it is frozen (out of the collector's sight, like the cluster loaded at start), so the
next one walks only what was made since: 5-11 ms in the same run, however many VMs came before.

What freezing gives up: cyclic garbage among frozen objects (a request in flight at that
moment, its futures and closures) is not reclaimed while frozen. In the benchmark that was 5
objects of 262,000 after 20,000 placements. Still, once the objects frozen since the last sweep
outnumber those it left (and `min_sweep`), the next full collection walks all of them again,
one long pause (~150-190 ms at the benchmark's size) at exponentially spaced intervals, and
freezes what is left.
"""
from __future__ import annotations

import gc
import time
from typing import Any


class FrozenOldGeneration:
    """The gc callback: `install()` once the daemon's start-up state is loaded. It neither logs
    nor blocks (it runs inside a collection, on whichever thread allocated): it counts."""

    def __init__(self, min_sweep: int = 100_000) -> None:
        self.min_sweep = min_sweep  # a sweep waits for at least this many objects frozen since the last
        self.swept = 0  # objects frozen by the last sweep (or at start)
        self.since = 0  # objects frozen since
        self.sweeping = False
        self.freezes = 0
        self.sweeps = 0
        self.longest_sweep_ms = 0.0
        self._started = 0.0

    def install(self) -> FrozenOldGeneration:
        gc.collect()
        self.swept = len(gc.get_objects(generation=2))
        gc.freeze()
        gc.callbacks.append(self)
        return self

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        # freeze/unfreeze only move the generation lists, which the collection is done with by
        # "stop". The counts come from the survivors just walked: gc.get_freeze_count() would
        # walk the whole frozen list, cold in memory (~20 ms at the benchmark's size).
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        survivors = len(gc.get_objects(generation=2))
        gc.freeze()
        if self.sweeping:
            self.sweeping, self.swept, self.since = False, survivors, 0
            self.sweeps += 1
            self.longest_sweep_ms = max(self.longest_sweep_ms, (time.perf_counter() - self._started) * 1000)
            return
        self.freezes += 1
        self.since += survivors
        if self.since > max(self.swept, self.min_sweep):
            gc.unfreeze()  # the next full collection walks everything once
            self.sweeping = True
