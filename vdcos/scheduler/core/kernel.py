"""The success path of one decision, compiled: filters, both scorers, min-max normalization,
weights and the seeded pick, in one pass over the window's nodes.

`schedule._evaluate` and `schedule._pick` are the definition; this computes the same IEEE
operations in the same order, so it gives the same node and the same scores, bit for bit
(tests/unit/test_kernel.py holds it to that on filled clusters, with batches, filters, lanes,
both strategies). It exists because the NumPy path spends ~100 us per decision, mostly on the
dispatch of some forty small array operations: a quarter to a third of the scheduler's CPU per
placement. A decision through this loop takes ~30 us, call and glue included. What it does not
cover goes the NumPy way: a soft placement group's scorer, a pinned VM, a request no node can
take (its refusal and the counts that explain it), explain's ranking.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numba import njit, types

from vdcos.model import fit

# The fit rule itself, compiled: the loop below asks it per dimension, as fit_matrix asks it per
# node. (numba's on-disk cache keys on this file only: a change to fit.py must clear it.)
_short = njit(inline="always")(fit.short)

# (node index or -1 when no node of the window is feasible, total score, first scorer's
# normalized score, second's)
Best = tuple[int, float, float, float]


def _best_in_window(widx: Any, start: int, k: int, util: Any, inv: Any, grad: Any, inv_sq: Any, free_sq: Any,
                    free_physical: Any, free_over: Any, schedulable: Any, mask: Any, demand: Any,
                    guaranteed: bool, pack: bool, w_first: float, w_second: float, seed: Any, tie: float,
                    slot_of: Any, ov_util: Any, ov_grad: Any, ov_free_sq: Any, ov_physical: Any,
                    ov_over: Any) -> Best:  # pragma: no cover - compiled
    """The window is `widx` (node indices) or, when that is empty, nodes start..start+k-1.
    `mask` (every node, or empty: none) is the request's filters; `slot_of[j]` >= 0 says node j's
    changing terms are column slot_of[j] of the ov_* arrays (earlier decisions of the batch)."""
    dims = util.shape[0]
    # utilization_after's weights: the mean over the dimensions asked for (all if none)
    wanted = 0
    for d in range(dims):
        if demand[d] > 0:
            wanted += 1
    wv = np.empty(dims)
    total_w = 0.0
    for d in range(dims):
        wv[d] = 1.0 if (demand[d] > 0 or wanted == 0) else 0.0
        total_w += wv[d]
    for d in range(dims):
        wv[d] /= total_w
    n = widx.shape[0] if widx.shape[0] > 0 else k
    first = np.empty(n)
    second = np.empty(n)
    nodes = np.empty(n, np.int64)
    m = 0
    for pos in range(n):
        j = widx[pos] if widx.shape[0] > 0 else start + pos
        if not schedulable[j] or (mask.shape[0] > 0 and not mask[j]):
            continue
        o = slot_of[j] if slot_of.shape[0] > 0 else -1
        ok = True
        for d in range(dims):
            asked = demand[d]
            # `short` never rules a node out on a dimension not asked for, nor on the physical
            # pool for a VM that is not guaranteed: those reads are skipped, not compared.
            if asked > 0:
                over = ov_over[d, o] if o >= 0 else free_over[d, j]
                physical = (ov_physical[d, o] if o >= 0 else free_physical[d, j]) if guaranteed else over
                if _short(physical, over, asked, guaranteed):
                    ok = False
                    break
        if not ok:
            continue
        # w @ util + (w * demand) @ inv, demand @ grad and (demand * demand) @ inv_sq, summed in
        # dimension order like NumPy's products of these shapes
        u_fill = 0.0
        u_add = 0.0
        num = 0.0
        q = 0.0
        for d in range(dims):
            u_fill += wv[d] * (ov_util[d, o] if o >= 0 else util[d, j])
            u_add += wv[d] * demand[d] * inv[d, j]
            num += demand[d] * (ov_grad[d, o] if o >= 0 else grad[d, j])
            q += demand[d] * demand[d] * inv_sq[d, j]
        u = u_fill + u_add
        u = 0.0 if u < 0.0 else u
        u = 1.0 if u > 1.0 else u
        nodes[m] = j
        if pack:
            den = np.sqrt((ov_free_sq[o] if o >= 0 else free_sq[j]) * q)
            al = num / den if den > 0 else 0.0
            al = 0.0 if al < 0.0 else al
            first[m] = u
            second[m] = 1.0 if al > 1.0 else al
        else:
            first[m] = 1.0 - u
        m += 1
    if m == 0:
        return -1, 0.0, 0.0, 0.0
    lo1, hi1 = first[:m].min(), first[:m].max()
    span1 = hi1 - lo1
    lo2, hi2 = (second[:m].min(), second[:m].max()) if pack else (0.0, 0.0)
    span2 = hi2 - lo2
    total = np.empty(m)
    for i in range(m):
        a = (first[i] - lo1) / span1 if span1 >= tie else 0.0
        if pack:
            b = (second[i] - lo2) / span2 if span2 >= tie else 0.0
            total[i] = (0.0 + w_first * a + w_second * b) / max(0.0 + w_first + w_second, 1e-12)
        else:
            total[i] = a
    best = total.max()
    ties = 0
    for i in range(m):
        if total[i] >= best - tie:
            ties += 1
    pick = seed % np.uint64(ties)
    seen = np.uint64(0)
    for i in range(m):
        if total[i] >= best - tie:
            if seen == pick:
                a = (first[i] - lo1) / span1 if span1 >= tie else 0.0
                b = ((second[i] - lo2) / span2 if span2 >= tie else 0.0) if pack else 0.0
                return nodes[i], total[i], a, b
            seen += np.uint64(1)
    return -1, 0.0, 0.0, 0.0


# One signature for every caller (read-only or not, contiguous or strided arrays: a snapshot's
# are read-only views of the cache's), compiled when first imported and cached on disk after.
_F1, _F2 = types.Array(types.float64, 1, "A", readonly=True), types.Array(types.float64, 2, "A", readonly=True)
_B1, _I1 = types.Array(types.boolean, 1, "A", readonly=True), types.Array(types.int64, 1, "A", readonly=True)
_SIGNATURE = types.Tuple((types.int64, types.float64, types.float64, types.float64))(  # type: ignore[no-untyped-call]
    _I1, types.int64, types.int64, _F2, _F2, _F2, _F2, _F1, _F2, _F2, _B1, _B1, _F1,
    types.boolean, types.boolean, types.float64, types.float64, types.uint64, types.float64,
    _I1, _F2, _F2, _F1, _F2, _F2)
best_in_window: Callable[..., Best] = njit(_SIGNATURE, cache=True, nogil=True)(_best_in_window)
