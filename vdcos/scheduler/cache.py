"""The scheduler's view of etcd: loaded atomically at one revision, then kept current by watches
(kube-scheduler's informer cache). Produces immutable `ClusterSnapshot`s for the pure core.

The per-node arrays, and the score terms derived from them, are kept current one column at a
time as records change. `snapshot()` copies them (a few ms at 10,000 nodes: for explain, plans,
reports); the placement worker `borrow()`s them instead, under the lock, for one batch.

Every record remembers the etcd revision it was read at, so our own commits, the watch and
the reads done when a commit conflicts can arrive in any order without going backwards.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import orjson

from vdcos.model import (DIMENSIONS, AllocEntry, Allocation, NodeSpec, NodeStatus, PlacementGroup, QosClass,
                         QosPolicy, Quota, SchedulerConfig, Sums, decode, policy_named)
from vdcos.model.fit import allocatable
from vdcos.scheduler.core.snapshot import ClusterSnapshot, ScoreTerms, derive, free_terms
from vdcos.state import keys
from vdcos.state.reflector import Reflector
from vdcos.state.store import KV, Event, Store

log = logging.getLogger(__name__)

WATCHED = (keys.CONFIG, keys.POLICIES, keys.NODES, keys.ALLOC, keys.GROUPS, keys.QUOTAS)
D = len(DIMENSIONS)
_ZERO = (0.0,) * D


# The sums of recent allocations, by the identity of their entries (the tuple is kept with them,
# so its id cannot be reused while it is here). The placement worker asks for a node's sums for
# each VM it puts there and again when its commit lands (the cache applies the very objects it
# committed); `with_entry` derives the new sums from the old ones. A cache of the placement
# path, so it lives here and not in the value objects.
_SUMS: dict[int, tuple[tuple[AllocEntry, ...], Sums]] = {}
_SUMS_MAX = 1 << 15


_PROTECTED: dict[int, tuple[tuple[AllocEntry, ...], np.ndarray]] = {}


def _remember(entries: tuple[AllocEntry, ...], sums: Sums) -> Sums:
    if len(_SUMS) >= _SUMS_MAX:
        _SUMS.clear()
    _SUMS[id(entries)] = (entries, sums)
    return sums


def allocation_sums(a: Allocation) -> Sums:
    """`a.sums()`, remembered."""
    got = _SUMS.get(id(a.entries))
    if got is not None and got[0] is a.entries:
        return got[1]
    return _remember(a.entries, a.sums())


def with_entry(a: Allocation, entry: AllocEntry) -> Allocation:
    """`a.with_entry(entry)`, its sums remembered from `a`'s (integers: the same as adding them
    all up again)."""
    if a.has(entry.vm):
        return a.with_entry(entry)
    g, c = allocation_sums(a)
    r = entry.reserved.as_tuple()
    if entry.qos_class is QosClass.GUARANTEED:
        g = tuple(x + y for x, y in zip(g, r))
    if entry.qos_class is not QosClass.BEST_EFFORT:
        c = tuple(x + y for x, y in zip(c, r))
    done = a.with_entry(entry)
    _remember(done.entries, (g, c))
    return done


@dataclass(frozen=True, slots=True)
class NodeView:
    spec: NodeSpec
    status: NodeStatus | None
    cordoned: bool
    allocation: Allocation
    alloc_revision: int
    status_create_revision: int


class _Groups(Mapping[str, PlacementGroup]):
    """The cache's groups without their revisions, read in place: a borrowed snapshot's (a
    copy of every group for each batch cost a tenth of the placement worker's time)."""

    __slots__ = ("_stored",)

    def __init__(self, stored: dict[str, tuple[PlacementGroup, int]]) -> None:
        self._stored = stored

    def __getitem__(self, name: str) -> PlacementGroup:
        return self._stored[name][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._stored)

    def __len__(self) -> int:
        return len(self._stored)


class ClusterCache:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self.revision = 0
        self._changed_at = time.monotonic()
        self._seen: dict[str, int] = {}
        self.config = SchedulerConfig()
        self.config_revision = 0
        self.policies: dict[str, tuple[QosPolicy, int]] = {}
        self.groups: dict[str, tuple[PlacementGroup, int]] = {}
        self.quotas: dict[str, tuple[Quota, int]] = {}  # by project, with the record's mod revision
        self.specs: dict[str, NodeSpec] = {}
        self.statuses: dict[str, tuple[NodeStatus, int]] = {}
        self.cordons: dict[str, str] = {}
        self.allocs: dict[str, tuple[Allocation, int]] = {}
        self._index: dict[str, int] = {}
        self._names: list[str] = []
        cap = 64
        # Node arrays, one column per slot: (D, cap) ...
        self._cap, self._acap, self._g, self._c = (np.zeros((D, cap)) for _ in range(4))
        # ... (N,) masks ...
        self._present, self._ready, self._cordoned, self._sched = (np.zeros(cap, dtype=bool) for _ in range(4))
        # ... and the score terms (see ScoreTerms), derived column by column.
        self._terms = derive(self._cap, self._acap, self._g, self._c, self._sched)
        self._stale = False  # every column must be derived again (the overcommit ratios changed)
        self._labels: dict[tuple[str, str], set[int]] = {}
        self._label_index: dict[tuple[str, str], frozenset[int]] | None = None
        self._snapshot: ClusterSnapshot | None = None
        self._borrowed: ClusterSnapshot | None = None
        self._names_index: tuple[tuple[str, ...], dict[str, int]] = ((), {})
        self._reflector: Reflector | None = None
        self._listeners: list[Callable[[bool], None]] = []
        # Records we are committing ourselves, by key: (the bytes sent, the object they encode).
        self._sending: dict[str, tuple[bytes, Allocation | PlacementGroup]] = {}

    # --- loading and watching ---------------------------------------------------------
    def start(self) -> ClusterCache:
        self._reflector = Reflector(self.store, WATCHED, self._replace, self._on_events, name="scheduler cache",
                                    on_synced=self._synced_changed).start()
        return self

    def stop(self) -> None:
        if self._reflector is not None:
            self._reflector.stop()

    @property
    def synced(self) -> bool:
        """False between a lost watch and the next list: the cache may be behind etcd, and
        nothing may be placed from it."""
        return self._reflector is not None and self._reflector.synced

    def on_synced(self, fn: Callable[[bool], None]) -> None:
        self._listeners.append(fn)

    def _synced_changed(self, synced: bool) -> None:
        if not synced:
            log.error("scheduler cache: watch lost (%s); placing nothing until it has listed again",
                      self._reflector.last_error if self._reflector else "")
        for fn in self._listeners:
            fn(synced)

    def _replace(self, kvs: list[KV], revision: int) -> None:
        """The records as of one list: those listed are applied, those it had and the list
        lacks were deleted meanwhile."""
        with self._lock:
            self._stale = True  # one derivation of every column at the next snapshot, not one per record
            listed = {kv.key for kv in kvs}
            for key in [k for k in self._seen if k not in listed]:
                self._apply_delete(key, revision)
            for kv in kvs:
                self._apply_put(kv)
            self.revision = max(self.revision, revision)
            self._changed_at = time.monotonic()
            self._changed.notify_all()

    def _on_events(self, events: list[Event], revision: int) -> None:
        with self._lock:
            for ev in events:
                if ev.kind == "put":
                    self._apply_put(ev.kv)
                else:
                    self._apply_delete(ev.kv.key, ev.kv.mod_revision)
            self.revision = max(self.revision, revision)
            self._changed_at = time.monotonic()
            self._changed.notify_all()

    def seconds_since_event(self) -> float:
        """Since the watch (or a list) last changed the cache: with the cluster busy, a figure
        that grows says the watch has stalled."""
        return time.monotonic() - self._changed_at

    def wait_for_revision(self, revision: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.revision < revision:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def apply_kvs(self, kvs: list[KV], revision: int) -> None:
        """Records we wrote or read ourselves: the watch will bring them again, later."""
        with self._lock:
            for kv in kvs:
                self._apply_put(kv)
            self.revision = max(self.revision, revision)

    @contextmanager
    def sending(self, records: dict[str, tuple[bytes, Allocation | PlacementGroup]]) -> Iterator[None]:
        """Around our own commit of these records: the watch often brings them back before the
        commit's answer does, and then takes the object whose bytes it sees instead of
        decoding them (a busy node's allocation record holds every VM on it)."""
        with self._lock:
            self._sending.update(records)
        try:
            yield
        finally:
            with self._lock:
                for key in records:
                    self._sending.pop(key, None)

    def apply_committed(self, allocs: dict[str, Allocation], groups: dict[str, PlacementGroup],
                        revision: int, quotas: Mapping[str, Quota] | None = None) -> None:
        """Our own successful commit, as objects: no need to wait for the watch nor to decode."""
        with self._lock:
            for project, q in (quotas or {}).items():
                if self._fresh(keys.quota(project), revision):
                    self.quotas[project] = (q, revision)
            for node, a in allocs.items():
                if self._fresh(keys.alloc(node), revision):
                    self._put_alloc(a, revision)
            for name, g in groups.items():
                if self._fresh(keys.group(name), revision):
                    self.groups[name] = (g, revision)
            self.revision = max(self.revision, revision)

    def _put_alloc(self, a: Allocation, revision: int) -> None:
        self.allocs[a.node] = (a, revision)
        self._refresh_row(a.node)

    def apply_read(self, key: str, kvs: tuple[KV, ...], revision: int) -> None:
        """A point read at `revision`: absent means deleted by then."""
        with self._lock:
            if kvs:
                self._apply_put(kvs[0])
            else:
                self._apply_delete(key, revision)

    def _fresh(self, key: str, rev: int) -> bool:
        if self._seen.get(key, 0) >= rev:
            return False
        self._seen[key] = rev
        self._snapshot = self._borrowed = None
        return True

    def _apply_put(self, kv: KV) -> None:
        key = kv.key
        if not self._fresh(key, kv.mod_revision):
            return
        mine = self._sending.get(key)
        if mine is not None and mine[0] == kv.value:
            if isinstance(mine[1], Allocation):
                self._put_alloc(mine[1], kv.mod_revision)
            else:
                self.groups[mine[1].name] = (mine[1], kv.mod_revision)
            return
        data = orjson.loads(kv.value)
        if key == keys.CONFIG:
            # allocatable and the terms are derived again when the next snapshot is built
            self.config, self.config_revision = decode(SchedulerConfig, data), kv.mod_revision
            self._stale = True
        elif key.startswith(keys.POLICIES):
            p = decode(QosPolicy, data)
            self.policies[p.name] = (p, kv.mod_revision)
        elif key.startswith(keys.GROUPS):
            g = decode(PlacementGroup, data)
            self.groups[g.name] = (g, kv.mod_revision)
        elif key.startswith(keys.QUOTAS):
            q = decode(Quota, data)
            self.quotas[q.project] = (q, kv.mod_revision)
        elif key.startswith(keys.ALLOC):
            self._put_alloc(decode(Allocation, data), kv.mod_revision)
        elif key.startswith(keys.NODES):
            node, kind = keys.split(key, keys.NODES)
            if kind == "spec":
                self.specs[node] = decode(NodeSpec, data)
                self._relabel(node)
            elif kind == "status":
                self.statuses[node] = (decode(NodeStatus, data), kv.create_revision)
            elif kind == "cordon":
                self.cordons[node] = str(data.get("reason", ""))
            self._refresh_row(node)

    def _apply_delete(self, key: str, rev: int) -> None:
        if not self._fresh(key, rev):
            return
        if key == keys.CONFIG:
            self.config, self.config_revision = SchedulerConfig(), 0
            self._stale = True
        elif key.startswith(keys.POLICIES):
            self.policies.pop(key[len(keys.POLICIES):], None)
        elif key.startswith(keys.GROUPS):
            self.groups.pop(key[len(keys.GROUPS):], None)
        elif key.startswith(keys.QUOTAS):
            self.quotas.pop(key[len(keys.QUOTAS):], None)
        elif key.startswith(keys.ALLOC):
            node = key[len(keys.ALLOC):]
            self.allocs.pop(node, None)
            self._refresh_row(node)
        elif key.startswith(keys.NODES):
            node, kind = keys.split(key, keys.NODES)
            records: dict[str, dict[str, Any]] = {"spec": self.specs, "status": self.statuses, "cordon": self.cordons}
            records[kind].pop(node, None)
            self._relabel(node)
            self._refresh_row(node)

    # --- the arrays ---------------------------------------------------------------------
    def _slot(self, node: str) -> int:
        i = self._index.get(node)
        if i is not None:
            return i
        i = len(self._names)
        if i >= self._cap.shape[1]:
            grow = self._cap.shape[1] * 2
            self._cap, self._acap, self._g, self._c = (np.pad(a, ((0, 0), (0, grow - a.shape[1])))
                                                       for a in (self._cap, self._acap, self._g, self._c))
            self._present, self._ready, self._cordoned, self._sched = (
                np.pad(a, (0, grow - a.shape[0])) for a in (self._present, self._ready, self._cordoned, self._sched))
            self._terms = derive(self._cap, self._acap, self._g, self._c, self._sched)
        self._index[node] = i
        self._names.append(node)
        return i

    def _relabel(self, node: str) -> None:
        i = self._slot(node)
        for members in self._labels.values():
            members.discard(i)
        spec = self.specs.get(node)
        for pair in spec.labels if spec else ():
            self._labels.setdefault(pair, set()).add(i)
        self._label_index = None

    def _refresh_row(self, node: str) -> None:
        i = self._slot(node)
        spec = self.specs.get(node)
        cap = spec.capacity.as_tuple() if spec else _ZERO
        status = self.statuses.get(node)
        ready = status is not None and status[0].ready
        cordoned = node in self.cordons
        a = self.allocs.get(node)
        g, c = allocation_sums(a[0]) if a else (_ZERO, _ZERO)
        self._present[i], self._ready[i], self._cordoned[i] = spec is not None, ready, cordoned
        self._sched[i] = spec is not None and ready and not cordoned
        self._cap[:, i], self._g[:, i], self._c[:, i] = cap, g, c
        if not self._stale:
            self._derive_column(i, cap, g, c)

    def _derive_column(self, i: int, cap: tuple[float, ...], g: tuple[float, ...], c: tuple[float, ...]) -> None:
        """`_derive` of one column (every commit refreshes a few) in plain floats: the same IEEE
        operations in the same order as `allocatable` and `derive`, so the same bits, without
        twenty-odd numpy calls on (D, 1) arrays (a node's refresh went from 34 to 25 µs)."""
        acap = [float(math.floor(x * r)) for x, r in zip(cap, self.config.overcommit.as_tuple())]
        inv = [1.0 / x if x > 0 else 0.0 for x in acap]
        util = [y * v for y, v in zip(c, inv)]
        t = self._terms
        self._acap[:, i], t.inv[:, i], t.inv_sq[:, i], t.util[:, i] = acap, inv, [v * v for v in inv], util
        t.grad[:, i], t.free_sq[i] = free_terms(util, inv)
        t.free_physical[:, i] = [x - y for x, y in zip(cap, g)]
        t.free_over[:, i] = [x - y for x, y in zip(acap, c)]

    def _derive(self, cols: slice) -> None:
        """Allocatable capacity and score terms of these columns, from the records' arrays."""
        self._acap[:, cols] = allocatable(self._cap[:, cols], self.config.overcommit)
        got = derive(self._cap[:, cols], self._acap[:, cols], self._g[:, cols], self._c[:, cols], self._sched[cols])
        t = self._terms
        for name in ("inv", "inv_sq", "util", "grad", "free_physical", "free_over"):
            getattr(t, name)[:, cols] = getattr(got, name)
        t.free_sq[cols] = got.free_sq

    # --- reads --------------------------------------------------------------------------
    def snapshot(self) -> ClusterSnapshot:
        """An immutable copy: anyone may keep it as long as they like."""
        with self._lock:
            if self._snapshot is None:
                self._snapshot = self._build(copy=True)
            return self._snapshot

    @contextmanager
    def borrow(self) -> Iterator[ClusterSnapshot]:
        """A snapshot over the live arrays, without copying them: valid, and unchanging, only
        inside the `with` (which holds the cache's lock, so watches wait)."""
        with self._lock:
            if self._borrowed is None:
                self._borrowed = self._snapshot or self._build(copy=False)
            yield self._borrowed

    def _build(self, copy: bool) -> ClusterSnapshot:
        n = len(self._names)
        if self._stale:
            self._derive(slice(0, n))
            self._stale = False
        if len(self._names_index[0]) != n:  # slots are only ever added
            self._names_index = (tuple(self._names), dict(self._index))
        t = self._terms
        arrays = [a[..., :n] for a in (self._cap, self._acap, self._g, self._c, self._present, self._ready,
                                       self._cordoned, t.inv, t.inv_sq, t.util, t.grad, t.free_sq,
                                       t.free_physical, t.free_over, self._sched)]
        if copy:
            arrays = [a.copy() for a in arrays]
        for a in arrays:
            a.flags.writeable = False
        names, index = self._names_index
        return ClusterSnapshot(
            self.revision, names, *arrays[:7],  # type: ignore[misc, arg-type]  # the arrays, in field order
            label_index=self._frozen_labels(),
            policies={k: p for k, (p, _) in self.policies.items()},
            groups={k: g for k, (g, _) in self.groups.items()} if copy else _Groups(self.groups),
            config=self.config, index=index, terms=ScoreTerms(*arrays[7:]))  # type: ignore[arg-type]

    def _frozen_labels(self) -> dict[tuple[str, str], frozenset[int]]:
        if self._label_index is None:
            self._label_index = {k: frozenset(v) for k, v in self._labels.items() if v}
        return self._label_index

    def policy(self, name: str) -> tuple[QosPolicy | None, int]:
        """The policy by `ClusterSnapshot.policy`'s rule, and its record's mod revision (0: none)."""
        stored = self.policies.get(name)
        return (stored[0], stored[1]) if stored else (policy_named(name, None), 0)

    def node(self, name: str) -> NodeView | None:
        with self._lock:
            spec = self.specs.get(name)
            if spec is None:
                return None
            status = self.statuses.get(name)
            alloc, arev = self.allocs.get(name, (Allocation(name), 0))
            return NodeView(spec, status[0] if status else None, name in self.cordons, alloc, arev,
                            status[1] if status else 0)

    def protected_loads(self, snap: ClusterSnapshot) -> np.ndarray:
        """(D, N) aligned with `snap`: each node's reservations that HA admission control keeps
        room to restart. Only asked while admission control is on."""
        out = np.zeros_like(snap.committed)
        with self._lock:
            allocs = list(self.allocs.items())
        for node, (a, _) in allocs:
            i = snap.index.get(node)
            if i is None:
                continue
            got = _PROTECTED.get(id(a.entries))
            if got is None or got[0] is not a.entries:
                vec = np.zeros(out.shape[0])
                for e in a.entries:
                    if e.ha_admission and not e.is_storage and e.qos_class is not QosClass.BEST_EFFORT:
                        vec += e.reserved.as_tuple()
                if len(_PROTECTED) >= _SUMS_MAX:
                    _PROTECTED.clear()
                got = _PROTECTED[id(a.entries)] = (a.entries, vec)
            out[:, i] = got[1]
        return out

    def lost_nodes(self) -> list[str]:
        """Nodes whose lease is gone (no status) while VMs are placed on them: the HA controller's items."""
        with self._lock:
            return sorted(n for n, (a, _) in self.allocs.items()
                          if n not in self.statuses and any(not e.is_storage for e in a.entries))

    def node_names(self) -> list[str]:
        with self._lock:
            return sorted(self.specs)

    def vms_by_class(self) -> dict[str, int]:
        with self._lock:
            counts = {c.value: 0 for c in QosClass}
            for a, _ in self.allocs.values():
                for e in a.entries:
                    if not e.is_storage:
                        counts[e.qos_class.value] += 1
            return counts

    def policy_users(self, policy: str) -> list[str]:
        with self._lock:
            return sorted(e.vm for a, _ in self.allocs.values() for e in a.entries if e.policy == policy)
