"""An append-only log in etcd, for records that many processes write and few read: the audit log
and the datacenter's events. Entries are queued by `record` (which never blocks its caller) and
written by a thread in batches, under `<prefix><UTC hour>/<time ns>-<writer><seq>`, so that keys
sort by time across writers; hours past the retention go with one prefix delete each, and past
`max_count` entries the oldest go too. When the queue is full (etcd down for long), entries are
dropped and the next written one says how many (`on_dropped`)."""
from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from typing import Any, Callable, Generic, Protocol, Self, TypeVar

from vdcos.model import dumps
from vdcos.state.store import Delete, Put, Store, StoreError

log = logging.getLogger(__name__)

QUEUE_MAX = 10_000
BATCH = 100          # puts per transaction (etcd allows 128 operations in one)
FLUSH_S = 0.2
TRIM_EVERY_S = 300.0


class Entry(Protocol):
    @property
    def at(self) -> float: ...


T = TypeVar("T", bound=Entry)


def hour_prefix(prefix: str, at: float) -> str:
    return f"{prefix}{time.strftime('%Y%m%d%H', time.gmtime(at))}/"


def entry_key(prefix: str, at: float, uniq: str) -> str:
    """Time-ordered within its hour; `uniq` keeps two writers' entries of one instant apart."""
    return f"{hour_prefix(prefix, at)}{int(at * 1e9):020d}-{uniq}"


class Journal(Generic[T]):
    def __init__(self, store: Store, prefix: str, retention_s: float | None, *, max_count: int = 0,
                 on_dropped: Callable[[T, int], T] | None = None, name: str = "journal",
                 flush_s: float = FLUSH_S) -> None:
        self.store = store
        self.prefix = prefix
        self.retention_s = retention_s
        self.max_count = max_count
        self.dropped = 0
        self.on_dropped = on_dropped
        self.name = name
        self.flush_s = flush_s
        self._queue: queue.Queue[T] = queue.Queue(QUEUE_MAX)
        self._stop = threading.Event()
        self._uniq = secrets.token_hex(3)
        self._seq = 0
        self._trimmed_at = 0.0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Writes what is queued (for a moment at most), then stops."""
        self._stop.set()
        self._thread.join(5)

    def record(self, entry: T) -> None:
        """Never blocks the caller."""
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1

    def _loop(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._take()
            try:
                if batch:
                    self._write(batch)
                if self.retention_s is not None and time.time() - self._trimmed_at > TRIM_EVERY_S:
                    self.trim()
            except StoreError as e:
                log.warning("%s: %d entries not written (%s)", self.name, len(batch), e)
                self.dropped += len(batch)
                if self._stop.is_set():
                    return
            except Exception:  # the log must outlive any bug
                log.exception("%s writer", self.name)

    def _take(self) -> list[T]:
        """What came within flush_s of the first entry (at most BATCH): a busy API writes a few
        transactions a second, not one per call (each is a write to etcd's log on disk, which
        the placements' commits wait behind)."""
        try:
            batch = [self._queue.get(timeout=self.flush_s)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.flush_s
        while len(batch) < BATCH and (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[T]) -> None:
        if self.dropped and self.on_dropped is not None:
            n, self.dropped = self.dropped, 0
            batch[-1] = self.on_dropped(batch[-1], n)
        ops: list[Put | Delete] = []
        for e in batch:
            self._seq += 1
            ops.append(Put(entry_key(self.prefix, e.at, f"{self._uniq}{self._seq:06d}"), dumps(e)))
        self.store.txn([], ops)

    def trim(self) -> None:
        """Drop the hours past the retention (the first sweep looks 30 days back, later ones only
        at the hours that aged out since), then the oldest entries past max_count."""
        assert self.retention_s is not None
        now = time.time()
        edge = now - self.retention_s
        start = edge - (30 * 86400 if not self._trimmed_at else (now - self._trimmed_at) + 7200)
        hours = sorted({hour_prefix(self.prefix, t) for t in _hours(start, edge - 3600)})
        for i in range(0, len(hours), BATCH):
            self.store.txn([], [Delete(h, prefix=True) for h in hours[i:i + BATCH]])
        if self.max_count:
            kvs, _ = self.store.get_prefix(self.prefix)
            old = [kv.key for kv in kvs[:max(0, len(kvs) - self.max_count)]]
            for i in range(0, len(old), BATCH):
                self.store.txn([], [Delete(k) for k in old[i:i + BATCH]])
        self._trimmed_at = now


def _hours(start: float, end: float) -> list[float]:
    out, t = [], start
    while t <= end:
        out.append(t)
        t += 3600
    return out


def newest(store: Store, prefix: str, since: float, until: float, limit: int,
           decode: Callable[[bytes], Any], keep: Callable[[Any], bool] = lambda _: True,
           before_key: str = "") -> list[tuple[str, Any]]:
    """The newest entries between `since` and `until` that `keep` keeps, newest first, at most
    `limit`, with their keys, read hour by hour backwards (so a short window reads little).
    `before_key`: only entries older than that one (the next page)."""
    out: list[tuple[str, Any]] = []
    t = until
    if before_key:  # the next page starts in the hour of the last one's end
        t = min(t, int(before_key.rpartition("/")[2].partition("-")[0]) / 1e9)
    while t >= since - 3600 and len(out) < limit:
        kvs, _ = store.get_prefix(hour_prefix(prefix, t))
        for kv in reversed(kvs):
            if before_key and kv.key >= before_key:
                continue
            e = decode(kv.value)
            if since <= e.at <= until and keep(e):
                out.append((kv.key, e))
                if len(out) >= limit:
                    break
        t -= 3600
    return out
