"""Rebalancing at the edge: reads the cluster for the pure planner (vdcos/planner/cluster.py),
records each plan it runs in etcd, and carries it out through the live-migration API one move
at a time. The migration start re-checks every fit against the records it commits, so a plan
made on a snapshot never over-commits a host that changed since.

Automatic mode (DRS "fully automated"): one scheduler replica, holding a lease-bound lock,
plans a balancing round every `rebalance_interval_s` and runs it when the load's std. dev. is
over the threshold.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import replace
from typing import Any, Callable, Sequence

from vdcos.errors import FailedPrecondition, NotFound, ResourceExhausted, VdcosError
from vdcos.migration import records
from vdcos.model import (AffinityPolicy, MigrationOptions, MigrationPhase, QosClass, Rebalance, RebalanceGoal,
                         RebalanceMode, RebalanceState, RebalanceStep, Resources, VmPhase, VmSpec, VmStatus, decode,
                         dumps)
from vdcos.planner.cluster import Move, RebalancePlan, Unit, balance, consolidate
from vdcos.scheduler.cache import ClusterCache
from vdcos.scheduler.core import Decision, PlacementRequest, Rejection, schedule_batch
from vdcos.scheduler.core.snapshot import ClusterSnapshot
from vdcos.scheduler.placer import Placer
from vdcos.state import keys
from vdcos.state.store import KV, Get, Store, StoreError
from vdcos.storagepool import volumes

log = logging.getLogger(__name__)

STEP_TIMEOUT_S = 900.0   # one live migration, copy-storage included
BUSY_WAIT_S = 120.0      # waiting for a free migration slot before a step gives up
LOCK_TTL = 15


def new_id() -> str:
    return "rb-" + uuid.uuid4().hex[:12]


class Cluster:
    """What the planner needs, read once: the snapshot, and every VM as a movable unit."""

    def __init__(self, store: Store, cache: ClusterCache, node: str = "") -> None:
        """Every VM, or (`node`) only the ones on that node: a drain reads a handful of records,
        not the whole cluster's."""
        self.snap: ClusterSnapshot = cache.snapshot()
        nodes = [node] if node else list(self.snap.names)
        views = [v for n in nodes if (v := cache.node(n)) is not None]
        kvs: Sequence[KV]
        status_kvs: Sequence[KV]
        if node:
            kvs = [kv for v in views for e in v.allocation.entries if not e.is_storage
                   for key in (keys.vm_spec(e.vm), keys.vm_migration(e.vm))
                   if (kv := store.get(key)) is not None]
            status_kvs, _ = store.get_prefix(keys.vm_status_prefix(node))
        else:
            kvs, status_kvs = store.txn([], [Get(keys.VMS, prefix=True), Get(keys.VM_STATUSES, prefix=True)]).gets
        specs: dict[str, VmSpec] = {}
        moving: set[str] = set()
        for kv in kvs:
            vm, kind = keys.split(kv.key, keys.VMS)
            if kind == "spec":
                specs[vm] = decode(VmSpec, json.loads(kv.value))
            elif kind == "migration":
                moving.add(vm)
        # (node, VM) -> what that node's agent says of it
        statuses = {(at, vm): decode(VmStatus, json.loads(kv.value))
                    for kv in status_kvs for at, vm in [keys.split(kv.key, keys.VM_STATUSES)]}
        local_gib: dict[str, int] = {}
        for vol in volumes.list_volumes(store, host=node):
            if vol.vm and vol.ties_to_host:
                local_gib[vol.vm] = local_gib.get(vol.vm, 0) + vol.size_gib
        self.specs = specs
        groups = {vm: (g.name, g.policy) for g in self.snap.groups.values() for vm, _ in g.members}
        units: list[Unit] = []
        for view in views:
            name = view.spec.name
            for e in view.allocation.entries:
                if e.is_storage:
                    continue
                spec = specs.get(e.vm)
                status = statuses.get((name, e.vm))
                pinned = ""
                if e.held_by or e.vm in moving:
                    pinned = "migrating now"
                elif spec is None or status is None or status.phase is not VmPhase.RUNNING or status.node != name:
                    pinned = "not running (only a running VM live-migrates)"
                group, policy = groups.get(e.vm, ("", AffinityPolicy.NONE))
                units.append(Unit(e.vm, name, e.qos_class, e.reserved, spec.resources if spec else e.reserved,
                                  local_gib.get(e.vm, 0), group, policy, pinned,
                                  spec.node_selector if spec else ()))
        self.units = units

    def on(self, node: str) -> list[Unit]:
        return [u for u in self.units if u.node == node]


