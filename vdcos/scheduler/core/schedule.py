"""The scheduling core: snapshot + request -> decision or rejection. Pure: no I/O.

Stages run in order (Nomad's feasible/stack, Nova's filters + weighers):
  filters, cheapest first, each a boolean mask over all nodes and counted for the rejection;
  scorers, each normalized to [0, 1] and multiplied by its configured weight;
  select, the best score, ties broken by a shuffle seeded from the request id.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from vdcos.model import DIMENSIONS, AffinityPolicy, PlacementGroup, QosClass, QosPolicy, Strategy
from vdcos.scheduler.core import qos
from vdcos.scheduler.core.fit import (F64, OVERCOMMITTED, PHYSICAL, FitResult, Mask,
                                      demand_vector, fit_matrix)
from vdcos.scheduler.core.result import (Candidate, Decision, DimensionShortfall, Explanation,
                                         FilterOutcome, PlacementRequest, Rejection)
from vdcos.scheduler.core.snapshot import ClusterSnapshot, ScoreTerms

TIE_EPSILON = 1e-9
NDArrayInt = np.ndarray


@dataclass(slots=True)
class _View:
    """The snapshot plus what earlier decisions of the same batch placed on it."""

    snap: ClusterSnapshot
    terms: ScoreTerms
    groups: dict[str, PlacementGroup]

    @classmethod
    def of(cls, snap: ClusterSnapshot) -> _View:
        return cls(snap, snap.score_terms, dict(snap.groups))

    @classmethod
    def private_copy(cls, snap: ClusterSnapshot) -> _View:
        return cls(snap, snap.score_terms.copy(), dict(snap.groups))

    def group_counts(self, name: str) -> F64:
        counts = np.zeros(self.snap.size)
        group = self.groups.get(name)
        if group is not None:
            for node, n in group.nodes().items():
                i = self.snap.index.get(node)
                if i is not None:
                    counts[i] = n
        return counts


@dataclass(frozen=True, slots=True)
class _Ask:
    request: PlacementRequest
    policy: QosPolicy
    # What the fit check uses: best-effort VMs need headroom for their size...
    fit_demand: F64
    # ...but reserve nothing.
    reserved: F64


Filter = Callable[[_View, _Ask], "tuple[Mask, str] | None"]


def _ready(v: _View, a: _Ask) -> tuple[Mask, str]:
    return v.snap.ready, "node agent lease expired (NotReady)"


def _schedulable(v: _View, a: _Ask) -> tuple[Mask, str]:
    return ~v.snap.cordoned, "node is cordoned"


def _node_selector(v: _View, a: _Ask) -> tuple[Mask, str] | None:
    sel = a.request.spec.node_selector
    if not sel:
        return None
    want = ",".join(f"{k}={val}" for k, val in sel)
    return v.snap.label_mask(sel), f"node labels do not match selector {want}"


def _avoid(v: _View, a: _Ask) -> tuple[Mask, str] | None:
    if not a.request.avoid:
        return None
    mask = np.ones(v.snap.size, dtype=bool)
    for node in a.request.avoid:
        i = v.snap.index.get(node)
        if i is not None:
            mask[i] = False
    return mask, "the VM runs there already"


def _pinned(v: _View, a: _Ask) -> tuple[Mask, str] | None:
    if not a.request.pinned:
        return None
    mask = np.zeros(v.snap.size, dtype=bool)
    i = v.snap.index.get(a.request.pinned)
    if i is not None:
        mask[i] = True
    return mask, a.request.pinned_because or f"the VM must run on {a.request.pinned}"


def _group(v: _View, a: _Ask) -> tuple[Mask, str] | None:
    spec = a.request.spec
    if not spec.placement_group or not spec.group_policy.hard:
        return None
    counts = v.group_counts(spec.placement_group)
    if spec.group_policy is AffinityPolicy.AFFINITY:
        if not counts.any():
            return None
        return counts > 0, f"hard affinity: group {spec.placement_group} runs on other nodes"
    return counts == 0, f"hard anti-affinity: node already runs a member of {spec.placement_group}"


# Cheap first; the resource fit runs last because its counts are the interesting ones.
# The node-state filters depend on the node only: the snapshot folds them into one
# `schedulable` mask for the success path; a refusal runs them one by one to count.
NODE_STATE_FILTERS: tuple[tuple[str, Filter], ...] = (
    ("node_ready", _ready),
    ("node_schedulable", _schedulable),
)
REQUEST_FILTERS: tuple[tuple[str, Filter], ...] = (
    ("avoid_nodes", _avoid),
    ("local_volumes", _pinned),
    ("node_selector", _node_selector),
    ("placement_group", _group),
)


def utilization_after(terms: ScoreTerms, demand: F64) -> F64:
    """Mean over requested dimensions of the overcommitted pool's fill after placing `demand`.
    Array in, array out (any number of dimensions): the capacity planner scores with it too."""
    wanted = demand > 0
    w = (wanted if wanted.any() else np.ones_like(wanted)).astype(np.float64)
    w /= w.sum()
    util = w @ terms.util + (w * demand) @ terms.inv
    return np.clip(util, 0.0, 1.0, out=util)


def alignment(terms: ScoreTerms, demand: F64) -> F64:
    """Cosine between the request and the node's free vector, both relative to the node's size
    (the dot-product heuristic of Panigrahy et al.): prefers nodes whose leftover shape the VM fills."""
    num = demand @ terms.grad
    den = np.sqrt(terms.free_sq * ((demand * demand) @ terms.inv_sq))
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return np.clip(out, 0.0, 1.0, out=out)


def _utilization_after(v: _View, a: _Ask) -> F64:
    return utilization_after(v.terms, a.fit_demand)


def _most_allocated(v: _View, a: _Ask) -> F64:
    return _utilization_after(v, a)


def _least_allocated(v: _View, a: _Ask) -> F64:
    return 1.0 - _utilization_after(v, a)


def _alignment(v: _View, a: _Ask) -> F64:
    return alignment(v.terms, a.fit_demand)


def _group_soft(v: _View, a: _Ask) -> F64 | None:
    spec = a.request.spec
    if not spec.placement_group or spec.group_policy.hard or spec.group_policy is AffinityPolicy.NONE:
        return None
    counts = v.group_counts(spec.placement_group)
    if spec.group_policy.attracts:
        return (counts > 0).astype(np.float64)
    top = counts.max() if counts.size else 0.0
    return 1.0 - counts / top if top > 0 else np.ones_like(counts)


# Scorers see every node (contiguous vectors beat gathers); infeasible ones are dropped after.
Scorer = Callable[[_View, _Ask], "F64 | None"]
SCORERS: dict[Strategy, tuple[tuple[str, Scorer], ...]] = {
    Strategy.PACK: (("most_allocated", _most_allocated), ("alignment", _alignment), ("group", _group_soft)),
    Strategy.SPREAD: (("least_allocated", _least_allocated), ("group", _group_soft)),
}


def normalize(s: F64) -> F64:
    """Min-max over the feasible nodes (Nova's weigher normalization): each scorer's weight then
    means the same thing whatever the spread of its raw values."""
    lo, hi = float(s.min()), float(s.max())
    if hi - lo < TIE_EPSILON:
        return np.zeros_like(s)
    return (s - lo) / (hi - lo)


def _seed(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def _ask(snap: ClusterSnapshot, request: PlacementRequest) -> _Ask | Rejection:
    spec = request.spec
    policy = snap.policy(spec.policy_name)
    if policy is None:
        return _never(snap, spec.name, f"QoS policy {spec.policy_name!r} does not exist")
    group = snap.groups.get(spec.placement_group) if spec.placement_group else None
    if group is not None and group.policy is not spec.group_policy:
        return _never(snap, spec.name, f"placement group {group.name!r} has policy "
                      f"{group.policy.value}, not {spec.group_policy.value}")
    fit = demand_vector(qos.request(spec, policy))
    return _Ask(request, policy, fit, demand_vector(qos.reservation(spec, policy)))


def _never(snap: ClusterSnapshot, vm: str, why: str) -> Rejection:
    return Rejection(vm, int(snap.present.sum()), 0, (), (), False, why)


def _evaluate(view: _View, ask: _Ask) -> tuple[F64, NDArrayInt, tuple[tuple[str, F64], ...]] | Rejection:
    """Scores of the feasible node indices, or why there are none.

    The success path combines the masks without counting; only a refusal pays for the
    per-filter counts of its explanation."""
    snap = view.snap
    alive = snap.schedulable
    for _, flt in REQUEST_FILTERS:
        res = flt(view, ask)
        if res is not None:
            alive = alive & res[0]
    t = view.terms
    fit = fit_matrix(t.free_physical, t.free_over, ask.fit_demand, ask.policy.qos_class)
    idx = np.flatnonzero(alive & fit.ok)
    if idx.size == 0:
        return _explain_refusal(view, ask, fit)
    parts: list[tuple[str, F64]] = []
    for name, scorer in SCORERS[snap.config.strategy]:
        s = scorer(view, ask)
        if s is not None:
            parts.append((name, normalize(s[idx])))
    if len(parts) == 1:
        return parts[0][1], idx, tuple(parts)
    weights = [snap.config.weight(n) for n, _ in parts]
    total = sum(w * s for w, (_, s) in zip(weights, parts)) / max(sum(weights), 1e-12)
    return np.asarray(total, dtype=np.float64), idx, tuple(parts)


def _explain_refusal(view: _View, ask: _Ask, fit: FitResult) -> Rejection:
    alive = view.snap.present.copy()
    outcomes: list[FilterOutcome] = []
    for name, flt in (*NODE_STATE_FILTERS, *REQUEST_FILTERS):
        res = flt(view, ask)
        if res is None:
            continue
        mask, reason = res
        ruled = int((alive & ~mask).sum())
        if ruled:
            outcomes.append(FilterOutcome(name, ruled, reason))
        alive &= mask
    ruled = int((alive & ~fit.ok).sum())
    if ruled:
        outcomes.append(FilterOutcome("resources", ruled, "not enough free capacity"))
    return _reject(view, ask, alive, fit.short_physical, fit.short_overcommitted, outcomes)


def _reject(view: _View, ask: _Ask, considered: Mask, short_phys: Mask, short_over: Mask,
            outcomes: list[FilterOutcome]) -> Rejection:
    snap = view.snap
    dims: list[DimensionShortfall] = []
    # What a node could actually give this VM: for a guaranteed VM, the smaller of both pools.
    free = view.terms.free_over
    if ask.policy.qos_class is QosClass.GUARANTEED:
        free = np.minimum(free, view.terms.free_physical)
    for pool, short in ((PHYSICAL, short_phys), (OVERCOMMITTED, short_over)):
        for j, dim in enumerate(DIMENSIONS):
            n_short = int((considered & short[j]).sum())
            if not n_short:
                continue
            col = np.where(considered, free[j], -np.inf)
            best = int(np.argmax(col))
            dims.append(DimensionShortfall(dim, pool, n_short, int(ask.fit_demand[j]),
                                           int(max(col[best], 0)), snap.names[best]))
    # Could it fit if every node came back, uncordoned and emptied? Then it is worth retrying.
    static = snap.present & _selector_mask(view, ask)
    for static_filter in (_avoid, _pinned):
        got = static_filter(view, ask)
        if got is not None:
            static &= got[0]
    fit_empty = fit_matrix(snap.capacity, snap.allocatable, ask.fit_demand, ask.policy.qos_class)
    retryable = bool((static & fit_empty.ok).any())
    total = int(snap.present.sum())
    parts = [f"{o.nodes_ruled_out} {o.reason}" for o in outcomes]
    parts += [f"{d.nodes_short} short of {d.dimension} ({d.pool}: requested {d.requested}, "
              f"largest free {d.largest_free} on {d.largest_free_node})" for d in dims]
    head = f"0/{total} nodes can host {ask.request.spec.name}"
    if not retryable:
        head += " and none ever could"
    summary = head + (": " + "; ".join(parts) if parts else "")
    return Rejection(ask.request.spec.name, total, 0, tuple(outcomes), tuple(dims), retryable, summary)


def _selector_mask(view: _View, ask: _Ask) -> Mask:
    sel = ask.request.spec.node_selector
    return view.snap.label_mask(sel) if sel else np.ones(view.snap.size, dtype=bool)


def _decide(view: _View, request: PlacementRequest) -> Decision | Rejection:
    ask = _ask(view.snap, request)
    if isinstance(ask, Rejection):
        return ask
    ev = _evaluate(view, ask)
    if isinstance(ev, Rejection):
        return ev
    total, idx, parts = ev
    best = total.max()
    ties = np.flatnonzero(total >= best - TIE_EPSILON)
    pick = int(ties[0]) if ties.size == 1 else int(
        ties[np.random.default_rng(_seed(request.seed_key)).integers(ties.size)])
    node_i = int(idx[pick])
    spec = request.spec
    return Decision(
        vm=spec.name, node=view.snap.names[node_i], node_index=node_i,
        qos=qos.resolve(spec, ask.policy), reserved=qos.reservation(spec, ask.policy),
        score=float(total[pick]), scores=tuple((n, float(s[pick])) for n, s in parts),
    )


def schedule(snapshot: ClusterSnapshot, request: PlacementRequest) -> Decision | Rejection:
    return _decide(_View.of(snapshot), request)


def schedule_batch(snapshot: ClusterSnapshot, requests: Sequence[PlacementRequest]) -> list[Decision | Rejection]:
    """Decide several requests in order, each seeing the ones before it; the snapshot is untouched."""
    view = _View.private_copy(snapshot)
    out: list[Decision | Rejection] = []
    for req in requests:
        d = _decide(view, req)
        out.append(d)
        if isinstance(d, Decision):
            _apply(view, req, d)
    return out


def _apply(view: _View, req: PlacementRequest, d: Decision) -> None:
    view.terms.place(d.node_index, demand_vector(d.reserved), d.qos.qos_class is QosClass.GUARANTEED,
                     d.qos.qos_class is not QosClass.BEST_EFFORT)
    spec = req.spec
    if spec.placement_group:
        g = view.groups.get(spec.placement_group) or PlacementGroup(spec.placement_group, spec.group_policy)
        view.groups[spec.placement_group] = PlacementGroup(g.name, g.policy, (*g.members, (spec.name, d.node)))


def explain(snapshot: ClusterSnapshot, request: PlacementRequest, limit: int = 10) -> Explanation:
    view = _View.of(snapshot)
    ask = _ask(snapshot, request)
    if isinstance(ask, Rejection):
        return Explanation(None, None, (), ask, snapshot.revision)
    ev = _evaluate(view, ask)
    if isinstance(ev, Rejection):
        return Explanation(ask.policy.qos_class, None, (), ev, snapshot.revision)
    total, idx, parts = ev
    order = np.argsort(-total, kind="stable")[: max(limit, 1)]
    cands = tuple(Candidate(snapshot.names[int(idx[k])], float(total[k]),
                            tuple((n, float(s[k])) for n, s in parts)) for k in order)
    decision = _decide(view, request)
    assert isinstance(decision, Decision)  # _evaluate found feasible nodes on this same view
    return Explanation(ask.policy.qos_class, decision, cands, None, snapshot.revision)
