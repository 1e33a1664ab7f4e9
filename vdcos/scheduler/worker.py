"""The scheduler's write path: batches placement requests, decides them with the pure core and
commits each batch as ONE etcd transaction that compares the allocation revision (Placement's
resource-provider generation) of every touched node, its group records and its policies.

On a conflict the failure branch of the same transaction returns the current records and the
cache takes them. Each decision is then validated again against those records (Nomad's plan
applier): the ones that still fit are committed again as they are, only the others are
decided again. Bounded, so several scheduler replicas on one etcd never over-allocate a node
nor break a hard anti-affinity rule, and one replica's commits do not make the other's whole
batch start over.
"""
from __future__ import annotations

import functools
import itertools
import json
import logging
import random
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from vdcos.errors import (Aborted, AlreadyExists, FailedPrecondition, NotFound, QuotaExceeded, Unavailable,
                          Unschedulable)
from vdcos import logs
from vdcos.events import Emit, nothing
from vdcos.metrics.api import ApiMetrics, refusal_reason
from vdcos.migration import records
from vdcos.model import (DIMENSIONS, Allocation, AllocEntry, Migration, MigrationOptions, MigrationPhase,
                         PlacementRecord, QosClass, QosPolicy, Quota, Resources, SchedulerConfig, VmSpec,
                         assignment_bytes, decode, dumps, qos)
from vdcos.model.project import vm_usage
from vdcos.model.fit import fit_columns, fits
from vdcos.scheduler.cache import ClusterCache, allocation_sums, with_entry
from vdcos.scheduler.core import (SOLO, ClusterSnapshot, Decision, Explanation, Lane, PlacementRequest, Rejection,
                                  explain, schedule, schedule_batch)
from vdcos.scheduler.core.ha import failover_headroom
from vdcos.scheduler.placer import Placed
from vdcos.scheduler.txn import PlacementTxn, commit
from vdcos.scheduler.unshelve import unshelve
from vdcos.state import keys
from vdcos.state.store import Compare, Delete, Get, Op, Put, Store, StoreError
from vdcos.storagepool import volumes

log = logging.getLogger(__name__)
# VMs per batch at most. It binds when requests queue up (open-loop clients, a burst): a bigger
# commit clears the queue at a lower cost per VM. Against 32, clients offering 2,000 VMs/s
# waited p50 15-18 ms (against 18-34) and p99 32-77 ms (against 47-170) in 4 alternating pairs.
MAX_BATCH = 64
LINGER_MS = 3.0  # how long a batch may wait for the callers it expects (see _next_batch)
_CALLERS = itertools.count(1)


@dataclass
class _Pending:
    request: PlacementRequest
    caller: int  # the requests of one call share it
    future: Future[Placed] = field(default_factory=Future)
    attempts: int = 0  # commits it was part of that failed, or decisions that no longer fit
    arrived: float = field(default_factory=time.perf_counter)
    # The submitting call's request id (vdcos/logs.py): the worker's thread logs under it.
    trace: str = field(default_factory=logs.REQUEST_ID.get)


_Column = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], bool]


@dataclass(frozen=True, slots=True)
class _Decided:
    pending: _Pending
    decision: Decision
    policy: QosPolicy  # the one the decision resolved: a commit must guard this very policy


def _same_answer(to: Future[Placed], answered: Future[Placed]) -> None:
    e = answered.exception()
    if e is None:
        to.set_result(answered.result())
    else:
        to.set_exception(e)


@dataclass
class _Txn(PlacementTxn):
    placed: list[tuple[_Decided, PlacementRecord]] = field(default_factory=list)


