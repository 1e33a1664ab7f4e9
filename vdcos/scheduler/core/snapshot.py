"""An immutable view of the cluster that the scheduling core plans against."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from vdcos.model import DIMENSIONS, Allocation, NodeSpec, PlacementGroup, QosPolicy, SchedulerConfig, policy_named
from vdcos.model.fit import F64, Mask, allocatable, demand_vector

Floats = tuple[float, ...]


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """Column i of every (D, N) array and entry i of every mask describe node names[i].
    Arrays are read-only."""

    revision: int
    names: tuple[str, ...]
    capacity: F64  # (D, N) physical
    allocatable: F64  # (D, N) capacity x overcommit
    guaranteed: F64  # (D, N) sum of guaranteed reservations
    committed: F64  # (D, N) sum of guaranteed + burstable requests
    present: Mask  # slot holds a registered node
    ready: Mask  # agent lease alive
    cordoned: Mask
    label_index: Mapping[tuple[str, str], frozenset[int]]
    policies: Mapping[str, QosPolicy]
    groups: Mapping[str, PlacementGroup]
    config: SchedulerConfig
    index: Mapping[str, int] = field(default_factory=dict)
    # Derived from the arrays above (see `derive`), kept so a decision is a few mat-vecs.
    terms: ScoreTerms | None = None

    @property
    def score_terms(self) -> ScoreTerms:
        if self.terms is not None:
            return self.terms
        return derive(self.capacity, self.allocatable, self.guaranteed, self.committed,
                      self.present & self.ready & ~self.cordoned)

    @property
    def schedulable(self) -> Mask:
        """Registered, ready and not cordoned: the cheap filters in one mask."""
        return self.score_terms.schedulable

    @property
    def size(self) -> int:
        return len(self.names)

    def policy(self, name: str) -> QosPolicy | None:
        return policy_named(name, self.policies.get(name))

    def label_mask(self, selector: tuple[tuple[str, str], ...]) -> Mask:
        mask = np.ones(self.size, dtype=bool)
        for pair in selector:
            sel = np.zeros(self.size, dtype=bool)
            idx = self.label_index.get(pair, frozenset())
            if idx:
                sel[np.fromiter(idx, dtype=np.int64)] = True
            mask &= sel
        return mask


def build_snapshot(
    nodes: list[NodeSpec],
    allocations: Mapping[str, Allocation] | None = None,
    *,
    ready: set[str] | None = None,
    cordoned: set[str] | None = None,
    policies: Mapping[str, QosPolicy] | None = None,
    groups: Mapping[str, PlacementGroup] | None = None,
    config: SchedulerConfig | None = None,
    revision: int = 0,
) -> ClusterSnapshot:
    """Snapshot from plain records: for tests, the planner and explain replays."""
    config = config or SchedulerConfig()
    allocations = allocations or {}
    n = len(nodes)
    cap = np.array([demand_vector(s.capacity) for s in nodes], dtype=np.float64).reshape(n, len(DIMENSIONS)).T.copy()
    g = np.zeros((len(DIMENSIONS), n))
    c = np.zeros((len(DIMENSIONS), n))
    labels: dict[tuple[str, str], set[int]] = {}
    for i, spec in enumerate(nodes):
        a = allocations.get(spec.name)
        if a is not None:
            g[:, i], c[:, i] = a.sums()
        for pair in spec.labels:
            labels.setdefault(pair, set()).add(i)
    names = tuple(s.name for s in nodes)
    ready_mask = np.array([ready is None or s.name in ready for s in nodes], dtype=bool)
    cordon_mask = np.array([bool(cordoned) and s.name in (cordoned or ()) for s in nodes], dtype=bool)
    acap = allocatable(cap, config.overcommit)
    present = np.ones(n, dtype=bool)
    for arr in (cap, acap, g, c, present, ready_mask, cordon_mask):
        arr.flags.writeable = False
    return ClusterSnapshot(
        revision=revision, names=names, capacity=cap, allocatable=acap, guaranteed=g, committed=c,
        present=present, ready=ready_mask, cordoned=cordon_mask,
        label_index={k: frozenset(v) for k, v in labels.items()},
        policies=dict(policies or {}), groups=dict(groups or {}), config=config,
        index={name: i for i, name in enumerate(names)},
        terms=derive(cap, acap, g, c, present & ready_mask & ~cordon_mask).frozen(),
    )

@dataclass(frozen=True, slots=True)
class ScoreTerms:
    """Per-node quantities derived once per snapshot, so a decision is a few vector ops
    ((D, N) unless noted; d is the request vector):

    free_physical = capacity - guaranteed       -> guaranteed fit
    free_over = allocatable - committed         -> burstable / best-effort fit
    util = committed / allocatable              -> fill after placing d: util + d * inv
    grad = (1 - util) * inv                     -> alignment numerator: d . grad
    inv, inv_sq = 1 / allocatable, squared      -> |d / allocatable|^2 = d^2 . inv_sq
    free_sq (N,) = |1 - util|^2                 -> alignment denominator
    schedulable (N,) = present & ready & not cordoned
    """

    inv: F64
    inv_sq: F64
    util: F64
    grad: F64
    free_sq: F64
    free_physical: F64
    free_over: F64
    schedulable: Mask

    def frozen(self) -> ScoreTerms:
        for arr in (self.inv, self.inv_sq, self.util, self.grad, self.free_sq, self.free_physical,
                    self.free_over, self.schedulable):
            arr.flags.writeable = False
        return self

    def window(self, w: slice | np.ndarray) -> ScoreTerms:
        """The terms of the nodes in `w` (views for a slice, copies for an index array)."""
        return ScoreTerms(self.inv[:, w], self.inv_sq[:, w], self.util[:, w], self.grad[:, w], self.free_sq[w],
                          self.free_physical[:, w], self.free_over[:, w], self.schedulable[w])

    def copy(self) -> ScoreTerms:
        """A private copy of what placements change."""
        return ScoreTerms(self.inv, self.inv_sq, self.util.copy(), self.grad.copy(), self.free_sq.copy(),
                          self.free_physical.copy(), self.free_over.copy(), self.schedulable)

    def column(self, i: int) -> Column:
        return Column(tuple(self.util[:, i].tolist()), tuple(self.grad[:, i].tolist()), float(self.free_sq[i]),
                      tuple(self.free_physical[:, i].tolist()), tuple(self.free_over[:, i].tolist()))

    def placed(self, i: int, col: Column, reserved: Floats, guaranteed: bool, committed: bool) -> Column:
        """Node i's column `col` after one more placement of `reserved` on it, in plain floats (a
        batch places dozens, each a handful of numbers)."""
        fp = tuple(x - r for x, r in zip(col.free_physical, reserved)) if guaranteed else col.free_physical
        if not committed:
            return Column(col.util, col.grad, col.free_sq, fp, col.free_over)
        inv = self.inv[:, i].tolist()
        util = tuple(u + r * v for u, r, v in zip(col.util, reserved, inv))
        grad, free_sq = free_terms(util, inv)
        return Column(util, grad, free_sq, fp, tuple(x - r for x, r in zip(col.free_over, reserved)))

    def set_column(self, pos: int, col: Column) -> None:
        """Only on a private copy."""
        self.util[:, pos], self.grad[:, pos], self.free_sq[pos] = col.util, col.grad, col.free_sq
        self.free_physical[:, pos], self.free_over[:, pos] = col.free_physical, col.free_over


@dataclass(frozen=True, slots=True)
class Column:
    """The terms of one node that placements change (see ScoreTerms)."""

    util: Floats
    grad: Floats
    free_sq: float
    free_physical: Floats
    free_over: Floats


def free_terms(util: Sequence[float], inv: Sequence[float]) -> tuple[Floats, float]:
    """grad and free_sq of one node (see ScoreTerms) from its util and inv, in plain floats:
    the same IEEE operations as `derive` on its arrays, |free|^2 summed in dimension order as
    `derive` sums it, so the same bits."""
    free = [1.0 - u if v > 0 else 0.0 for u, v in zip(util, inv)]
    free_sq = 0.0
    for f in free:
        free_sq += f * f
    return tuple(f * v for f, v in zip(free, inv)), free_sq


def derive(capacity: F64, alloc_cap: F64, guaranteed: F64, committed: F64, schedulable: Mask) -> ScoreTerms:
    inv = np.zeros_like(alloc_cap)
    np.divide(1.0, alloc_cap, out=inv, where=alloc_cap > 0)
    util = committed * inv
    free = np.where(alloc_cap > 0, 1.0 - util, 0.0)
    return ScoreTerms(inv, inv * inv, util, free * inv, (free * free).sum(axis=0),
                      capacity - guaranteed, alloc_cap - committed, schedulable)
