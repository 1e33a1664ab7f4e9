"""Fast packing heuristics: item-centric (first fit, first/best fit decreasing under several size
measures and bin scores), bin-centric, and the online scheduler's own policy.

Every one returns a Packing; `portfolio` runs many and keeps the best, which is what the exact
engine starts from. Loops run over items (or bins); each step is a vector op over all hosts.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from numpy.typing import NDArray

from vdcos.planner.problem import Packing, Problem, ProblemError
from vdcos.scheduler.core.schedule import alignment, normalize, utilization_after
from vdcos.scheduler.core.snapshot import derive

F64 = NDArray[np.float64]
# (free space of the open hosts (k, d), relative to a host; the item (d,), relative) -> score, higher is better
BinScore = Callable[[F64, F64], F64]

# Size measures for "decreasing" orders (Panigrahy et al. 2011; Mommessin et al. 2025).
SIZES: dict[str, Callable[[F64], F64]] = {
    "sum": lambda r: r.sum(axis=1),
    "max": lambda r: r.max(axis=1),
    "l2": lambda r: np.sqrt((r * r).sum(axis=1)),
    "prod": lambda r: np.exp(np.log(np.maximum(r, 1e-9)).sum(axis=1) / r.shape[1]),
}


def _first(free: F64, w: F64) -> F64:
    return -np.arange(free.shape[0], dtype=np.float64)


def _dot(free: F64, w: F64) -> F64:
    return free @ w


def _l2(free: F64, w: F64) -> F64:
    left = free - w
    out: F64 = -(left * left).sum(axis=1)
    return out


def _tightest(free: F64, w: F64) -> F64:
    out: F64 = -(free - w).sum(axis=1)
    return out


BIN_SCORES: dict[str, BinScore] = {"first": _first, "dot": _dot, "l2": _l2, "tightest": _tightest}


def _opener(problem: Problem) -> Callable[[F64, NDArray[np.bool_]], int]:
    """Which host to open for an item (relative size w) that fits no open one: the next in
    order for identical hosts; with heterogeneous hosts, the first unopened one it fits."""
    if problem.hosts is None:
        return lambda w, opened: int(np.argmin(opened)) if not opened.all() else -1
    rel_caps = problem.caps() / problem.capacity

    def first_fitting(w: F64, opened: NDArray[np.bool_]) -> int:
        cand = np.flatnonzero(~opened & (rel_caps >= w - 1e-9).all(axis=1))
        return int(cand[0]) if cand.size else -1
    return first_fitting


def _no_host(problem: Problem, i: int) -> ProblemError:
    return ProblemError(f"{problem.name}: item {i} ({problem.items[i].tolist()}) fits on no host left "
                        f"({problem.max_hosts} hosts)")


def item_centric(problem: Problem, order: NDArray[np.int64], score: BinScore) -> Packing:
    """Items in `order`, each to the best-scoring open host it fits (a new one if none)."""
    rel = problem.relative()
    m = problem.max_hosts
    caps = problem.caps() / problem.capacity
    free = np.empty((m, problem.d))      # rows 0..k-1: the open hosts, in the order opened
    ids = np.empty(m, dtype=np.int64)    # which host each row is
    opened = np.zeros(m, dtype=bool)
    open_new = _opener(problem)
    host = np.empty(problem.n, dtype=np.int64)
    eps = 1e-9
    k = 0
    for i in order:
        w = rel[i]
        fits = np.flatnonzero((free[:k] >= w - eps).all(axis=1)) if k else np.empty(0, dtype=np.int64)
        if fits.size:
            r = int(fits[np.argmax(score(free[fits], w))])
        else:
            h = open_new(w, opened)
            if h < 0:
                raise _no_host(problem, int(i))
            opened[h] = True
            free[k], ids[k] = caps[h], h
            r = k
            k += 1
        free[r] -= w
        host[i] = ids[r]
    return Packing(host)


# Bin-centric: which remaining item goes into the host being filled ((candidates (c, d), the
# host's free space (d,)) -> score, higher is better). Best fit under L2, under the fullest
# dimension, and by direction (cosine) are what find the tight packings of many small VMs.
BC_SCORES: dict[str, Callable[[F64, F64], F64]] = {
    "dot": lambda r, free: r @ free,
    "l2": lambda r, free: -((free - r) ** 2).sum(axis=1),
    "maxres": lambda r, free: -(free - r).max(axis=1),
    "cos": lambda r, free: (r @ free) / (np.linalg.norm(r, axis=1) * np.linalg.norm(free) + 1e-12),
}


def bin_centric(problem: Problem, size: F64, score: str = "dot") -> Packing:
    """One host at a time (in order): fill it with the remaining item that scores best against
    what the host has left (ties: the larger item), until nothing fits."""
    rel = problem.relative()
    caps = problem.caps() / problem.capacity
    pick = BC_SCORES[score]
    left = np.ones(problem.n, dtype=bool)
    host = np.empty(problem.n, dtype=np.int64)
    for b in range(problem.max_hosts):
        if not left.any():
            break
        free = caps[b].copy()
        while True:
            cand = np.flatnonzero(left & (rel <= free + 1e-9).all(axis=1))
            if cand.size == 0:
                break
            i = int(cand[np.argmax(pick(rel[cand], free) + 1e-6 * size[cand])])
            free -= rel[i]
            left[i] = False
            host[i] = b
    if left.any():
        raise _no_host(problem, int(np.flatnonzero(left)[0]))
    return Packing(host)


def online(problem: Problem) -> Packing:
    """The online scheduler's own pack policy, as it places VMs one at a time and never moves
    them: the same fit and the same scorers (most allocated + 0.5 x alignment, each min-max
    normalized over the hosts it fits), hosts taken in order, an empty one only when needed."""
    if problem.hosts is not None:
        raise ProblemError(f"{problem.name}: online mode replays the scheduler on identical hosts")
    cap = problem.capacity.astype(np.float64)
    used = np.zeros((problem.d, problem.n))
    host = np.empty(problem.n, dtype=np.int64)
    k = 0
    for i in range(problem.n):
        # The open hosts and one empty host stand for the whole (identical, unbounded) cluster.
        m = k + 1
        ucap = np.repeat(cap[:, None], m, axis=1)
        terms = derive(ucap, ucap, used[:, :m], used[:, :m], np.ones(m, dtype=bool))
        demand = problem.items[i].astype(np.float64)
        fits = np.flatnonzero((terms.free_over >= demand[:, None]).all(axis=0))
        s = (normalize(utilization_after(terms, demand)[fits]) + 0.5 * normalize(alignment(terms, demand)[fits])) / 1.5
        b = int(fits[np.argmax(s)])  # argmax: ties go to the lowest host, as hosts are taken in order
        used[:, b] += demand
        host[i] = b
        k = max(k, b + 1)
    return Packing(host)


def first_fit(problem: Problem) -> Packing:
    """The plain online baseline: arrival order, first host it fits."""
    return item_centric(problem, np.arange(problem.n), _first)


def _best(problem: Problem, runs: list[tuple[Callable[[], Packing], str]]) -> tuple[Packing, str]:
    """The packing with fewest hosts; with a limited set of heterogeneous hosts some orders run
    out of hosts that others manage with: those are skipped, unless all do."""
    done: list[tuple[Packing, str]] = []
    error: ProblemError | None = None
    for run, name in runs:
        try:
            done.append((run(), name))
        except ProblemError as e:
            error = error or e
    if not done:
        assert error is not None
        raise error
    return min(done, key=lambda r: r[0].hosts)


def portfolio(problem: Problem) -> tuple[Packing, str]:
    """The best of the deterministic heuristics, and its name."""
    rel = problem.relative()
    runs: list[tuple[Callable[[], Packing], str]] = [
        (partial(item_centric, problem, np.argsort(-size(rel), kind="stable"), score), f"ffd-{oname}-{sname}")
        for oname, size in SIZES.items() for sname, score in BIN_SCORES.items()]
    runs += [(partial(bin_centric, problem, size(rel)), f"bin-centric-{name}") for name, size in SIZES.items()]
    runs += [(partial(bin_centric, problem, SIZES["sum"](rel), score), f"bin-centric-{score}")
             for score in BC_SCORES if score != "dot"]
    return _best(problem, runs)


def portfolio_round(problem: Problem, seed: int) -> tuple[Packing, str]:
    """Decreasing order under randomly weighted, slightly noisy sizes: which dimensions matter
    most differs per instance, and a near-tie broken otherwise often saves a host."""
    rng = np.random.default_rng(seed)
    rel = problem.relative()
    size = (rel * rng.dirichlet(np.ones(problem.d))).sum(axis=1) * rng.uniform(0.9, 1.1, problem.n)
    order = np.argsort(-size, kind="stable")
    runs: list[tuple[Callable[[], Packing], str]] = [
        (partial(item_centric, problem, order, BIN_SCORES[s]), f"ffd-random-{s}") for s in ("dot", "l2")]
    runs += [(partial(bin_centric, problem, size, s), f"bin-centric-random-{s}") for s in ("dot", "l2")]
    return _best(problem, runs)
