"""The cluster as the planner sees it: how many more VMs of a shape fit, how many hosts a list
of VMs needs, and live-migration plans that consolidate (DPM) or balance (DRS).

Pure, like the scheduling core: a ClusterSnapshot and the placed VMs in, numbers and plans out.
Every fit goes through the core's `fit_matrix`, so a plan never disagrees with the migration
that carries it out (which checks the same fit again when it reserves the destination).
A plan is a sequence: capacity holds after every single move, with each VM counted on its
source until its move (the source keeps it until the migration succeeds).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from vdcos.model import DIMENSIONS, AffinityPolicy, Overcommit, QosClass, Resources
from vdcos.planner.exact import Plan, solve
from vdcos.planner.problem import Problem, ProblemError
from vdcos.model.fit import F64, Mask, allocatable, demand_vector, fit_matrix
from vdcos.scheduler.core.snapshot import ClusterSnapshot

DISK = DIMENSIONS.index("disk_gib")


@dataclass(frozen=True, slots=True)
class Unit:
    """One placed VM as a move sees it."""

    vm: str
    node: str
    qos_class: QosClass
    reserved: Resources          # what its allocation entry holds (nothing for best-effort)
    request: Resources           # its size: a best-effort VM still needs room for it
    volumes_gib: int = 0         # its local volumes: they are copied along, so they move with it
    group: str = ""
    group_policy: AffinityPolicy = AffinityPolicy.NONE
    pinned: str = ""             # why it cannot move now ("" = it can)
    selector: tuple[tuple[str, str], ...] = ()  # its node selector: only matching nodes may take it


@dataclass(frozen=True, slots=True)
class Move:
    vm: str
    source: str
    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class RebalancePlan:
    goal: str                          # "consolidate" | "balance" | "evacuate"
    moves: tuple[Move, ...]
    hosts_freed: tuple[str, ...]       # consolidate: hosts left empty, ready to power down
    hosts_in_use_before: int
    hosts_in_use_after: int
    imbalance_before: float            # std. dev. of per-host load (its fullest dimension)
    imbalance_after: float
    unmovable: tuple[tuple[str, str], ...] = ()   # (vm, why) among the VMs the plan wanted to move
    note: str = ""


@dataclass(frozen=True, slots=True)
class Headroom:
    qos_class: QosClass
    count: int                         # exactly this many more fit (best-effort: hosts with room)
    unbounded: bool                    # best-effort reserves nothing: any number can be admitted
    per_node: tuple[tuple[str, int], ...]
    limited_by: tuple[tuple[str, int], ...]  # (dimension, nodes where it is the binding one)


# --- what fits now -------------------------------------------------------------------------
def headroom(snap: ClusterSnapshot, shape: Resources, qos_class: QosClass,
             selector: tuple[tuple[str, str], ...] = (), one_per_node: bool = False) -> Headroom:
    """How many more VMs of `shape` and class fit now, exactly: nodes are independent for
    identical VMs, so the count per node is the smallest quotient over the pools it needs."""
    d = demand_vector(shape)
    terms = snap.score_terms
    usable = terms.schedulable & snap.label_mask(selector)
    need = d > 0
    per = np.zeros(snap.size, dtype=np.int64)
    binding = np.full(snap.size, -1)
    if need.any():
        pools = [terms.free_over] if qos_class is not QosClass.GUARANTEED else [terms.free_over, terms.free_physical]
        q = np.min([np.floor(np.maximum(p[need], 0) / d[need][:, None]) for p in pools], axis=0)  # (k, N)
        per = q.min(axis=0).astype(np.int64)
        binding = np.flatnonzero(need)[q.argmin(axis=0)]
    else:
        per[:] = 1 << 30  # a VM of nothing fits anywhere
    per = np.where(usable, per, 0)
    if qos_class is QosClass.BEST_EFFORT or one_per_node:
        per = np.minimum(per, 1)
    limited: dict[str, int] = {}
    for i in np.flatnonzero(usable & (binding >= 0)):
        limited[DIMENSIONS[int(binding[i])]] = limited.get(DIMENSIONS[int(binding[i])], 0) + 1
    return Headroom(qos_class, int(per.sum()), qos_class is QosClass.BEST_EFFORT and not one_per_node,
                    tuple((snap.names[i], int(per[i])) for i in np.flatnonzero(usable)),
                    tuple(sorted(limited.items(), key=lambda kv: -kv[1])))


def stranded(snap: ClusterSnapshot) -> dict[str, float]:
    """Per dimension, the free allocatable capacity on nodes where some other dimension is full
    (under 5% left): there it is unusable by any VM that needs a bit of everything."""
    terms = snap.score_terms
    usable = terms.schedulable
    frac = np.where(snap.allocatable > 0, terms.free_over / np.where(snap.allocatable > 0, snap.allocatable, 1), 1.0)
    out: dict[str, float] = {}
    for j, dim in enumerate(DIMENSIONS):
        others = np.delete(frac, j, axis=0)
        full = usable & (others < 0.05).any(axis=0) & (snap.allocatable[j] > 0)
        out[dim] = float(np.maximum(terms.free_over[j, full], 0).sum())
    return out


def imbalance(snap: ClusterSnapshot) -> float:
    """Std. dev. over schedulable nodes of each one's load (its fullest dimension)."""
    return _std(_State(snap, []).load(), np.asarray(snap.schedulable))