def _restart_order(units: list[Unit]) -> list[Unit]:
    """The order an HA restart would use: guaranteed, burstable, best-effort; big first."""
    rank = {QosClass.GUARANTEED: 0, QosClass.BURSTABLE: 1, QosClass.BEST_EFFORT: 2}
    return sorted(units, key=lambda u: (rank[u.qos_class], -sum(u.request.as_tuple()), u.vm))


def _replace(cluster: Cluster, units: list[Unit], node: str) -> list[Decision | Rejection]:
    """Where the scheduler's own core would put each of these VMs, off `node`, each seeing
    the ones before it."""
    reqs = []
    for u in units:
        spec = cluster.specs.get(u.vm) or VmSpec(u.vm, u.request)
        if u.volumes_gib:  # copy-storage: the destination needs room for its local volumes too
            spec = replace(spec, resources=spec.resources + Resources(disk_gib=u.volumes_gib))
        reqs.append(PlacementRequest(spec, f"evacuate:{node}:{u.vm}", (node,)))
    return schedule_batch(cluster.snap, reqs)


def evacuation(cluster: Cluster, node: str) -> RebalancePlan:
    """Every VM off `node`: where each would go, or why it cannot."""
    units = _restart_order(cluster.on(node))
    movable = [u for u in units if not u.pinned]
    moves, unmovable = [], [(u.vm, u.pinned) for u in units if u.pinned]
    for u, got in zip(movable, _replace(cluster, movable, node)):
        if isinstance(got, Rejection):
            unmovable.append((u.vm, got.summary))
        else:
            moves.append(Move(u.vm, u.node, got.node, f"evacuate {node}"))
    return RebalancePlan("evacuate", tuple(moves), (node,) if not unmovable else (), 0, 0, 0.0, 0.0,
                         tuple(unmovable))


def node_loss(cluster: Cluster, node: str) -> list[tuple[Unit, Decision | Rejection]]:
    """Re-place a lost node's VMs (an HA restart elsewhere). A VM with a local volume on it is
    lost with its disk."""
    units = _restart_order(cluster.on(node))
    rest = [u for u in units if not u.volumes_gib]
    out: list[tuple[Unit, Decision | Rejection]] = list(zip(rest, _replace(cluster, rest, node)))
    for u in units:
        if u.volumes_gib:
            why = f"its local volumes ({u.volumes_gib} GiB) live on {node}: lost with it"
            out.append((u, Rejection(u.vm, cluster.snap.size, 0, (), (), False, why)))
    return out


def to_record(plan: RebalancePlan, goal: RebalanceGoal, node: str = "") -> Rebalance:
    """A plan as the record the API returns (and, once it runs, keeps in etcd)."""
    steps = tuple(RebalanceStep(m.vm, m.source, m.target, m.reason) for m in plan.moves)
    now = time.time()
    return Rebalance("", goal, RebalanceState.PLANNED, steps, plan.hosts_freed, plan.hosts_in_use_before,
                     plan.hosts_in_use_after, round(plan.imbalance_before, 4), round(plan.imbalance_after, 4),
                     tuple(plan.unmovable), plan.note, node, False, now, now)


def _stuck(rb: Rebalance) -> str:
    """An evacuation is only done when the node is empty: say who stays, and why."""
    if rb.goal is not RebalanceGoal.EVACUATE or not rb.unmovable:
        return ""
    return f"{len(rb.unmovable)} VMs stay on {rb.node}: " + "; ".join(f"{vm}: {why}" for vm, why in rb.unmovable)


