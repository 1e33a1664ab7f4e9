"""The store protocol: the small slice of etcd's API that vdcos uses, and an in-memory twin.

Every writer goes through `txn` with compares on mod/create revisions (optimistic
concurrency); `MemoryStore` keeps etcd's revision semantics so the in-memory harness
exercises the same retry paths as real etcd.
"""
from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Sequence


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int = 1
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Compare:
    key: str
    target: Literal["mod", "create", "version"]
    op: Literal["==", "!=", "<", ">"]
    value: int
    # Compare every key under `key` as a prefix (etcd's range compare); true when all match.
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Get:
    key: str
    prefix: bool = False


Op = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    # One list per Get op, in order, of the branch that ran.
    gets: tuple[tuple[KV, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    kind: Literal["put", "delete"]
    kv: KV


WatchCallback = Callable[[list[Event], int], None]


class StoreError(Exception):
    """The store cannot be reached or refused the request."""


class CompactedError(StoreError):
    """A watch asked for a revision the store no longer has."""


class Store(Protocol):
    def get(self, key: str) -> KV | None: ...
    def get_prefix(self, prefix: str) -> tuple[list[KV], int]: ...
    def put(self, key: str, value: bytes, lease: int = 0) -> int: ...
    def delete(self, key: str, prefix: bool = False) -> int: ...
    def txn(self, compares: Sequence[Compare], success: Sequence[Op],
            failure: Sequence[Op] = ()) -> TxnResult: ...
    def grant_lease(self, ttl: int) -> int: ...
    def keepalive(self, lease: int, timeout: float | None = None) -> int: ...
    def revoke_lease(self, lease: int) -> None: ...
    def watch_prefix(self, prefix: str, start_revision: int, callback: WatchCallback,
                     on_error: Callable[[Exception], None] | None = None) -> Callable[[], None]: ...
    def close(self) -> None: ...


def prefix_end(prefix: str) -> str:
    b = bytearray(prefix.encode())
    b[-1] += 1
    return b.decode()


@dataclass
class _Lease:
    ttl: int
    expires: float
    keys: set[str] = field(default_factory=set)


class MemoryStore:
    """etcd semantics in one process: global revision, per-key create/mod/version, leases, watches."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._data: dict[str, KV] = {}
        self._keys: list[str] = []
        self._rev = 1
        self._leases: dict[int, _Lease] = {}
        self._next_lease = 1
        self._history: list[tuple[int, Event]] = []
        self._watchers: list[tuple[str, WatchCallback]] = []

    # reads
    def get(self, key: str) -> KV | None:
        with self._lock:
            self._expire()
            return self._data.get(key)

    def _range(self, key: str, prefix: bool) -> list[KV]:
        if not prefix:
            kv = self._data.get(key)
            return [kv] if kv else []
        lo = bisect.bisect_left(self._keys, key)
        hi = bisect.bisect_left(self._keys, prefix_end(key))
        return [self._data[k] for k in self._keys[lo:hi]]

    def get_prefix(self, prefix: str) -> tuple[list[KV], int]:
        with self._lock:
            self._expire()
            return self._range(prefix, True), self._rev

    # writes
    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return self.txn([], [Put(key, value, lease)]).revision

    def delete(self, key: str, prefix: bool = False) -> int:
        with self._lock:
            n = len(self._range(key, prefix))
            self.txn([], [Delete(key, prefix)])
            return n

    def txn(self, compares: Sequence[Compare], success: Sequence[Op],
            failure: Sequence[Op] = ()) -> TxnResult:
        with self._lock:
            self._expire()
            ok = all(self._check(c) for c in compares)
            ops = success if ok else failure
            events: list[Event] = []
            gets: list[tuple[KV, ...]] = []
            rev = self._rev + 1 if any(not isinstance(o, Get) for o in ops) else self._rev
            for op in ops:
                if isinstance(op, Get):
                    gets.append(tuple(self._range(op.key, op.prefix)))
                elif isinstance(op, Put):
                    if op.lease and op.lease not in self._leases:
                        raise StoreError(f"lease {op.lease} not found")
                    old = self._data.get(op.key)
                    kv = KV(op.key, op.value, old.create_revision if old else rev, rev,
                            (old.version + 1) if old else 1, op.lease)
                    if old is None:
                        bisect.insort(self._keys, op.key)
                    if op.lease:
                        self._leases[op.lease].keys.add(op.key)
                    self._data[op.key] = kv
                    events.append(Event("put", kv))
                else:
                    for kv in self._range(op.key, op.prefix):
                        events.append(Event("delete", self._remove(kv.key, rev)))
            if events:
                self._rev = rev
                self._publish(events)
            return TxnResult(ok, self._rev, tuple(gets))

    def _remove(self, key: str, rev: int) -> KV:
        kv = self._data.pop(key)
        self._keys.pop(bisect.bisect_left(self._keys, key))
        return KV(key, b"", kv.create_revision, rev, 0, kv.lease)

    def _check(self, c: Compare) -> bool:
        kvs: list[KV | None] = list(self._range(c.key, True)) if c.prefix else [self._data.get(c.key)]
        for kv in kvs:
            actual = 0 if kv is None else {"mod": kv.mod_revision, "create": kv.create_revision,
                                           "version": kv.version}[c.target]
            if not {"==": actual == c.value, "!=": actual != c.value,
                    "<": actual < c.value, ">": actual > c.value}[c.op]:
                return False
        return True

    # leases
    def grant_lease(self, ttl: int) -> int:
        with self._lock:
            lid = self._next_lease
            self._next_lease += 1
            self._leases[lid] = _Lease(ttl, time.monotonic() + ttl)
            return lid

    def keepalive(self, lease: int, timeout: float | None = None) -> int:
        with self._lock:
            self._expire()
            le = self._leases.get(lease)
            if le is None:
                return 0
            le.expires = time.monotonic() + le.ttl
            return le.ttl

    def revoke_lease(self, lease: int) -> None:
        with self._lock:
            le = self._leases.pop(lease, None)
            if le is not None:
                self._drop_keys(le.keys)

    def _expire(self) -> None:
        now = time.monotonic()
        # Pop them all first: dropping keys runs a txn, which checks expiry again.
        expired = [self._leases.pop(lid) for lid, le in list(self._leases.items()) if le.expires <= now]
        for le in expired:
            self._drop_keys(le.keys)

    def _drop_keys(self, keys: set[str]) -> None:
        live = [k for k in keys if k in self._data]
        if live:
            self.txn([], [Delete(k) for k in live])

    # watches
    def _publish(self, events: list[Event]) -> None:
        for ev in events:
            self._history.append((ev.kv.mod_revision, ev))
        for prefix, cb in list(self._watchers):
            mine = [e for e in events if e.kv.key.startswith(prefix)]
            if mine:
                cb(mine, self._rev)

    def watch_prefix(self, prefix: str, start_revision: int, callback: WatchCallback,
                     on_error: Callable[[Exception], None] | None = None) -> Callable[[], None]:
        with self._lock:
            past = [e for r, e in self._history if r >= start_revision and e.kv.key.startswith(prefix)]
            if past:
                callback(past, self._rev)
            entry = (prefix, callback)
            self._watchers.append(entry)

        def cancel() -> None:
            with self._lock:
                if entry in self._watchers:
                    self._watchers.remove(entry)
        return cancel

    def expire_leases_now(self) -> None:
        """Test hook: behave as if every lease's TTL ran out."""
        with self._lock:
            for le in self._leases.values():
                le.expires = 0.0
            self._expire()

    def close(self) -> None:
        pass
