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
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, TypeVar

from vdcos.errors import ResourceExhausted, Unavailable

T = TypeVar("T")
WORKERS = 2  # planner processes, and jobs in them at once


class PlannerPool:
    def __init__(self, size: int = WORKERS) -> None:
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def run(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) in a worker process (fn and its arguments are pickled: a module-level
        function of plain data); blocks the calling thread until it answers."""
        return self.submit(fn, *args)()

    def submit(self, fn: Callable[..., T], *args: object) -> Callable[[], T]:
        """Start fn(*args) in a worker process now; the returned call waits for its answer.
        The job holds its place in the bound until it has answered. A worker that dies (killed,
        out of memory) fails its job UNAVAILABLE, and the next job gets a new pool."""
        if not self._slots.acquire(blocking=False):
            raise ResourceExhausted(f"{self.size} planning jobs are running, the most this API server runs at "
                                    "once; retry when one has finished")
        try:
            with self._lock:
                if self._pool is None:  # the processes start on first use: most servers never plan
                    self._pool = ProcessPoolExecutor(self.size, mp_context=mp.get_context("spawn"))
                pool = self._pool
                job = pool.submit(fn, *args)
        except BrokenProcessPool as e:
            self._slots.release()
            self._discard(pool)
            raise Unavailable("the planner processes died; retry") from e
        except BaseException:
            self._slots.release()
            raise
        job.add_done_callback(lambda _: self._slots.release())

        def result() -> T:
            try:
                return job.result()
            except BrokenProcessPool as e:
                self._discard(pool)
                raise Unavailable("a planner process died while planning; retry") from e
        return result

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

