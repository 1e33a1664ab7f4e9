"""Lower bounds and the exact engine: a MIP on HiGHS, started from the best heuristic packing,
that either finds fewer hosts or proves (within its time limit) how few are possible.

Model (assignment formulation with the usual symmetry breaking): items sorted by decreasing
size, item p may only open host <= p; y_b = host b is used, y_b >= y_{b+1}; minimize sum y.
Its dual bound, rounded up, is a proven lower bound on the hosts any packing needs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import highspy
import numpy as np
from numpy.typing import NDArray

from vdcos.planner import colgen, heuristics, search
from vdcos.planner.problem import Packing, Problem, check

# Above this many binaries the MIP is not worth building: its LP alone takes the time limit.
MAX_MIP_VARS = 40_000
# Column generation only where hosts hold few VMs: with many small ones its patterns are too many.
_CG_VMS_PER_HOST = 4


@dataclass(frozen=True)
class Plan:
    packing: Packing
    lower_bound: int      # proven: no packing uses fewer hosts
    method: str           # which heuristic or "mip" found it
    seconds: float

    @property
    def hosts(self) -> int:
        return self.packing.hosts

    @property
    def optimal(self) -> bool:
        return self.hosts == self.lower_bound


def lower_bound(problem: Problem) -> int:
    """max(per-dimension volume bound, a clique of items no two of which share a host). With
    heterogeneous hosts two items conflict when they exceed the largest capacity together."""
    if problem.n == 0:
        return 0
    if problem.hosts is None:
        volume = int(max(math.ceil(problem.items[:, t].sum() / problem.capacity[t]) for t in range(problem.d)))
    else:
        # Heterogeneous: the fewest of the largest hosts whose capacity adds up to the demand.
        need = problem.items.sum(axis=0)
        most = np.cumsum(-np.sort(-problem.hosts, axis=0), axis=0)  # (m, d): k largest, per dimension
        volume = int(max(np.searchsorted(most[:, t], need[t]) + 1 for t in range(problem.d)))
    order = np.argsort(-problem.relative().max(axis=1), kind="stable")
    clique = 0
    with_all = np.ones(problem.n, dtype=bool)  # items that conflict with every member so far
    for i in order:
        if not with_all[i]:
            continue
        clique += 1
        with_all &= ((problem.items + problem.items[i]) > problem.capacity).any(axis=1)
        with_all[i] = False
    return max(volume, clique, 1)


def _compact(host: np.ndarray) -> Packing:
    _, inverse = np.unique(host, return_inverse=True)
    return Packing(inverse.astype(np.int64))


def _positions(problem: Problem) -> NDArray[np.int64]:
    """Each item's rank by decreasing size: the symmetry breaking lets item p open host <= p."""
    order = np.argsort(-problem.relative().sum(axis=1), kind="stable")
    pos = np.empty(problem.n, dtype=np.int64)
    pos[order] = np.arange(problem.n)
    return pos


def _mip_vars(problem: Problem, hosts: int) -> int:
    return int(np.minimum(_positions(problem) + 1, hosts).sum())