class Scheduler:
    def __init__(self, store: Store, cache: ClusterCache, *, max_batch: int = MAX_BATCH,
                 max_attempts: int = 12, linger: float = LINGER_MS / 1000,
                 lane: Callable[[], Lane] = lambda: SOLO, metrics: ApiMetrics | None = None,
                 emit: Emit = nothing) -> None:
        self.store = store
        self.metrics = metrics
        self.emit = emit
        self.lane = lane  # read once per batch: membership may change between batches
        self.cache = cache
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self.linger = linger
        self._waiting: deque[_Pending] = deque()
        self._arrived = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="placement-worker", daemon=True)
        self._idle_since: float | None = time.monotonic()
        self.stats = {"batches": 0, "conflicts": 0, "placed": 0}

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Places what is waiting, then stops."""
        with self._arrived:
            self._stopping = True
            self._arrived.notify()
        self._thread.join(10)
        log.info("placement worker stopped: %(placed)d VMs placed in %(batches)d batches, %(conflicts)d conflicts",
                 self.stats)

    # --- public calls -------------------------------------------------------------------
    def submit(self, spec: VmSpec, request_id: str = "", pinned: str = "", pinned_because: str = "") -> Future[Placed]:
        p = _Pending(PlacementRequest(spec, request_id, pinned=pinned, pinned_because=pinned_because), next(_CALLERS))
        self._enqueue([p])
        return p.future

    def submit_all(self, items: Sequence[tuple[VmSpec, str]]) -> list[Future[Placed]]:
        """The requests of one call, queued together (a batch never waits for half of them)."""
        caller = next(_CALLERS)
        pending = [_Pending(PlacementRequest(spec, request_id), caller) for spec, request_id in items]
        self._enqueue(pending)
        return [p.future for p in pending]

    def idle_for(self) -> float:
        """Seconds since the worker last had something to place (0 while it has)."""
        since = self._idle_since
        return 0.0 if since is None else time.monotonic() - since

    def _enqueue(self, pending: list[_Pending]) -> None:
        with self._arrived:
            self._idle_since = None  # at once, not when the worker wakes: fewer sweeps start as a request arrives
            self._waiting.extend(pending)
            self._arrived.notify()

    def create(self, spec: VmSpec, request_id: str = "", timeout: float = 30.0) -> Placed:
        return self.submit(spec, request_id).result(timeout)

    def explain(self, spec: VmSpec, request_id: str = "", limit: int = 10) -> Explanation:
        return explain(self.cache.snapshot(), PlacementRequest(spec, request_id), limit, self.lane())

    # --- the batch loop -----------------------------------------------------------------
    def _loop(self) -> None:
        expected = 1
        while True:
            batch = self._next_batch(expected)
            if not batch:
                return
            try:
                self._place(batch)
            except StoreError as e:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(Unavailable(str(e)))
            except Exception as e:  # never leave a client hanging on a bug
                log.exception("placement batch failed")
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(e)
            with self._arrived:
                # The callers this batch answered come back (clients that wait for their answer
                # before they call again), and those waiting now are already here.
                expected = len({p.caller for p in batch} | {p.caller for p in self._waiting})

    def _next_batch(self, expected: int) -> list[_Pending]:
        """Up to max_batch requests, waiting up to `linger` for the callers the last batch
        expects to arrive (group commit, as PostgreSQL's commit_delay waits only while
        commit_siblings others are active): two clients that would otherwise alternate,
        each call waiting for the other's commit, share one. The per-commit costs (etcd's
        above all) then count once for both, which places ~20% more per second at the
        benchmark's load. A lone client expects no one and never waits."""
        with self._arrived:
            while not self._waiting and not self._stopping:
                if self._idle_since is None:
                    self._idle_since = time.monotonic()
                self._arrived.wait()
            deadline = time.monotonic() + self.linger
            batch: list[_Pending] = []
            callers: set[int] = set()
            while True:
                while self._waiting and len(batch) < self.max_batch:
                    p = self._waiting.popleft()
                    batch.append(p)
                    callers.add(p.caller)
                left = deadline - time.monotonic()
                if len(batch) >= self.max_batch or len(callers) >= expected or self._stopping or left <= 0:
                    return batch
                self._arrived.wait(left)

    def _place(self, batch: list[_Pending]) -> None:
        # From here on no caller can cancel its request (concurrent.futures' protocol): one
        # whose client went away is dropped now, unplaced, and an answer is never set twice.
        batch = [p for p in batch if p.future.set_running_or_notify_cancel()]
        if not self.cache.synced:
            # Its view may be behind etcd: a decision from it could fail every commit, or
            # (for what commits do not compare) be wrong. Clients retry on another replica.
            for p in batch:
                p.future.set_exception(Unavailable("this replica's cluster cache is re-listing after a lost "
                                                   "watch; retry (another replica may serve)"))
            return
        seen: dict[str, _Pending] = {}
        pending: list[_Pending] = []
        for p in batch:
            first = seen.get(p.request.spec.name)
            if first is None:
                seen[p.request.spec.name] = p
                pending.append(p)
            elif p.request.request_id and p.request.request_id == first.request.request_id:
                first.future.add_done_callback(functools.partial(_same_answer, p.future))  # a retry
            else:
                p.future.set_exception(AlreadyExists(f"vm {p.request.spec.name!r} is being created"))
        decided: list[_Decided] = []  # decisions a conflict left uncommitted, to validate again
        # Decisions per transaction. The first conflicts are mostly one stale node, which
        # validating again fixes; from a VM's third on, each conflict halves it, so that under a
        # replica that keeps writing the same nodes smaller commits get through (more of them
        # cost etcd more, so not sooner).
        size = len(pending)
        while pending or decided:
            self.stats["batches"] += 1
            if pending:
                with self.cache.borrow() as snap:
                    results = schedule_batch(snap, [p.request for p in pending], self.lane())
                    policies = [snap.policy(p.request.spec.policy_name) for p in pending]
                    if snap.config.ha_host_failures_to_tolerate:
                        results = self._ha_admission(snap, pending, results)
                for p, r, pol in zip(pending, results, policies):
                    if isinstance(r, Rejection):
                        if self.metrics is not None:
                            self.metrics.refusals.labels(refusal_reason(r)).inc()
                        spec = p.request.spec
                        self.emit("vm.refused", spec.name, project=spec.project, message=r.summary,
                                  retryable=r.retryable, reason=refusal_reason(r))
                        p.future.set_exception(Unschedulable(r))
                    else:
                        assert pol is not None  # a decision was made with it
                        decided.append(_Decided(p, r, pol))
            txn, retry, refused = self._build(decided[:size])
            for dd, err in refused:
                if self.metrics is not None:
                    self.metrics.refusals.labels("quota" if isinstance(err, QuotaExceeded) else "commit_check").inc()
                spec = dd.pending.request.spec
                if isinstance(err, QuotaExceeded):
                    self.emit("quota.refused", spec.project, project=spec.project, message=str(err), vm=spec.name)
                else:
                    self.emit("vm.refused", spec.name, project=spec.project, message=str(err))
                dd.pending.future.set_exception(err)
            failed = self._commit(txn) if txn.placed else []
            rest = decided[size:]
            if not retry and not failed:
                pending, decided = [], rest
                continue
            self.stats["conflicts"] += 1
            if self.metrics is not None:
                self.metrics.retries.inc(len(retry) + len(failed))
            worst = 0
            for p in [*retry, *(dd.pending for dd in failed)]:
                p.attempts += 1
                worst = max(worst, p.attempts)
            pending = [p for p in retry if self._may_retry(p)]
            decided = [dd for dd in failed if self._may_retry(dd.pending)] + rest
            if worst >= 3:
                size = max(1, size // 2)
            # Exponential backoff with full jitter: replicas that keep choosing the same hot
            # node (or group record) drift apart in time, and each retry sees the last winner.
            time.sleep(random.uniform(0, min(0.1, 0.002 * 2 ** worst)))

    def _ha_admission(self, snap: ClusterSnapshot, pending: list[_Pending],
                      results: list[Decision | Rejection]) -> list[Decision | Rejection]:
        """Refuse what would leave too little room to restart every protected VM after the
        configured number of host failures (scheduler/core/ha.py), decision by decision."""
        n = snap.config.ha_host_failures_to_tolerate
        headroom = failover_headroom(snap, self.cache.protected_loads(snap), n)
        out: list[Decision | Rejection] = []
        for p, r in zip(pending, results):
            if isinstance(r, Decision):
                need = np.asarray(qos.placed_request(p.request.spec, r.reserved).as_tuple(), dtype=np.float64)
                if r.qos.qos_class is QosClass.BEST_EFFORT:
                    need[:] = 0.0
                short = [(d, need[i], headroom[i]) for i, d in enumerate(DIMENSIONS) if need[i] > headroom[i]]
                if short:
                    why = ", ".join(f"{d}: needs {x:g}, failover headroom {max(h, 0):g}" for d, x, h in short)
                    r = Rejection(p.request.spec.name, snap.size, 0, (), (), True,
                                  f"HA admission control: placing it would leave too little room to restart every "
                                  f"HA-protected VM after {n} host failure{'s' if n > 1 else ''} ({why})")
                else:
                    headroom = headroom - need
            out.append(r)
        return out

    def _may_retry(self, p: _Pending) -> bool:
        """Each VM has its own attempts: a busy batch does not use up those of the others."""
        if p.attempts < self.max_attempts:
            return True
        p.future.set_exception(Aborted(
            f"vm {p.request.spec.name!r}: cluster changed under {self.max_attempts} attempts; retry"))
        return False

    def _build(self, decided: list[_Decided]) -> tuple[_Txn, list[_Pending], list[tuple[_Decided, Exception]]]:
        """Commit validation: every decision is checked again, with the same fit function,
        against the exact records the transaction will compare on. What no longer fits, or was
        decided under a QoS policy that has changed since, is decided again; what its project's
        quota cannot take is refused (the quota record is compared like the nodes').

        The fit of the whole batch is one vector check, each decision against its node as the
        batch's earlier decisions leave it; only when one of them fails is the batch assembled
        again, one `fits` at a time (a failed one must not count against the next)."""
        config = self.cache.config
        txn, retry, refused, columns = self._assemble(decided, config, one_at_a_time=False)
        if columns:
            cap, g, c, demand = (np.array([col[k] for col in columns], dtype=np.float64).T for k in range(4))
            guaranteed = np.array([col[4] for col in columns])
            if not fit_columns(cap, config.overcommit, g, c, demand, guaranteed).ok.all():
                txn, retry, refused, _ = self._assemble(decided, config, one_at_a_time=True)
        return txn, retry, refused

    def _assemble(self, decided: list[_Decided], config: SchedulerConfig, one_at_a_time: bool
                  ) -> tuple[_Txn, list[_Pending], list[tuple[_Decided, Exception]], list[_Column]]:
        """The transaction of `decided`, each fit checked with `fits` one at a time, or, if not,
        each decision's fit question returned (capacity, guaranteed, committed, demand, guaranteed?)."""
        txn = _Txn()
        allocs = txn.allocs
        retry: list[_Pending] = []
        refused: list[tuple[_Decided, Exception]] = []
        columns: list[_Column] = []
        for dd in decided:
            p, d = dd.pending, dd.decision
            spec = p.request.spec
            view = self.cache.node(d.node)
            policy, policy_revision = self.cache.policy(spec.policy_name)
            if (view is None or view.status is None or not view.status.ready or view.cordoned
                    or policy != dd.policy):
                retry.append(p)
                continue
            alloc = allocs.get(d.node, view.allocation)
            demand = qos.placed_request(spec, d.reserved)
            if not one_at_a_time:
                columns.append((view.spec.capacity.as_tuple(), *allocation_sums(alloc), demand.as_tuple(),
                                d.qos.qos_class is QosClass.GUARANTEED))
            elif fits(view.spec.capacity, config.overcommit, alloc, demand, d.qos.qos_class):
                retry.append(p)
                continue
            if spec.project:
                charge = self._charge(txn, spec)
                if isinstance(charge, Exception):
                    refused.append((dd, charge))
                    if not one_at_a_time:
                        columns.pop()
                    continue
            if spec.placement_group and not txn.join_group(self.cache, spec, d.node):
                retry.append(p)
                continue
            entry = AllocEntry(spec.name, d.qos.qos_class, d.reserved, spec.policy_name, ha_admission=spec.ha.admission)
            allocs[d.node] = with_entry(alloc, entry)
            txn.guard_destination(view, spec.policy_name, policy_revision)
            txn.guard(keys.vm_spec(spec.name), "create", 0)
            record = PlacementRecord(d.node, d.qos, d.reserved, d.score, time.time(), p.attempts + 1,
                                     p.request.request_id)
            spec_bytes = dumps(spec)
            txn.puts += [Put(keys.vm_spec(spec.name), spec_bytes),
                         Put(keys.vm_placement(spec.name), dumps(record)),
                         Put(keys.assign(d.node, spec.name),
                             assignment_bytes(spec_bytes, d.qos, d.reserved, request_id=p.trace))]
            txn.placed.append((dd, record))
        txn.seal()
        return txn, retry, refused, columns

    def _charge(self, txn: _Txn, spec: VmSpec) -> Quota | Exception:
        """The VM charged to its project's quota in `txn` (after the batch's VMs before it), or
        why it may not be."""
        cached = self.cache.quotas.get(spec.project)
        if cached is None and (kv := self.store.get(keys.quota(spec.project))) is not None:
            self.cache.apply_kvs([kv], kv.mod_revision)  # a project made a moment ago: the watch brings it later
            cached = self.cache.quotas.get(spec.project)
        if cached is None:
            return NotFound(f"project {spec.project!r} not found")
        q = txn.quotas.get(spec.project, cached[0])
        more = vm_usage(spec.resources.vcpus, spec.resources.memory_mib, spec.resources.disk_gib)
        bad = q.violations(more)
        if bad:
            return QuotaExceeded(f"vm {spec.name!r}: " + "; ".join(map(str, bad)), details=bad)
        txn.quotas[spec.project] = q.charged(more)
        txn.guard(keys.quota(spec.project), "mod", cached[1])
        return txn.quotas[spec.project]

    @staticmethod
    def _log_placed(txn: _Txn) -> None:
        """One line per commit, not per VM (a busy replica commits ~125 a second), under the
        request id of its call when it holds one VM; each VM's id is in the line otherwise."""
        if len(txn.placed) == 1:
            dd, rec = txn.placed[0]
            with logs.request(dd.pending.trace):
                log.info("placed %s on %s (%s)", dd.pending.request.spec.name, rec.node, rec.qos.qos_class.value)
            return
        log.info("placed %d VMs: %s", len(txn.placed), ", ".join(
            f"{dd.pending.request.spec.name} on {rec.node} [{dd.pending.trace}]" for dd, rec in txn.placed))

    def _commit(self, txn: _Txn) -> list[_Decided]:
        """Commits the transaction; on a conflict, updates the cache from its failure branch and
        returns the decisions to validate again (those of VMs that turned out to exist fail)."""
        res = commit(self.store, self.cache, txn)
        m = self.metrics
        if m is not None:
            m.commits.labels("committed" if res.succeeded else "conflict").inc()
            m.batch_size.observe(len(txn.placed))
        if res.succeeded:
            now = time.perf_counter()
            for dd, rec in txn.placed:
                spec = dd.pending.request.spec
                dd.pending.future.set_result(Placed(spec, rec, res.revision))
                if m is not None:
                    m.placement_seconds.observe(now - dd.pending.arrived)
                self.emit("vm.created", spec.name, node=rec.node, project=spec.project,
                          message=f"{spec.resources.vcpus} vCPU, {spec.resources.memory_mib} MiB")
                self.emit("vm.placed", spec.name, node=rec.node, project=spec.project,
                          message=f"placed on {rec.node} ({rec.qos.qos_class.value})", score=f"{rec.score:.3f}")
            self.stats["placed"] += len(txn.placed)
            self._log_placed(txn)
            return []
        retry: list[_Decided] = []
        existing: set[str] = set()
        for key, kvs in zip(txn.reads, res.gets):
            if key.startswith(keys.VMS) and kvs:
                existing.add(keys.split(key, keys.VMS)[0])
        for dd, _ in txn.placed:
            name = dd.pending.request.spec.name
            if name not in existing:
                retry.append(dd)
            elif (mine := self.placed_by(name, dd.pending.request.request_id)) is not None:
                dd.pending.future.set_result(mine)  # a retry of the create that placed it
            else:
                dd.pending.future.set_exception(AlreadyExists(f"vm {name!r} already exists"))
        return retry

    def placed_by(self, name: str, request_id: str) -> Placed | None:
        """The VM of this name, if the create with this request id placed it."""
        if not request_id:
            return None
        kvs, _ = self.store.get_prefix(f"{keys.VMS}{name}/")
        by_key = {kv.key: kv for kv in kvs}
        spec_kv, place_kv = by_key.get(keys.vm_spec(name)), by_key.get(keys.vm_placement(name))
        if spec_kv is None or place_kv is None:
            return None
        record = decode(PlacementRecord, json.loads(place_kv.value))
        if record.request_id != request_id:
            return None
        return Placed(decode(VmSpec, json.loads(spec_kv.value)), record, place_kv.mod_revision)

    # --- deletion -----------------------------------------------------------------------
    def delete(self, name: str, project: str | None = None) -> None:
        for attempt in range(1, self.max_attempts + 1):
            kvs, rev = self.store.get_prefix(f"{keys.VMS}{name}/")
            by_key = {kv.key: kv for kv in kvs}
            spec_kv, place_kv = by_key.get(keys.vm_spec(name)), by_key.get(keys.vm_placement(name))
            if spec_kv is None:
                raise NotFound(f"vm {name!r} not found")
            if keys.vm_migration(name) in by_key:
                raise FailedPrecondition(f"vm {name!r} is live-migrating "
                                         f"({by_key[keys.vm_migration(name)].value.decode()}); cancel it first")
            spec = decode(VmSpec, json.loads(spec_kv.value))
            if project is not None and spec.project != project:  # compared below: it cannot change meanwhile
                raise NotFound(f"vm {name!r} not found")
            compares = [Compare(keys.vm_spec(name), "mod", "==", spec_kv.mod_revision),
                        Compare(keys.vm_migration(name), "create", "==", 0)]
            ops: list[Op] = [Delete(f"{keys.VMS}{name}/", prefix=True)]
            reads: list[str] = []
            if place_kv is not None:
                node = decode(PlacementRecord, json.loads(place_kv.value)).node
                self.cache.wait_for_revision(place_kv.mod_revision, timeout=2.0)
                view_alloc = self.cache.allocs.get(node, (Allocation(node), 0))
                compares.append(Compare(keys.alloc(node), "mod", "==", view_alloc[1]))
                reads.append(keys.alloc(node))
                ops += [Put(keys.alloc(node), dumps(view_alloc[0].without(name))),
                        Delete(keys.assign(node, name)), Delete(keys.vm_status(node, name))]
            if spec.placement_group:
                g = self.cache.groups.get(spec.placement_group)
                if g is not None:
                    compares.append(Compare(keys.group(g[0].name), "mod", "==", g[1]))
                    reads.append(keys.group(g[0].name))
                    rest = g[0].without(name)
                    ops.append(Put(keys.group(rest.name), dumps(rest)) if rest.members
                               else Delete(keys.group(rest.name)))
            quota = self.cache.quotas.get(spec.project) if spec.project else None
            if spec.project and quota is None and (kv := self.store.get(keys.quota(spec.project))) is not None:
                quota = (decode(Quota, json.loads(kv.value)), kv.mod_revision)  # the cache has not seen it yet
            if quota is not None:  # the VM's use given back to its project in the same transaction
                compares.append(Compare(keys.quota(spec.project), "mod", "==", quota[1]))
                reads.append(keys.quota(spec.project))
                used = vm_usage(spec.resources.vcpus, spec.resources.memory_mib, spec.resources.disk_gib)
                ops.append(Put(keys.quota(spec.project), dumps(quota[0].charged(-used))))
            res = self.store.txn(compares, ops, [Get(k) for k in reads])
            if res.succeeded:
                return
            for key, got in zip(reads, res.gets):
                self.cache.apply_read(key, got, res.revision)
            time.sleep(random.uniform(0, 0.002 * attempt))
        raise Aborted(f"vm {name!r}: deletion kept conflicting; retry")

    # --- live migration -----------------------------------------------------------------
    def migrate(self, vm: str, target: str, options: MigrationOptions) -> Migration:
        """Reserve a destination (the operator's, or the best one the core finds) and record
        the migration; the source's agent carries it out. An operator's target passes the same
        filters as any destination (its node selector, affinity, QoS fit): only the choice is theirs."""
        if not self.cache.synced:
            raise Unavailable("this replica's cluster cache is re-listing after a lost watch; retry")
        spec_kv, place_kv = self.store.get(keys.vm_spec(vm)), self.store.get(keys.vm_placement(vm))
        if spec_kv is None or place_kv is None:
            raise NotFound(f"vm {vm!r} not found or not placed yet")
        spec = decode(VmSpec, json.loads(spec_kv.value))
        source = decode(PlacementRecord, json.loads(place_kv.value)).node
        if target == source:
            raise FailedPrecondition(f"vm {vm!r} already runs on {target}")
        # Copy-storage: the destination also needs room for the VM's local volumes.
        copies = sum(v.size_gib for v in volumes.list_volumes(self.store, vm=vm) if v.ties_to_host)
        if copies:
            spec = replace(spec, resources=spec.resources + Resources(disk_gib=copies))
        self.cache.wait_for_revision(place_kv.mod_revision, timeout=2.0)
        got = schedule(self.cache.snapshot(), PlacementRequest(
            spec, f"migrate:{vm}:{time.time()}", (source,), pinned=target,
            pinned_because=f"the migration's target_node is {target}" if target else ""), self.lane())
        if isinstance(got, Rejection):
            raise Unschedulable(got)
        return records.start(self.store, vm, got.node, options)

    def unshelve(self, name: str, project: str | None = None) -> PlacementRecord:
        """Place a shelved VM again and start it (scheduler/unshelve.py)."""
        if not self.cache.synced:
            raise Unavailable("this replica's cluster cache is re-listing after a lost watch; retry")
        return unshelve(self.store, self.cache, name, project, self.lane())

    def cancel_migration(self, mid: str) -> Migration:
        m = records.update(self.store, mid, lambda m: None if m.phase.done or m.cancel_requested
                           else replace(m, cancel_requested=True))
        if m is None:
            raise NotFound(f"migration {mid!r} not found")
        if m.phase is MigrationPhase.PENDING:
            # Not started: roll it back here, so a dead source agent cannot keep it pending.
            return records.finish(self.store, mid, MigrationPhase.CANCELLED, "cancelled before it started",
                                  only_from=(MigrationPhase.PENDING,))
        return m

    def check_policy_unused(self, name: str) -> None:
        users = self.cache.policy_users(name)
        if users:
            more = f" and {len(users) - 5} more" if len(users) > 5 else ""
            raise FailedPrecondition(f"QoS policy {name!r} is used by {', '.join(users[:5])}{more}",
                                     details=users)