def capacity_numbers(snap: ClusterSnapshot, shapes: Sequence[tuple[str, Resources]]
                     ) -> tuple[dict[str, float], tuple[tuple[str, Resources, int, int], ...], float]:
    """A capacity report's numbers: stranded capacity per dimension, headroom per shape
    (guaranteed, burstable) and the load's imbalance."""
    rows = tuple((label, shape, headroom(snap, shape, QosClass.GUARANTEED).count,
                  headroom(snap, shape, QosClass.BURSTABLE).count) for label, shape in shapes)
    return stranded(snap), rows, imbalance(snap)


# --- how many hosts ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HostType:
    name: str
    capacity: Resources
    available: int = 0   # 0 = as many as needed


def hosts_needed(vms: list[tuple[Resources, QosClass, int]], types: list[HostType], overcommit: Overcommit,
                 time_limit: float = 5.0) -> tuple[Plan, list[str]]:
    """Fewest hosts for these VMs (shape, class, count), with a proven lower bound, and the type
    of each host index in the packing. Each VM is a vector over both pools: its guaranteed
    reservation against the physical capacity and its commitment against the overcommitted
    one. A best-effort VM is planned like a burstable one: a plan that leaves it no room
    anywhere is no plan. One unlimited type is the classic identical-hosts problem (where the
    MIP can prove optimality); several types, or a limited count, are heterogeneous hosts,
    the biggest opened first."""
    rows = []
    for shape, cls, count in vms:
        v = demand_vector(shape)
        g = v if cls is QosClass.GUARANTEED else np.zeros_like(v)
        rows += [np.concatenate((g, v))] * count
    items = np.asarray(rows, dtype=np.int64).reshape(len(rows), 2 * len(DIMENSIONS))
    caps = []
    for t in types:
        cap = demand_vector(t.capacity)
        caps.append(np.concatenate((cap, allocatable(cap[:, None], overcommit)[:, 0])).astype(np.int64))
    largest = np.max(caps, axis=0)
    names = [f"{d} ({pool})" for pool in ("physical", "overcommitted") for d in DIMENSIONS]
    for j in np.flatnonzero((items > largest).any(axis=0)):
        raise ProblemError(f"a VM needs {int(items[:, j].max())} of {names[j]}, the largest host has "
                           f"{int(largest[j])}")
    keep = largest > 0
    if len(types) == 1 and not types[0].available:
        return solve(Problem("hosts-needed", largest[keep], items[:, keep]), time_limit), [types[0].name] * len(rows)
    scale = np.where(largest > 0, largest, 1)
    needed = items.sum(axis=0) > 0  # a host's size counts in the dimensions these VMs use
    order = sorted(range(len(types)), key=lambda i: -float((caps[i] / scale)[needed].sum()))
    host_rows: list[np.ndarray] = []
    host_types: list[str] = []
    for i in order:
        count = types[i].available or len(rows)
        host_rows += [caps[i][keep]] * count
        host_types += [types[i].name] * count
    problem = Problem.heterogeneous("hosts-needed", np.asarray(host_rows, dtype=np.int64), items[:, keep])
    return solve(problem, time_limit), host_types


