"""The small framework every control loop runs on (Kubernetes' client-go: a work queue with
per-item rate limiting, and leader election on a lease): the controllers' (vdcos/controllers)
and, for its per-item backoff, the node agent's.

A controller names the items it is responsible for (`keys`, asked at every resync) and
reconciles one at a time (`reconcile`). An item whose reconcile raises is logged with its key,
counted, and tried again after its own exponential backoff; the other items go on meanwhile,
so one bad record never blocks the rest. A leader-elected controller runs on one replica at a
time: the holder of a key under its etcd lease. When that replica dies the key goes with its
lease, and another replica takes it at its next resync: within one lease TTL plus one resync.
"""
from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from vdcos.state.store import Compare, Event, Put, Store, StoreError

log = logging.getLogger(__name__)


class Controller(Protocol):
    name: str

    def keys(self) -> Iterable[str]:
        """Every item to reconcile now (asked at every resync)."""

    def reconcile(self, key: str) -> None:
        """Bring one item to its desired state; raise to be tried again after a backoff."""


@dataclass
class Backoff:
    """Per item that is failing: how often in a row, its last error, and when it may be tried
    again: `base_s` after the first failure, doubling, at most `max_s` (client-go's
    ItemExponentialFailureRateLimiter). The controllers' runner, the node agent's VMs and the
    switch controller's ports keep one each."""

    base_s: float = 0.5
    max_s: float = 60.0
    failures: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)

    def due(self, key: str) -> bool:
        """Not waiting out the backoff of a failure."""
        return self.retry_at.get(key, 0.0) <= time.monotonic()

    def failed(self, key: str, error: object) -> float:
        """Count a failure; the seconds until the item is due again."""
        n = self.failures.get(key, 0)
        self.failures[key] = n + 1
        delay = min(self.base_s * 2.0 ** n, self.max_s)
        self.errors[key] = str(error) or type(error).__name__
        self.retry_at[key] = time.monotonic() + delay
        return delay

    def succeeded(self, key: str) -> None:
        for d in (self.failures, self.errors, self.retry_at):
            d.pop(key, None)

    def keep(self, keys: Iterable[str]) -> None:
        """Forget the items that are gone."""
        live = set(keys)
        for d in (self.failures, self.errors, self.retry_at):
            for k in set(d) - live:
                d.pop(k, None)  # the runner's worker may have forgotten it meanwhile


class WorkQueue:
    """Items waiting to be reconciled: each at most once in the queue, however often it is added
    (an item added while it is being reconciled is queued again once that ends), and items
    added with a delay wait for it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ready: list[str] = []
        self._queued: set[str] = set()
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._later: list[tuple[float, str]] = []
        self._closed = False

    def add(self, key: str, delay: float = 0.0) -> None:
        with self._cond:
            if delay > 0:
                heapq.heappush(self._later, (time.monotonic() + delay, key))
            elif key in self._busy:
                self._again.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)
            self._cond.notify()

    def get(self, timeout: float) -> str | None:
        """The next item, marked busy until `done`; None after `timeout` or once closed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._later and self._later[0][0] <= now:
                    _, key = heapq.heappop(self._later)
                    if key in self._busy:
                        self._again.add(key)
                    elif key not in self._queued:
                        self._queued.add(key)
                        self._ready.append(key)
                if self._ready:
                    key = self._ready.pop(0)
                    self._queued.discard(key)
                    self._busy.add(key)
                    return key
                wait = deadline - now
                if self._later:
                    wait = min(wait, self._later[0][0] - now)
                if wait <= 0:
                    return None
                self._cond.wait(wait)
            return None

    def done(self, key: str) -> None:
        with self._cond:
            self._busy.discard(key)
            if key in self._again:
                self._again.discard(key)
                if key not in self._queued:
                    self._queued.add(key)
                    self._ready.append(key)
                self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._later)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class LeaderLease:
    """Leadership of one loop among the replicas: a key held under this replica's own lease."""

    def __init__(self, store: Store, key: str, ttl: int = 15) -> None:
        self.store = store
        self.key = key
        self.ttl = ttl
        self._lease = 0

    def hold(self) -> bool:
        """Keep or take the key; True while this replica leads. A store error loses nothing:
        the replica does not lead until it can tell that it does."""
        try:
            if self._lease and self.store.keepalive(self._lease) > 0:
                kv = self.store.get(self.key)
                if kv is not None and kv.value == self._holder():
                    return True
            else:
                self._lease = self.store.grant_lease(self.ttl)
            return self.store.txn([Compare(self.key, "create", "==", 0)],
                                  [Put(self.key, self._holder(), self._lease)]).succeeded
        except StoreError as e:
            log.warning("leadership of %s unknown: %s", self.key, e)
            return False

    def _holder(self) -> bytes:
        """The key's value: this replica's lease, and its process (operators and the chaos
        benchmark look up who leads)."""
        return f"lease={self._lease:x} pid={os.getpid()}".encode()

    def release(self) -> None:
        if self._lease:
            try:
                self.store.revoke_lease(self._lease)
            except StoreError:
                pass
            self._lease = 0


