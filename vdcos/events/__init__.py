"""The datacenter's events: written by the process that saw the change (an API replica's
servicers, scheduler and controllers; a node's agent), kept in etcd under /vdcos/events/ as a
journal (state/journal.py: batched writes, newest-first reads by hour, age and count
retention), listed a page at a time and watched (apiserver/event.py, `vdcos events`).

Each writer holds a rate limit per kind and project, as Kubernetes' event correlator does: a
burst past it (20,000 VMs created in a minute) is folded into one event a second that says how
many it stands for, so events never compete with placements for etcd."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Callable

from vdcos.model import EVENT_KINDS, ClusterEvent, decode
from vdcos.state import keys
from vdcos.state.journal import Journal, newest
from vdcos.state.store import Store

RETENTION_S = 3 * 86400
MAX_COUNT = 20_000
RATE_PER_S = 20.0   # events of one kind and project a writer writes one by one, on average
BURST = 100         # ... and at once


@dataclass
class _Bucket:
    tokens: float
    at: float
    folded: int = 0
    first: str = ""
    last: str = ""
    node: str = ""


class Recorder:
    """One per process. `trim`: this writer also enforces the retention (API replicas do;
    node agents leave it to them)."""

    def __init__(self, store: Store, *, retention_s: float = RETENTION_S, max_count: int = MAX_COUNT,
                 trim: bool = False, rate: float = RATE_PER_S, burst: int = BURST) -> None:
        self.journal: Journal[ClusterEvent] = Journal(store, keys.EVENTS, retention_s if trim else None,
                                                      max_count=max_count if trim else 0, name="events")
        self.rate, self.burst = rate, burst
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._folder = threading.Thread(target=self._fold_loop, name="events-fold", daemon=True)

    def start(self) -> Recorder:
        self.journal.start()
        self._folder.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._folder.join(2)
        self._flush_folded()
        self.journal.stop()

    def emit(self, kind: str, name: str, *, node: str = "", project: str = "", message: str = "",
             **fields: object) -> None:
        """Never blocks, never raises for a bad field: an event must not fail what it reports."""
        assert kind in EVENT_KINDS, kind
        now = time.time()
        with self._lock:
            b = self._buckets.get((kind, project))
            if b is None:
                b = self._buckets[(kind, project)] = _Bucket(float(self.burst), now)
            b.tokens = min(float(self.burst), b.tokens + (now - b.at) * self.rate)
            b.at = now
            if b.tokens < 1:
                b.folded += 1
                b.first = b.first or name
                b.last, b.node = name, node
                return
            b.tokens -= 1
        self.journal.record(ClusterEvent(now, kind, name, node, project, message[:500],
                                         tuple(sorted((k, str(v)[:200]) for k, v in fields.items()))))

    def _fold_loop(self) -> None:
        while not self._stop.wait(1.0):
            self._flush_folded()

    def _flush_folded(self) -> None:
        with self._lock:
            folded = [(k, b.folded, b.first, b.last, b.node) for k, b in self._buckets.items() if b.folded]
            for k, *_ in folded:
                b = self._buckets[k]
                b.folded, b.first, b.last = 0, "", ""
        for (kind, project), n, first, last, node in folded:
            self.journal.record(ClusterEvent(time.time(), kind, "", node if first == last else "", project,
                                             f"{n} more {kind} events ({first} ... {last})", count=n))


@dataclass(frozen=True)
class Filter:
    vm: str = ""
    node: str = ""
    kind: str = ""       # a kind, or a family ending in "." (vm., node.)
    project: str | None = None  # None: every project's and none's

    def keeps(self, e: ClusterEvent) -> bool:
        if self.vm and (e.object_kind != "vm" or e.name != self.vm):
            return False
        if self.node and e.node != self.node and not (e.object_kind == "node" and e.name == self.node):
            return False
        if self.kind and not (e.kind == self.kind or (self.kind.endswith(".") and e.kind.startswith(self.kind))):
            return False
        return self.project is None or e.project == self.project


def decode_event(raw: bytes) -> ClusterEvent:
    return decode(ClusterEvent, json.loads(raw))


def page(store: Store, f: Filter, size: int, before: str = "", since: float = 0.0
         ) -> tuple[list[tuple[str, ClusterEvent]], str]:
    """Newest first: up to `size` events older than the key `before`, and the token of the next
    page ("" when this is the last)."""
    got = newest(store, keys.EVENTS, since or time.time() - RETENTION_S, time.time() + 60, size + 1,
                 decode_event, f.keeps, before_key=before)
    more = len(got) > size
    got = got[:size]
    return got, (got[-1][0] if more and got else "")


Emit = Callable[..., None]


def nothing(*_: object, **__: object) -> None:
    """An emitter for code run without a recorder (tests, tools)."""
