"""Keeps the scheduler's full garbage collections short as the cluster grows.

CPython's full collection walks every tracked object, and the scheduler's cache holds a few per
placed VM (its allocation entry, its reservation, the records around them). In the placement
benchmark the full collections grew from ~10 to 40-60 ms over 20,000 placements, each a pause
of the whole daemon that every call in flight waits out. After each full collection, what
survived it is frozen (out of the collector's sight, like the cluster loaded at start), so the
next one walks only what was made since: 5-11 ms in the same run, however many VMs came before.
And since that is so, full collections run more often than CPython's default (FULL_AFTER), each
walking less: 1.1-3.4 ms.

What freezing gives up: cyclic garbage among frozen objects (a request in flight at that
moment, its futures and closures) is not reclaimed while frozen. In the benchmark that was 5
objects of 262,000 after 20,000 placements. Still, once the objects frozen since the last sweep
outnumber those it left (and `min_sweep`), a sweep is due: one collection that walks all of
them again and freezes what is left, at exponentially spaced intervals. It is one long pause
(150-235 ms at the benchmark's size), so it waits for the daemon to be idle (`sweep_when_idle`:
no placement for half a second), as browsers and Go's runtime give idle time to their
collectors. Falling in the middle of a burst, it held up every call in flight: in the placement
benchmark a 234 ms sweep took the saturated run's p99 from ~50 to 261 ms; now sweeps fall in
the pauses between its runs. Under load that never pauses, a sweep runs anyway once
FORCE_AFTER times as many objects are frozen as made it due, so what it reclaims stays bounded.
"""
from __future__ import annotations

import gc
import threading
import time
from typing import Any, Callable

FORCE_AFTER = 4  # a due sweep waits for idle time until this many times its threshold is frozen
# CPython's gen-2 threshold while installed: a full collection once more than this many gen-1
# collections ran since the last (CPython's default is 10). Since each walks only what is newer
# than the last freeze, more frequent ones are shorter for the same total: in the placement
# benchmark's main run 1.1-3.4 ms each at 1.3-2.5 a second, against 5-18 ms at 0.4 a second,
# ~5 ms of each second either way. In 6 alternating pairs of main runs the p99 was lower in 5,
# 20.5 against 22.9 ms on average, at the same rate.
FULL_AFTER = 1


class FrozenOldGeneration:
    """The gc callback: `install()` once the daemon's start-up state is loaded. It neither logs
    nor blocks (it runs inside a collection, on whichever thread allocated): it counts."""

    def __init__(self, min_sweep: int = 100_000, force_after: int = FORCE_AFTER, full_after: int = FULL_AFTER) -> None:
        self.min_sweep = min_sweep  # a sweep waits for at least this many objects frozen since the last
        self.force_after = force_after
        self.full_after = full_after
        self._thresholds = gc.get_threshold()
        self.swept = 0  # objects frozen by the last sweep (or at start)
        self.since = 0  # objects frozen since
        self.due = False  # a sweep waits for idle time
        self.sweeping = False  # the next full collection is the sweep
        self.freezes = 0
        self.sweeps = 0
        self.idle_sweeps = 0
        self.longest_sweep_ms = 0.0
        self._started = 0.0
        self._idle_for: Callable[[], float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def install(self) -> FrozenOldGeneration:
        gc.collect()
        self.swept = len(gc.get_objects(generation=2))
        gc.freeze()
        gc.callbacks.append(self)
        self._thresholds = gc.get_threshold()
        gc.set_threshold(*self._thresholds[:2], self.full_after)
        return self

    def sweep_when_idle(self, idle_for: Callable[[], float], quiet: float = 0.5,
                        every: float = 0.1) -> FrozenOldGeneration:
        """Due sweeps run on a thread of this collector's once `idle_for()` (seconds without
        work) reaches `quiet`, instead of at the next full collection."""
        self._idle_for = idle_for

        def run() -> None:
            while not self._stop.wait(every):
                if self.due and not self.sweeping and idle_for() >= quiet:
                    self.idle_sweeps += 1
                    self._sweep_next()
                    gc.collect()
        self._thread = threading.Thread(target=run, name="idle-sweeper", daemon=True)
        self._thread.start()
        return self

    def uninstall(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self in gc.callbacks:
            gc.callbacks.remove(self)
            gc.set_threshold(*self._thresholds)

    def _sweep_next(self) -> None:
        # Marked before the unfreeze: a collection that another thread starts in between is the sweep.
        self.due, self.sweeping = False, True
        gc.unfreeze()

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
        threshold = max(self.swept, self.min_sweep)
        if self.since > threshold:
            if self._idle_for is None or self.since > self.force_after * threshold:
                self._sweep_next()  # the next full collection walks everything once
            else:
                self.due = True
