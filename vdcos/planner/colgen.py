"""Column generation (Gilmore-Gomory) on HiGHS: the set-cover LP over host patterns, whose
optimum rounded up is a lower bound far stronger than volume for VMs that pack badly together,
and a cover solved as a MIP over the patterns found, which is often an optimal packing.

Master: min sum(lambda_p) s.t. sum_p a_ip lambda_p >= 1 for every VM i, lambda >= 0.
Pricing: the pattern (a set of VMs that fits one host) of largest dual value; a greedy guess
first, the exact multi-dimensional knapsack MIP when the guess finds nothing. While a pricing
is exact, Farley's bound LP / max(1, best dual value) is a valid lower bound at every iteration.
Identical hosts only.
"""
from __future__ import annotations

import math
import time

import highspy
import numpy as np
from numpy.typing import NDArray

from vdcos.planner.problem import Packing, Problem, check

F64 = NDArray[np.float64]
EPS = 1e-6


def _highs(time_limit: float) -> highspy.Highs:
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", 0)
    h.setOptionValue("time_limit", float(max(time_limit, 0.01)))
    return h


def _greedy_patterns(problem: Problem, duals: F64, rng: np.random.Generator, tries: int = 8) -> list[NDArray[np.int64]]:
    """Patterns worth more than a host (dual value > 1), by greedy fills under several orders:
    dual value per unit of size (sum, max), dual value alone, and noisy versions of them."""
    rel = problem.relative()
    keys = [duals / np.maximum(rel.sum(axis=1), 1e-9), duals / np.maximum(rel.max(axis=1), 1e-9), duals]
    keys += [keys[t % 3] * rng.uniform(0.7, 1.3, problem.n) for t in range(tries)]
    out: dict[tuple[int, ...], NDArray[np.int64]] = {}
    for key in keys:
        free = problem.capacity.copy()
        chosen = []
        for i in np.argsort(-key, kind="stable"):
            if duals[i] <= EPS:
                break
            if (problem.items[i] <= free).all():
                free -= problem.items[i]
                chosen.append(int(i))
        if duals[chosen].sum() > 1 + EPS:
            out[tuple(sorted(chosen))] = np.asarray(sorted(chosen), dtype=np.int64)
    return list(out.values())


def _exact_pattern(problem: Problem, duals: F64, time_limit: float) -> tuple[NDArray[np.int64], float]:
    """max duals . a s.t. items^T a <= capacity, a binary. Returns (the best pattern found, an
    upper bound on any pattern's value: inf when the MIP ran out of time knowing nothing)."""
    cand = np.flatnonzero(duals > EPS)
    if cand.size == 0:
        return np.zeros(0, dtype=np.int64), 0.0
    h = _highs(time_limit)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = int(cand.size), problem.d
    lp.col_cost_ = -duals[cand]
    lp.col_lower_ = np.zeros(cand.size)
    lp.col_upper_ = np.ones(cand.size)
    lp.row_lower_ = np.full(problem.d, -highspy.kHighsInf)
    lp.row_upper_ = problem.capacity.astype(np.float64)
    m = problem.items[cand].astype(np.float64)             # (c, d): column j has its d weights
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.arange(0, cand.size * problem.d + 1, problem.d, dtype=np.int32)
    lp.a_matrix_.index_ = np.tile(np.arange(problem.d, dtype=np.int32), cand.size)
    lp.a_matrix_.value_ = m.reshape(-1)
    lp.integrality_ = [highspy.HighsVarType.kInteger] * int(cand.size)
    h.passModel(lp)
    h.run()
    info = h.getInfo()
    found = np.zeros(0, dtype=np.int64)
    if info.primal_solution_status == 2:
        found = cand[np.asarray(h.getSolution().col_value) > 0.5]
    if h.getModelStatus() == highspy.HighsModelStatus.kOptimal:
        return found, float(duals[found].sum())
    # Stopped early: the MIP's dual bound still caps every pattern's value.
    return found, (-float(info.mip_dual_bound) if math.isfinite(info.mip_dual_bound) else math.inf)


def solve_cover(problem: Problem, start: Packing, deadline: float) -> tuple[Packing | None, int]:
    """(a packing better than `start`, or None; a proven lower bound)."""
    n = problem.n
    patterns: list[NDArray[np.int64]] = [np.flatnonzero(start.host == b) for b in range(start.hosts)]
    # Every VM alone too, so the master is always feasible.
    patterns += [np.array([i]) for i in range(n)]
    seen = {tuple(p.tolist()) for p in patterns}
    lb = 0
    inf = highspy.kHighsInf
    h = _highs(inf)
    h.addRows(n, np.ones(n), np.full(n, inf), 0, np.array([], dtype=np.int32), np.array([], dtype=np.int32),
              np.array([]))

    def add(p: NDArray[np.int64]) -> None:
        h.addCol(1.0, 0.0, inf, p.size, p.astype(np.int32), np.ones(p.size))
    for p in patterns:
        add(p)
    rng = np.random.default_rng(0)
    # Most of the time for the LP (the bound), the rest for the cover MIP (a packing).
    lp_deadline = time.monotonic() + 0.7 * max(deadline - time.monotonic(), 0.0)
    while time.monotonic() < lp_deadline:
        h.setOptionValue("time_limit", max(lp_deadline - time.monotonic(), 0.01))
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            break  # duals of an unfinished LP prove nothing
        obj = h.getInfo().objective_function_value
        duals = np.asarray(h.getSolution().row_dual)
        new = [p for p in _greedy_patterns(problem, duals, rng) if tuple(p.tolist()) not in seen]
        if not new:
            pattern, bound = _exact_pattern(problem, duals, lp_deadline - time.monotonic())
            if math.isfinite(bound):
                # Farley: the restricted LP's value over the best pattern's is a bound on the LP.
                lb = max(lb, math.ceil(obj / max(bound, 1.0) - EPS))
            if bound <= 1 + EPS:
                break  # no pattern is worth more than a host: the LP is solved
            if pattern.size and float(duals[pattern].sum()) > 1 + EPS and tuple(pattern.tolist()) not in seen:
                new = [pattern]
        if not new:
            break
        for p in new:
            seen.add(tuple(p.tolist()))
            patterns.append(p)
            add(p)
    # The best cover the patterns found allow, as a MIP, within what time is left.
    left = deadline - time.monotonic()
    if left <= 0.05 or start.hosts <= lb:
        return None, lb
    h.setOptionValue("time_limit", float(left))
    h.changeColsIntegrality(len(patterns), np.arange(len(patterns), dtype=np.int32),
                            np.array([highspy.HighsVarType.kInteger] * len(patterns)))
    h.changeColsBounds(len(patterns), np.arange(len(patterns), dtype=np.int32), np.zeros(len(patterns)),
                       np.ones(len(patterns)))
    warm = highspy.HighsSolution()
    warm.col_value = [1.0 if j < start.hosts else 0.0 for j in range(len(patterns))]  # start's own hosts
    warm.value_valid = True
    h.setSolution(warm)
    h.run()
    if h.getInfo().primal_solution_status != 2:
        return None, lb
    x = np.asarray(h.getSolution().col_value)
    host = np.full(n, -1, dtype=np.int64)
    b = 0
    for j in np.flatnonzero(x > 0.5):
        free = [i for i in patterns[j] if host[i] < 0]  # a VM covered twice stays on its first host
        if free:
            host[free] = b
            b += 1
    if (host < 0).any() or b >= start.hosts:
        return None, lb
    out = Packing(host)
    check(problem, out)
    return out, lb