def mip(problem: Problem, start: Packing, lb: int, time_limit: float) -> tuple[Packing | None, int]:
    """Improve `start` or raise the bound. Returns (a better packing or None, proven bound)."""
    n, d, k = problem.n, problem.d, start.hosts
    pos = _positions(problem)
    allowed = np.minimum(pos + 1, k)          # item i may use hosts 0..allowed[i]-1
    nx = int(allowed.sum())
    if nx > MAX_MIP_VARS:
        return None, lb
    # Columns: y_0..y_{k-1}, then x for each item (in index order) and each host it may use.
    xstart = k + np.concatenate(([0], np.cumsum(allowed)[:-1]))
    rows_assign, rows_cap, rows_sym = 0, n, n + k * d
    row_lb = rows_sym + max(k - 1, 0)
    nrows = row_lb + 1
    starts, index, value = [0], [], []
    for b in range(k):                         # y_b
        index += [rows_cap + b * d + t for t in range(d)]
        value += [-float(c) for c in problem.capacity]
        if b < k - 1:
            index.append(rows_sym + b)
            value.append(-1.0)
        if b >= 1:
            index.append(rows_sym + b - 1)
            value.append(1.0)
        index.append(row_lb)
        value.append(1.0)
        starts.append(len(index))
    for i in range(n):                         # x_ib
        nz = np.flatnonzero(problem.items[i])
        for b in range(int(allowed[i])):
            index.append(rows_assign + i)
            value.append(1.0)
            index += [rows_cap + b * d + int(t) for t in nz]
            value += [float(problem.items[i, t]) for t in nz]
            starts.append(len(index))
    ncols = k + nx
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = ncols, nrows
    lp.col_cost_ = np.concatenate((np.ones(k), np.zeros(nx)))
    lp.col_lower_ = np.zeros(ncols)
    lp.col_upper_ = np.ones(ncols)
    lp.row_lower_ = np.concatenate((np.ones(n), np.full(k * d + max(k - 1, 0), -highspy.kHighsInf), [lb]))
    lp.row_upper_ = np.concatenate((np.ones(n), np.zeros(k * d + max(k - 1, 0)), [highspy.kHighsInf]))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.asarray(starts, dtype=np.int32)
    lp.a_matrix_.index_ = np.asarray(index, dtype=np.int32)
    lp.a_matrix_.value_ = np.asarray(value, dtype=np.float64)
    lp.integrality_ = [highspy.HighsVarType.kInteger] * ncols
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(max(time_limit, 0.05)))
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", 0)
    h.passModel(lp)
    # Warm start: the heuristic packing, hosts renumbered by their first item in sorted order
    # (so every item sits on a host it may use).
    first = np.full(k, n, dtype=np.int64)
    np.minimum.at(first, start.host, pos)
    renum = np.empty(k, dtype=np.int64)
    renum[np.argsort(first, kind="stable")] = np.arange(k)
    b_of = renum[start.host]
    sol = np.zeros(ncols)
    sol[:k] = 1.0
    sol[xstart + b_of] = 1.0
    ws = highspy.HighsSolution()
    ws.col_value = sol.tolist()
    ws.value_valid = True
    h.setSolution(ws)
    h.run()
    info = h.getInfo()
    bound = lb
    if math.isfinite(info.mip_dual_bound):
        bound = max(lb, math.ceil(info.mip_dual_bound - 1e-6))
    if info.primal_solution_status != 2:  # no feasible solution (cannot happen with the start)
        return None, bound
    x = np.asarray(h.getSolution().col_value)
    host = np.array([int(np.argmax(x[xstart[i]:xstart[i] + allowed[i]])) for i in range(n)], dtype=np.int64)
    better = _compact(host)
    try:
        check(problem, better)
    except ValueError:
        return None, bound
    return (better if better.hosts < k else None), min(bound, k)


def solve(problem: Problem, time_limit: float = 10.0, seed: int = 0) -> Plan:
    """The planner's offline engine: heuristics; column generation where hosts hold few VMs; local
    search freeing one host at a time; then the MIP (to find fewer hosts still or prove the
    bound) with what time is left."""
    t0 = time.monotonic()
    lb = lower_bound(problem)
    best, method = heuristics.portfolio(problem)
    rounds = 0
    # Randomized orders while they are cheap relative to the budget.
    while best.hosts > lb and time.monotonic() - t0 < time_limit / 10 and rounds < 50:
        p, m = heuristics.portfolio_round(problem, seed + rounds)
        rounds += 1
        if p.hosts < best.hosts:
            best, method = p, m
    # Few VMs per host (big VMs): column generation's set-cover LP bounds far better than volume,
    # and a cover of its patterns is often optimal. Identical hosts only.
    if problem.hosts is None and best.hosts > lb and best.hosts * _CG_VMS_PER_HOST >= problem.n:
        cover, cg_lb = colgen.solve_cover(problem, best, t0 + time_limit * 0.35)
        lb = max(lb, cg_lb)
        if cover is not None and cover.hosts < best.hosts:
            best, method = cover, "colgen"
    # Local search gets most of the rest; the MIP is only worth its share where it is small.
    # The MIP's symmetry breaking holds for identical hosts only.
    small = problem.hosts is None and _mip_vars(problem, best.hosts) <= MAX_MIP_VARS
    until = t0 + time_limit * (0.6 if small else 1.0)
    tries = 0
    while best.hosts > lb and time.monotonic() < until:
        fewer = search.fewer_hosts(problem, best, until, seed + tries)
        tries += 1
        if fewer is not None:
            best, method = fewer, "search"
    left = time_limit - (time.monotonic() - t0)
    if best.hosts > lb and small and left > 0.05:
        better, lb = mip(problem, best, lb, left)
        if better is not None:
            best, method = better, "mip"
    check(problem, best)
    return Plan(best, min(lb, best.hosts), method, time.monotonic() - t0)
