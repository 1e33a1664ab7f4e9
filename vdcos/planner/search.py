"""Local search that frees a host: the near-exact engine for instances too big for the MIP.

Given a packing on k hosts, take the lightest host away, put its VMs in a pool, and search for
a packing of everything on the k-1 hosts left. This is the consistent-neighbourhood idea of
Buljubašić and Vasquez (Computers & OR, 2016), the strongest published approach on these
instances: the hosts always stay within capacity; only the pool is "wrong". A move puts a pool
VM on a host and, if it does not fit, sends one or two of that host's VMs to the pool. The
search minimizes the pool's total relative size, so big VMs get placed and small, easy ones wait;
a short tabu list keeps it from undoing its last moves.
"""
from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from vdcos.planner.problem import Packing, Problem, check

I64 = NDArray[np.int64]

_PATIENCE = 3000   # moves without a smaller pool before giving up on this start
_TENURE = (3, 12)  # how long a move stays tabu, drawn at random per move


def _pairs(host: I64, assigned: I64, widest: int) -> tuple[I64, I64]:
    """Every pair of placed VMs that share a host (as two index arrays)."""
    s = assigned[np.argsort(host[assigned], kind="stable")]
    hs = host[s]
    a: list[I64] = []
    b: list[I64] = []
    for o in range(1, widest):
        same = hs[:-o] == hs[o:]
        if not same.any():
            break
        a.append(s[:-o][same])
        b.append(s[o:][same])
    if not a:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(a), np.concatenate(b)


def fewer_hosts(problem: Problem, packing: Packing, deadline: float, seed: int = 0) -> Packing | None:
    """A packing on packing.hosts - 1 hosts, or None if none was found before the deadline or
    the search stalled (a caller retries with another seed: another host is taken away)."""
    k = packing.hosts
    if k <= 1:
        return None
    rng = np.random.default_rng(seed)
    items = problem.items
    w = problem.relative().sum(axis=1)
    # Hosts by their index among the ones used (heterogeneous hosts keep their own capacity).
    ids, host = np.unique(packing.host, return_inverse=True)
    host = host.astype(np.int64)
    # The host to free: one of the lightest three, by seed.
    weight = np.bincount(host, weights=w, minlength=k)
    victim = int(np.argsort(weight, kind="stable")[min(seed % 3, k - 1)])
    host[host == victim] = -1
    host[host > victim] -= 1
    ids = np.delete(ids, victim)
    cap = problem.caps()[ids]  # (k - 1, d)
    k -= 1
    loads = np.zeros((k, problem.d), dtype=np.int64)
    placed = host >= 0
    np.add.at(loads, host[placed], items[placed])
    fill = (loads / problem.capacity).sum(axis=1)

    no_evict_until = np.zeros(problem.n, dtype=np.int64)   # just placed: stays a while
    banned_host = np.full(problem.n, -1, dtype=np.int64)   # just evicted: not back there yet
    banned_until = np.zeros(problem.n, dtype=np.int64)
    best_pool, since_best, it = float("inf"), 0, 0

    def put(i: int, b: int) -> None:
        host[i] = b
        loads[b] += items[i]
        fill[b] += w[i]
        no_evict_until[i] = it + rng.integers(*_TENURE)

    def evict(j: int) -> None:
        b = int(host[j])
        host[j] = -1
        loads[b] -= items[j]
        fill[b] -= w[j]
        banned_host[j], banned_until[j] = b, it + rng.integers(*_TENURE)

    while True:
        # Whatever fits somewhere goes there, biggest first, on the fullest host it fits.
        for i in np.flatnonzero(host < 0)[np.argsort(-w[host < 0], kind="stable")]:
            fits = ((loads + items[i]) <= cap).all(axis=1)
            if fits.any():
                put(int(i), int(np.flatnonzero(fits)[np.argmax(fill[fits])]))
        pool = np.flatnonzero(host < 0)
        if pool.size == 0:
            out = Packing(host.copy() if problem.hosts is None else ids[host])
            check(problem, out)
            return out
        pool_w = float(w[pool].sum())
        if pool_w < best_pool - 1e-9:
            best_pool, since_best = pool_w, 0
        else:
            since_best += 1
        if since_best > _PATIENCE or time.monotonic() > deadline:
            return None
        it += 1

        assigned = np.flatnonzero(host >= 0)
        widest = int(np.bincount(host[assigned], minlength=k).max())
        pa, pb = _pairs(host, assigned, widest)
        evictable = no_evict_until <= it
        best_gain = -np.inf
        moves: list[tuple[int, tuple[int, ...]]] = []
        for i in pool:
            # One VM out of its host for i.
            hj = host[assigned]
            ok = ((loads[hj] - items[assigned] + items[i]) <= cap[hj]).all(axis=1) & evictable[assigned]
            ok &= (banned_until[i] <= it) | (hj != banned_host[i])
            if ok.any():
                gains = w[i] - w[assigned[ok]]
                g = float(gains.max())
                if g > best_gain + 1e-12:
                    best_gain, moves = g, []
                if g >= best_gain - 1e-12:
                    moves += [(int(i), (int(j),)) for j in assigned[ok][gains >= g - 1e-12]]
            # Two VMs of one host out for i.
            if pa.size:
                hp = host[pa]
                ok2 = ((loads[hp] - items[pa] - items[pb] + items[i]) <= cap[hp]).all(axis=1)
                ok2 &= evictable[pa] & evictable[pb] & ((banned_until[i] <= it) | (hp != banned_host[i]))
                if ok2.any():
                    gains = w[i] - w[pa[ok2]] - w[pb[ok2]]
                    g = float(gains.max())
                    if g > best_gain + 1e-12:
                        best_gain, moves = g, []
                    if g >= best_gain - 1e-12:
                        sel = gains >= g - 1e-12
                        moves += [(int(i), (int(x), int(y))) for x, y in zip(pa[ok2][sel], pb[ok2][sel])]
        if not moves:
            # Every move is tabu or impossible: free the whole tabu list and go on.
            no_evict_until[:] = 0
            banned_until[:] = 0
            continue
        i, out_ = moves[int(rng.integers(len(moves)))]
        b = int(host[out_[0]])
        for j in out_:
            evict(j)
        put(i, b)