class Rebalancer:
    def __init__(self, store: Store, cache: ClusterCache, scheduler: Placer, *, poll_s: float = 0.2,
                 plan_with: Callable[..., Any] = lambda fn, *args: fn(*args)) -> None:
        """`plan_with(fn, *args)` runs the planner's consolidate or balance (the API: in its
        planner processes, out of its GIL)."""
        self.store = store
        self.cache = cache
        self.scheduler = scheduler
        self.poll_s = poll_s
        self.plan_with = plan_with
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- planning -----------------------------------------------------------------------
    def plan(self, goal: RebalanceGoal, max_moves: int = 0, threshold: float = 0.0) -> Rebalance:
        config = self.cache.config
        max_moves = max_moves or config.rebalance_max_moves
        cluster = Cluster(self.store, self.cache)
        if goal is RebalanceGoal.CONSOLIDATE:
            plan = self.plan_with(consolidate, cluster.snap, cluster.units, max_moves)
        elif goal is RebalanceGoal.BALANCE:
            plan = self.plan_with(balance, cluster.snap, cluster.units, threshold or config.imbalance_threshold,
                                  max_moves)
        else:
            raise FailedPrecondition("an evacuation is planned per node: use DrainNode")
        return to_record(plan, goal)

    def plan_drain(self, node: str) -> Rebalance:
        return to_record(evacuation(Cluster(self.store, self.cache, node), node), RebalanceGoal.EVACUATE, node=node)

    # --- running ------------------------------------------------------------------------
    def start(self, rb: Rebalance, wait: bool = False) -> Rebalance:
        rb = replace(rb, id=rb.id or new_id(), state=RebalanceState.RUNNING, updated_at=time.time())
        if not rb.steps:
            stuck = _stuck(rb)
            rb = replace(rb, state=RebalanceState.FAILED if stuck else RebalanceState.COMPLETED,
                         message=stuck or rb.message or "nothing to move")
        self.save(rb)
        if rb.state is RebalanceState.RUNNING:
            if wait:
                self._run(rb)
            else:
                t = threading.Thread(target=self._run, args=(rb,), name=f"rebalance-{rb.id}", daemon=True)
                t.start()
                self._threads.append(t)
        return self.get(rb.id)

    def get(self, rid: str) -> Rebalance:
        kv = self.store.get(keys.rebalance(rid))
        if kv is None:
            raise NotFound(f"rebalance {rid!r} not found")
        return decode(Rebalance, json.loads(kv.value))

    def list_all(self) -> list[Rebalance]:
        kvs, _ = self.store.get_prefix(keys.REBALANCES)
        return sorted((decode(Rebalance, json.loads(kv.value)) for kv in kvs), key=lambda r: r.created_at)

    def save(self, rb: Rebalance) -> None:
        self.store.put(keys.rebalance(rb.id), dumps(replace(rb, updated_at=time.time())))

    def _run(self, rb: Rebalance) -> None:
        try:
            self._steps(rb)
        except Exception as e:
            # Never leave the plan RUNNING behind a dead thread: record why it stopped.
            log.exception("rebalance %s stopped", rb.id)
            for attempt in range(10):
                try:
                    cur = self.get(rb.id)
                    self.save(replace(cur, state=RebalanceState.FAILED, message=f"stopped by an error: {e}"))
                    return
                except Exception as again:
                    log.warning("rebalance %s: cannot record its failure yet (%s)", rb.id, again)
                    self._stop.wait(min(5.0, 0.2 * 2 ** attempt))

    def _steps(self, rb: Rebalance) -> None:
        steps = list(rb.steps)
        failed = ""
        for i, step in enumerate(steps):
            if self._stop.is_set():
                failed = failed or "scheduler stopped"
                steps[i] = replace(step, state="skipped", message=failed)
                continue
            if failed and rb.goal is not RebalanceGoal.EVACUATE:
                # Later moves of a consolidation or balance assumed this one: stop here.
                steps[i] = replace(step, state="skipped", message="an earlier step failed")
                continue
            steps[i] = step = replace(step, state="migrating")
            self.save(replace(rb, steps=tuple(steps)))
            state, mid, message, target = self._migrate(step, rb.goal)
            steps[i] = replace(step, state=state, migration=mid, message=message, target=target or step.target)
            if state != "done":
                failed = failed or f"{step.vm}: {message}"
            self.save(replace(rb, steps=tuple(steps)))
        failed = failed or _stuck(rb)
        final = RebalanceState.FAILED if failed else RebalanceState.COMPLETED
        self.save(replace(rb, steps=tuple(steps), state=final, message=failed or rb.message))
        log.info("rebalance %s (%s) %s", rb.id, rb.goal.value, final.value)

    def _migrate(self, step: RebalanceStep, goal: RebalanceGoal) -> tuple[str, str, str, str]:
        """(state, migration id, message, target) of one step, run to its end."""
        # An evacuation lets the scheduler choose again when the move starts: the cluster
        # changed since the plan, and the node is cordoned, so any fitting host will do.
        target = "" if goal is RebalanceGoal.EVACUATE else step.target
        deadline = time.monotonic() + BUSY_WAIT_S
        while True:
            try:
                m = self.scheduler.migrate(step.vm, target, MigrationOptions())
                break
            except ResourceExhausted as e:
                # Migration slots are shared with everyone else's: wait for one.
                if "in flight" not in str(e) or time.monotonic() > deadline or self._stop.is_set():
                    return "failed", "", str(e), ""
                self._stop.wait(1.0)
            except VdcosError as e:
                return "failed", "", str(e), ""
        end = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < end:
            try:
                cur = records.get(self.store, m.id)
            except (NotFound, StoreError):
                cur = m
            if cur.phase.done:
                ok = cur.phase is MigrationPhase.COMPLETED
                return ("done" if ok else "failed"), m.id, cur.message, m.destination
            time.sleep(self.poll_s)
        return "failed", m.id, f"no result in {STEP_TIMEOUT_S:.0f} s", m.destination

    def stop(self) -> None:
        """Plans still running stop after their current step; what was done stands."""
        self._stop.set()
        for t in self._threads:
            t.join(5)


