"""The one fit function.

The rule is written once, in `short`. NumPy applies them to every node
at once in `fit_matrix`; commit-time validation calls that through `fit_columns`, one column
per decision of the batch, and node agent admission, migrations and volumes through `fits`,
one column; the scheduler's compiled decision loop (vdcos/scheduler/core/kernel.py) compiles
that same function for its scalars. So no two of them can disagree about what fits
(nomad#13017 is what happens when they do). It lives with the model, not the scheduler,
because every layer that admits something asks it (kube-scheduler exports Fits to the kubelet).

Two pools per node and dimension:
- physical: capacity. Guaranteed reservations must fit here.
- overcommitted: floor(capacity x ratio). Guaranteed + burstable requests must fit here.
Best-effort VMs reserve nothing but are only admitted where the overcommitted pool still
has room for their size, so they are the first to be refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vdcos.model import DIMENSIONS, Allocation, Overcommit, QosClass, Resources

F64 = NDArray[np.float64]
Mask = NDArray[np.bool_]

PHYSICAL = "physical"
OVERCOMMITTED = "overcommitted"


@dataclass(frozen=True, slots=True)
class Insufficient:
    dimension: str
    pool: str
    requested: int
    free: int


def short(free_physical: Any, free_over: Any, asked: Any, guaranteed: Any) -> Any:
    """The rule, for one dimension: asked for (a dimension at 0 is not asked for and never rules
    a node out) and more than the overcommitted pool has free or, for a guaranteed VM
    (`guaranteed`: a bool, or a mask broadcast over the nodes), than the physical pool has.
    Plain operators only: it takes NumPy arrays, broadcast, and scalars, and numba compiles it
    as it is. One pool alone is asked by giving the other infinite room."""
    return ((free_over < asked) | (guaranteed & (free_physical < asked))) & (asked > 0)


class FitResult:
    """`ok` (N,): the nodes the demand fits. The shortfalls, (D, N) masks per dimension, are
    worked out only when read (a refusal's explanation): a placement needs `ok` alone. They
    come from the arrays fit_matrix was given, so read them before those change."""

    __slots__ = ("ok", "_free_physical", "_free_over", "_demand", "_guaranteed")

    def __init__(self, ok: Mask, free_physical: F64, free_over: F64, demand: F64, guaranteed: bool | Mask) -> None:
        self.ok = ok
        self._free_physical, self._free_over, self._demand, self._guaranteed = (
            free_physical, free_over, demand, guaranteed)

    @property
    def short_overcommitted(self) -> Mask:
        return np.asarray(short(np.inf, self._free_over, self._demand, False))

    @property
    def short_physical(self) -> Mask:
        return np.asarray(short(self._free_physical, np.inf, self._demand, self._guaranteed))


def allocatable(capacity: F64, overcommit: Overcommit) -> F64:
    """Arrays are dimension-major, (D, N): per-dimension rows keep every op a contiguous vector."""
    return np.floor(capacity * np.asarray(overcommit.as_tuple(), dtype=np.float64)[:, None])


def fit_matrix(free_physical: F64, free_overcommitted: F64, demand: F64, qos_class: QosClass | Mask) -> FitResult:
    """free_* are (D, N): capacity - guaranteed, and allocatable - committed. demand is (D,),
    the same for every node, or (D, N), one per node; qos_class the same for every node, or a
    (N,) mask of the guaranteed ones. A dimension not asked for (0) never rules a node out."""
    d = demand[:, None] if demand.ndim == 1 else demand
    guaranteed = qos_class is QosClass.GUARANTEED if isinstance(qos_class, QosClass) else qos_class
    bad = short(free_physical, free_overcommitted, d, guaranteed).any(axis=0)
    return FitResult(np.asarray(~bad), free_physical, free_overcommitted, d, guaranteed)


def fit_columns(capacity: F64, overcommit: Overcommit, guaranteed: F64, committed: F64, demand: F64,
                qos_class: QosClass | Mask) -> FitResult:
    """Column j: does demand[:, j] fit a node of capacity[:, j] that holds guaranteed[:, j] and
    committed[:, j]? `fits` asks it of one node; commit validation of a whole batch at once."""
    return fit_matrix(capacity - guaranteed, allocatable(capacity, overcommit) - committed, demand, qos_class)


def demand_vector(reserved: Resources) -> F64:
    return np.asarray(reserved.as_tuple(), dtype=np.float64)


def fits(capacity: Resources, overcommit: Overcommit, allocation: Allocation,
         demand: Resources, qos_class: QosClass) -> list[Insufficient]:
    """Scalar form of `fit_matrix` for one node: empty list means it fits."""
    cap = demand_vector(capacity)[:, None]
    g, c = (np.asarray(t, dtype=np.float64)[:, None] for t in allocation.sums())
    d = demand_vector(demand)
    res = fit_columns(cap, overcommit, g, c, d, qos_class)
    if res.ok[0]:
        return []
    acap = allocatable(cap, overcommit)
    out: list[Insufficient] = []
    for j, dim in enumerate(DIMENSIONS):
        if res.short_physical[j, 0]:
            out.append(Insufficient(dim, PHYSICAL, int(d[j]), int(cap[j, 0] - g[j, 0])))
        if res.short_overcommitted[j, 0]:
            out.append(Insufficient(dim, OVERCOMMITTED, int(d[j]), int(acap[j, 0] - c[j, 0])))
    return out