# --- plans ---------------------------------------------------------------------------------
class _State:
    """Free capacity per node as moves are applied one by one."""

    def __init__(self, snap: ClusterSnapshot, units: list[Unit]) -> None:
        self.snap = snap
        terms = snap.score_terms
        self.free_phys = np.array(terms.free_physical, dtype=np.float64)
        self.free_over = np.array(terms.free_over, dtype=np.float64)
        self.alloc = np.asarray(snap.allocatable, dtype=np.float64)
        self.targets: Mask = np.array(terms.schedulable)
        self.units = units
        self.where = np.array([snap.index.get(u.node, -1) for u in units], dtype=np.int64)
        self.on: list[list[int]] = [[] for _ in range(snap.size)]
        for k, i in enumerate(self.where):
            if i >= 0:
                self.on[i].append(k)
        # Hard anti-affinity: which nodes each group occupies (a count per node).
        self.groups: dict[str, F64] = {}
        for k, u in enumerate(units):
            if u.group and u.group_policy is AffinityPolicy.ANTI_AFFINITY and self.where[k] >= 0:
                self.groups.setdefault(u.group, np.zeros(snap.size))[self.where[k]] += 1
        self.g = np.zeros((len(units), len(DIMENSIONS)))
        self.c = np.zeros((len(units), len(DIMENSIONS)))
        self.fit_size = np.zeros((len(units), len(DIMENSIONS)))
        for k, u in enumerate(units):
            r, vol = demand_vector(u.reserved), np.zeros(len(DIMENSIONS))
            vol[DISK] = u.volumes_gib
            self.g[k] = (r if u.qos_class is QosClass.GUARANTEED else 0) + vol
            self.c[k] = (r if u.qos_class is not QosClass.BEST_EFFORT else 0) + vol
            self.fit_size[k] = demand_vector(u.request) if u.qos_class is QosClass.BEST_EFFORT else r
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(self.alloc > 0, (self.alloc - self.free_over) / self.alloc, 0.0)
        self.loads: F64 = frac.max(axis=0) if snap.size else np.zeros(0)

    def load(self) -> F64:
        """Each node's fullest dimension, committed / allocatable (kept up to date by `move`)."""
        return self.loads.copy()

    def column_load(self, i: int, delta: F64 | None = None) -> float:
        """Node i's load, or what it would be with `delta` more committed."""
        a = self.alloc[:, i]
        committed = a - self.free_over[:, i] + (0.0 if delta is None else delta)
        has = a > 0
        return float((committed[has] / a[has]).max()) if has.any() else 0.0

    def fits(self, k: int, exclude: Mask | None = None, cols: NDArray[np.int64] | None = None) -> Mask:
        """Nodes unit k could move to now (only `cols`, if given): the one fit function on its
        own size, after room for its volumes (a guaranteed reservation), and the hard
        anti-affinity rule and its node selector."""
        u = self.units[k]
        at = slice(None) if cols is None else cols
        vol = np.zeros(len(DIMENSIONS))
        vol[DISK] = u.volumes_gib
        phys, over = self.free_phys[:, at], self.free_over[:, at]
        ok = self.targets[at].copy()
        if exclude is not None:
            ok &= ~exclude[at]
        ok &= fit_matrix(phys - vol[:, None], over - vol[:, None], self.fit_size[k], u.qos_class).ok
        if u.volumes_gib:
            ok &= fit_matrix(phys, over, vol, QosClass.GUARANTEED).ok
        if u.group and u.group_policy is AffinityPolicy.ANTI_AFFINITY:
            ok &= self.groups[u.group][at] == 0
        if u.selector:
            ok &= self.snap.label_mask(u.selector)[at]
        here = np.zeros(self.snap.size, dtype=bool)
        if self.where[k] >= 0:
            here[self.where[k]] = True
        ok &= ~here[at]
        return ok

    def move(self, k: int, to: int) -> None:
        frm = int(self.where[k])
        self.free_phys[:, frm] += self.g[k]
        self.free_over[:, frm] += self.c[k]
        self.free_phys[:, to] -= self.g[k]
        self.free_over[:, to] -= self.c[k]
        self.on[frm].remove(k)
        self.on[to].append(k)
        self.where[k] = to
        self.loads[frm] = self.column_load(frm)
        self.loads[to] = self.column_load(to)
        u = self.units[k]
        if u.group and u.group_policy is AffinityPolicy.ANTI_AFFINITY:
            self.groups[u.group][frm] -= 1
            self.groups[u.group][to] += 1

    def in_use(self) -> int:
        return sum(1 for i in range(self.snap.size) if self.on[i])