class AutomaticRebalance:
    """DRS's "fully automated" level, as a controller run by one replica at a time (the holder
    of the rebalancer lock): a balancing round every `rebalance_interval_s` while the load's
    std. dev. is over the threshold (item "balance"), and each plan left RUNNING by a replica
    that stopped marked failed (items "rebalance/<id>"), so it blocks rebalancing no longer."""

    name = "rebalancer"
    BALANCE = "balance"

    def __init__(self, rebalancer: Rebalancer) -> None:
        self.rebalancer = rebalancer
        self._last = time.monotonic()

    def keys(self) -> list[str]:
        """Nothing in manual mode, nor between rounds: the records are read only when a round is
        due, and the plans left running are reaped before it."""
        config = self.rebalancer.cache.config
        if config.rebalance_mode is not RebalanceMode.AUTOMATIC or \
                time.monotonic() - self._last < config.rebalance_interval_s:
            return []
        running = [f"rebalance/{r.id}" for r in self.rebalancer.list_all() if r.state is RebalanceState.RUNNING]
        return [*running, self.BALANCE]

    def reconcile(self, key: str) -> None:
        if key == self.BALANCE:
            self._balance()
        else:
            self._reap(self.rebalancer.get(key.removeprefix("rebalance/")))

    def _balance(self) -> None:
        self._last = time.monotonic()
        if any(r.state is RebalanceState.RUNNING for r in self.rebalancer.list_all()):
            return
        config = self.rebalancer.cache.config
        rb = self.rebalancer.plan(RebalanceGoal.BALANCE)
        if rb.steps:
            log.info("automatic rebalance: std. dev. %.3f over %.3f, %d moves", rb.imbalance_before,
                     config.imbalance_threshold, len(rb.steps))
            self.rebalancer.start(replace(rb, automatic=True), wait=True)

    def _reap(self, rb: Rebalance) -> None:
        """A plan whose record has not moved for longer than a step may take was left by a
        scheduler that stopped: its finished steps stand."""
        if rb.state is RebalanceState.RUNNING and time.time() - rb.updated_at > STEP_TIMEOUT_S + 60:
            self.rebalancer.save(replace(rb, state=RebalanceState.FAILED,
                                          message="abandoned: the scheduler running it stopped; its finished "
                                                  "steps stand"))