class Runner:
    """Runs one controller: a resync every `resync_s` (while leading, if `leader` is given) that
    queues every item, and a worker that reconciles them one at a time. With `watch` (a key
    prefix and the item a key under it belongs to), every put there queues its item at once, as
    an informer's event handler does; the resync still catches what a lost watch missed."""

    def __init__(self, controller: Controller, *, leader: LeaderLease | None = None, resync_s: float = 1.0,
                 backoff: Backoff | None = None, store: Store | None = None,
                 watch: tuple[str, Callable[[str], str]] | None = None) -> None:
        self.controller = controller
        self.leader = leader
        self.resync_s = resync_s
        self.backoff = backoff or Backoff()
        self.queue = WorkQueue()
        self.leading = leader is None
        self.reconciled = 0
        assert watch is None or store is not None
        self._store = store
        self._watch = watch
        self._cancel_watch: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._resync_loop, name=f"{controller.name}-resync", daemon=True),
                         threading.Thread(target=self._work_loop, name=f"{controller.name}-worker", daemon=True)]

    def start(self) -> Runner:
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._cancel_watch is not None:
            self._cancel_watch()
        self.queue.close()
        for t in self._threads:
            t.join(timeout)
        if self.leader is not None:
            self.leader.release()

    @property
    def name(self) -> str:
        return self.controller.name

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def errors(self) -> dict[str, str]:
        """The last error of each item that is failing now."""
        return self.backoff.errors

    def _resync_loop(self) -> None:
        while not self._stop.is_set():
            if self.leader is not None:
                was, self.leading = self.leading, self.leader.hold()
                if self.leading != was:
                    log.info("%s: %s", self.controller.name, "leading" if self.leading else "no longer leading")
            if self.leading:
                try:
                    if self._watch is not None and self._cancel_watch is None:
                        self._subscribe()
                    keys = list(self.controller.keys())
                    self.backoff.keep(keys)
                    for key in keys:
                        if self.backoff.due(key):  # a failing item waits out its backoff, resyncs or not
                            self.queue.add(key)
                except Exception as e:  # the loop outlives any error in one resync
                    log.warning("%s: listing what to reconcile failed: %s", self.controller.name, e)
            self._stop.wait(self.resync_s)

    def _subscribe(self) -> None:
        """Watch from the current revision: this resync's listing covers what came before."""
        assert self._store is not None and self._watch is not None
        prefix, item_of = self._watch

        def on_events(events: list[Event], _rev: int) -> None:
            if self.leading:
                for e in events:
                    if e.kind == "put":
                        self.queue.add(item_of(e.kv.key))

        def on_error(e: Exception) -> None:
            log.warning("%s: watch on %s lost (%s); watching again at the next resync", self.controller.name,
                        prefix, e)
            self._cancel_watch = None

        _, rev = self._store.get_prefix(prefix + "\x00none")  # the current revision, nothing else
        self._cancel_watch = self._store.watch_prefix(prefix, rev + 1, on_events, on_error)

    def _work_loop(self) -> None:
        while not self._stop.is_set():
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            try:
                if self.leading:
                    self.controller.reconcile(key)
                    self.backoff.succeeded(key)
                    self.reconciled += 1
            except Exception as e:  # one item's failure is its own: logged, retried later
                delay = self.backoff.failed(key, e)
                log.warning("%s: %s failed (retry in %.1f s): %s", self.controller.name, key, delay, e,
                            exc_info=not isinstance(e, (StoreError, OSError)))
                self.queue.add(key, delay)
            finally:
                self.queue.done(key)