def _why_pinned(u: Unit) -> str:
    if u.pinned:
        return u.pinned
    if u.group and u.group_policy is AffinityPolicy.AFFINITY:
        return f"hard affinity with group {u.group}: its members move together or not at all"
    return ""


def _std(load: F64, usable: Mask) -> float:
    return float(load[usable].std()) if usable.any() else 0.0


def consolidate(snap: ClusterSnapshot, units: list[Unit], max_moves: int) -> RebalancePlan:
    """Empty the least loaded hosts onto the others (best fit: the fullest host a VM fits on),
    a host at a time and only whole: a host that cannot be emptied within the migration cap
    keeps all its VMs. Hosts that received VMs are not emptied later (no VM moves twice)."""
    st = _State(snap, units)
    before = st.load()
    usable = np.array(st.targets)
    in_use = st.in_use()
    moves: list[Move] = []
    freed: list[str] = []
    unmovable: list[tuple[str, str]] = []
    keep = np.zeros(snap.size, dtype=bool)   # received VMs, or hold unmovable ones
    order = [int(i) for i in np.argsort(before, kind="stable") if st.on[int(i)]]
    for host in order:
        if keep[host] or not st.on[host]:
            continue
        ks = sorted(st.on[host], key=lambda k: -float(st.c[k].sum() + st.fit_size[k].sum()))
        if len(moves) + len(ks) > max_moves:
            continue
        pinned = [(units[k].vm, why) for k in ks if (why := _why_pinned(units[k]))]
        if pinned:
            unmovable += pinned
            continue
        excluded = np.zeros(snap.size, dtype=bool)
        excluded[host] = True
        for name in freed:
            excluded[snap.index[name]] = True
        done: list[tuple[int, int]] = []
        for k in ks:
            ok = st.fits(k, excluded)
            if not ok.any():
                break
            to = int(np.flatnonzero(ok)[np.argmax(st.loads[ok])])
            st.move(k, to)
            done.append((k, to))
        if len(done) < len(ks):
            for k, _ in reversed(done):
                st.move(k, host)
            continue
        for k, to in done:
            moves.append(Move(units[k].vm, snap.names[host], snap.names[to], f"consolidate: free {snap.names[host]}"))
            keep[to] = True
        freed.append(snap.names[host])
    after = st.load()
    return RebalancePlan("consolidate", tuple(moves), tuple(freed), in_use, st.in_use(),
                         _std(before, usable), _std(after, usable), tuple(unmovable))


