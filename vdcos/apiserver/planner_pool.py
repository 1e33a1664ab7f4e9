"""Planner work off the API process's event loop and GIL.

A PlanHosts call may run the HiGHS MIP for up to 120 s, and the pure-Python parts of the
planner hold the GIL that the placement worker needs. So the API hands such work to a small
pool of worker processes (started with spawn: forking a process that runs gRPC's threads is
unsafe), and takes at most `size` jobs at once: one more is refused at once with
RESOURCE_EXHAUSTED rather than queued behind minutes of other callers' work.
"""
from __future__ import annotations

import multiprocessing as mp
import threading
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from vdcos.errors import ResourceExhausted

T = TypeVar("T")
WORKERS = 2    # planner processes, and jobs run in them at once
IN_THREAD = 4  # jobs on the live snapshot run at once in the API's threads


class PlannerPool:
    def __init__(self, size: int = WORKERS, in_thread: int = IN_THREAD) -> None:
        self.size = size
        self.in_thread = in_thread
        self._slots = threading.BoundedSemaphore(size)
        self._thread_slots = threading.BoundedSemaphore(in_thread)
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def run(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) in a worker process (fn and its arguments are pickled: a module-level
        function of plain data); blocks the calling thread until it answers."""
        with _slot(self._slots, self.size):
            with self._lock:
                if self._pool is None:  # the processes start on first use: most servers never plan
                    self._pool = ProcessPoolExecutor(self.size, mp_context=mp.get_context("spawn"))
                pool = self._pool
            return pool.submit(fn, *args).result()

    def run_here(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) in the calling thread, within the same bound: for what works on the live
        cluster snapshot, which costs more to pickle for a child (10,000 hosts) than to plan on."""
        with _slot(self._thread_slots, self.in_thread):
            return fn(*args)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


@contextmanager
def _slot(slots: threading.BoundedSemaphore, size: int) -> Iterator[None]:
    if not slots.acquire(blocking=False):
        raise ResourceExhausted(f"{size} planning jobs of this kind are running, the most this API server runs at "
                                "once; retry when one has finished")
    try:
        yield
    finally:
        slots.release()