def balance(snap: ClusterSnapshot, units: list[Unit], threshold: float, max_moves: int,
            hot_hosts: int = 4) -> RebalancePlan:
    """DRS-style: while the std. dev. of host load is above `threshold`, make the one move (a VM
    off one of the most loaded hosts) that lowers it most. Stops at the cap or when no move helps."""
    st = _State(snap, units)
    usable = np.array(st.targets)
    n = int(usable.sum())
    before = st.load()
    in_use = st.in_use()
    moves: list[Move] = []
    unmovable: dict[str, str] = {}
    moved = np.zeros(len(units), dtype=bool)  # a VM moves at most once per plan
    lu = np.where(usable, before, 0.0)
    total, sq = float(lu.sum()), float((lu * lu).sum())
    coldest = min(n, 256)  # the targets worth trying: moving onto a cold host lowers the spread most
    while len(moves) < max_moves and n > 1:
        var = sq / n - (total / n) ** 2
        if math.sqrt(max(var, 0.0)) <= threshold:
            break
        cols = np.argpartition(np.where(usable, lu, np.inf), coldest - 1)[:coldest]
        hot = np.argpartition(-lu, min(hot_hosts, n) - 1)[:hot_hosts]
        best = (0.0, -1, -1)
        for h in hot[np.argsort(-lu[hot], kind="stable")]:
            h = int(h)
            tried: set[tuple[object, ...]] = set()
            for k in st.on[h]:
                if moved[k]:
                    continue
                why = _why_pinned(units[k])
                if why:
                    unmovable[units[k].vm] = why
                    continue
                # VMs of one shape and the same constraints are the same move: try one of them.
                u = units[k]
                same = (st.c[k].tobytes(), st.fit_size[k].tobytes(), u.qos_class, u.volumes_gib, u.selector,
                        u.group if u.group_policy is AffinityPolicy.ANTI_AFFINITY else "")
                if same in tried:
                    continue
                tried.add(same)
                ok = st.fits(k, cols=cols)
                if not ok.any():
                    continue
                # Loads after the move: the source's drops, each candidate's rises.
                src_after = st.column_load(h, -st.c[k])
                a = st.alloc[:, cols]
                with np.errstate(divide="ignore", invalid="ignore"):
                    frac = np.where(a > 0, (a - st.free_over[:, cols] + st.c[k][:, None]) / a, 0.0)
                tgt_after = frac.max(axis=0)
                lc = lu[cols]
                t2 = total - lu[h] + src_after - lc + tgt_after
                q2 = sq - lu[h] ** 2 + src_after ** 2 - lc ** 2 + tgt_after ** 2
                new_var = np.where(ok, q2 / n - (t2 / n) ** 2, np.inf)
                j = int(np.argmin(new_var))
                gain = var - float(new_var[j])
                if gain > best[0] + 1e-12:
                    best = (gain, k, int(cols[j]))
        gain, k, t = best
        if k < 0:
            break
        src = int(st.where[k])
        st.move(k, t)
        moved[k] = True
        for i in (src, t):
            new = float(st.loads[i])
            total += new - lu[i]
            sq += new * new - lu[i] * lu[i]
            lu[i] = new
        moves.append(Move(units[k].vm, snap.names[src], snap.names[t],
                          f"balance: {snap.names[src]} at {before[src]:.0%} load"))
    return RebalancePlan("balance", tuple(moves), (), in_use, st.in_use(), _std(before, usable),
                         _std(st.load(), usable), tuple(sorted(unmovable.items())),
                         "" if len(moves) < max_moves else f"stopped at the cap of {max_moves} migrations")


def verify(snap: ClusterSnapshot, units: list[Unit], moves: tuple[Move, ...]) -> None:
    """Replay a plan move by move; raise ValueError at the first that would not fit."""
    st = _State(snap, units)
    by_vm = {u.vm: k for k, u in enumerate(units)}
    for m in moves:
        k = by_vm[m.vm]
        to = snap.index[m.target]
        if snap.names[int(st.where[k])] != m.source:
            raise ValueError(f"{m.vm} is not on {m.source} at this step")
        if not st.fits(k)[to]:
            raise ValueError(f"{m.vm} does not fit on {m.target} at this step")
        st.move(k, to)
