"""The scheduling core: snapshot + request -> decision or rejection. Pure: no I/O.

Stages run in order (Nomad's feasible/stack, Nova's filters + weighers):
  window, on a large cluster a contiguous run of nodes at an offset seeded by the request id
    (kube-scheduler's percentageOfNodesToScore: the best of 500 random nodes is about as good
    as the best of 10,000, at a twentieth of the cost); with several scheduler replicas, the
    offset falls in the calling replica's lane of the node ring; every node when the window has
    no feasible one, so a request is refused only after every node was looked at;
  filters, cheapest first, each a boolean mask and counted for the rejection;
  scorers, each normalized to [0, 1] and multiplied by its configured weight;
  select, the best score, ties broken by a hash of the request id (replayable).

The functions below are the definition. A placement usually takes `_compiled` instead, the
same stages in one compiled loop (kernel.py), which gives the same decision to the bit; the
cases it does not cover (a soft placement group, a pinned VM, a refusal, explain) run here.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import numpy as np

from vdcos.model import DIMENSIONS, AffinityPolicy, PlacementGroup, QosClass, QosPolicy, Strategy, qos
from vdcos.model.fit import F64, OVERCOMMITTED, PHYSICAL, FitResult, Mask, demand_vector, fit_matrix
from vdcos.scheduler.core.result import (Candidate, Decision, DimensionShortfall, Explanation, FilterOutcome,
                                         PlacementRequest, Rejection)
from vdcos.scheduler.core.snapshot import ClusterSnapshot, Column, Floats, ScoreTerms

TIE_EPSILON = 1e-9
NDArrayInt = np.ndarray
Window = Union[slice, NDArrayInt]
ALL = slice(None)
MIN_NODES_TO_SCORE = 100


def nodes_to_score(n: int, percentage: int = 0) -> int:
    """How many nodes one decision scores (kube-scheduler's numFeasibleNodesToFind):
    `percentage` of them, or when 0 an adaptive share, 50% at 100 nodes down to 5% from
    5,625 nodes on; never fewer than 100."""
    if n <= MIN_NODES_TO_SCORE or percentage >= 100:
        return n
    pct = percentage if percentage > 0 else max(5, 50 - n // 125)
    return min(n, max(MIN_NODES_TO_SCORE, n * pct // 100))


@dataclass(frozen=True, slots=True)
class Lane:
    """Scheduler replica `index` of `count`: its windows lie in its own stretch of the node ring.
    Replicas deciding at once then mostly read and write different nodes, so their commits
    conflict less (pack sends every replica to the fullest nodes it sees). It only moves where a
    decision starts looking: a window without a feasible node still falls back to every node."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"lane {self.index} of {self.count}")


SOLO = Lane()


def window(n: int, k: int, seed: int, lane: Lane = SOLO) -> Window:
    """k consecutive node slots from an offset given by `seed` within `lane`'s stretch of the
    n slots, wrapping around inside it: every node of the lane is equally likely to be in it.
    A lane narrower than k gives the k slots from its start. A slice (no copy) unless it wraps."""
    if k >= n:
        return ALL
    lo, hi = n * lane.index // lane.count, n * (lane.index + 1) // lane.count
    if hi - lo > k:
        start = lo + seed % (hi - lo)
    else:
        start, lo, hi = lo, 0, n
    span = hi - lo
    if start + k <= hi:
        return slice(start, start + k)
    return lo + (start - lo + np.arange(k)) % span


_NO_SLOTS: NDArrayInt = np.empty(0, dtype=np.int64)
_NO_COLUMNS = (np.empty((len(DIMENSIONS), 0)), np.empty((len(DIMENSIONS), 0)), np.empty(0),
               np.empty((len(DIMENSIONS), 0)), np.empty((len(DIMENSIONS), 0)))
_NO_MASK: Mask = np.empty(0, dtype=bool)
_NO_INDEX: NDArrayInt = np.empty(0, dtype=np.int64)


@dataclass(slots=True)
class _View:
    """The snapshot plus what earlier decisions of the same batch placed on it: those nodes'
    columns are kept aside and patched into a copy of the window being scored, so a batch
    never copies (nor writes) the cluster-wide arrays."""

    snap: ClusterSnapshot
    terms: ScoreTerms  # the snapshot's: read only
    joined: dict[str, PlacementGroup]  # the groups earlier decisions of the batch joined, as they leave them
    placed: dict[int, Column]
    lane: Lane
    # `placed` again as the compiled path reads it: node i's column is slot slot_of[i] of the
    # arrays in `ov` (util, grad, free_sq, free_physical, free_over; (D, slots), free_sq (slots,)).
    slot_of: NDArrayInt = field(default_factory=lambda: _NO_SLOTS)
    ov: tuple[F64, F64, F64, F64, F64] = field(default_factory=lambda: _NO_COLUMNS)

    @classmethod
    def of(cls, snap: ClusterSnapshot, lane: Lane = SOLO) -> _View:
        return cls(snap, snap.score_terms, {}, {}, lane)

    def group(self, name: str) -> PlacementGroup | None:
        return self.joined.get(name) or self.snap.groups.get(name)

    def terms_of(self, w: Window) -> ScoreTerms:
        t = self.terms if w is ALL else self.terms.window(w)
        if not self.placed:
            return t
        if w is ALL:
            hits = list(self.placed.items())
        elif isinstance(w, slice):
            hits = [(i - w.start, c) for i, c in self.placed.items() if w.start <= i < w.stop]
        else:
            hits = [(int(pos), c) for i, c in self.placed.items() for pos in np.flatnonzero(w == i)]
        if not hits:
            return t
        t = t.copy()
        for pos, col in hits:
            t.set_column(pos, col)
        return t

    def place(self, i: int, reserved: Floats, guaranteed: bool, committed: bool) -> None:
        col = self.placed.get(i) or self.terms.column(i)
        col = self.placed[i] = self.terms.placed(i, col, reserved, guaranteed, committed)
        if self.slot_of is _NO_SLOTS:
            self.slot_of = np.full(self.snap.size, -1, dtype=np.int64)
        slot = int(self.slot_of[i])
        if slot < 0:
            slot = self.slot_of[i] = len(self.placed) - 1
            if slot >= self.ov[0].shape[-1]:  # room for twice as many columns
                grow = max(16, 2 * slot)
                self.ov = tuple(np.concatenate([a, np.empty((*a.shape[:-1], grow))], axis=-1)
                                for a in self.ov)  # type: ignore[assignment]
        util, grad, free_sq, physical, over = self.ov
        util[:, slot], grad[:, slot], free_sq[slot] = col.util, col.grad, col.free_sq
        physical[:, slot], over[:, slot] = col.free_physical, col.free_over

    def group_counts(self, name: str) -> F64:
        counts = np.zeros(self.snap.size)
        group = self.group(name)
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
    # What the fit check uses: best-effort VMs need headroom for their size (they reserve nothing).
    fit_demand: F64
    seed: int  # the request id's hash: where its window starts, and which of tied nodes wins


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
    util = _dot(w, terms.util) + _dot(w * demand, terms.inv)
    return _clip01(util)


def _dot(v: F64, m: F64) -> F64:
    """v @ m summed over the rows in order, one product at a time: `@` leaves the order (and
    fused multiply-adds) to BLAS, and the compiled path (kernel.py) must get the same bits."""
    out: F64 = v[0] * m[0]
    for d in range(1, v.shape[0]):
        out += v[d] * m[d]
    return out


def alignment(terms: ScoreTerms, demand: F64) -> F64:
    """Cosine between the request and the node's free vector, both relative to the node's size
    (the dot-product heuristic of Panigrahy et al.): prefers nodes whose leftover shape the VM fills."""
    num = _dot(demand, terms.grad)
    den = np.sqrt(terms.free_sq * _dot(demand * demand, terms.inv_sq))
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return _clip01(out)


def _clip01(a: F64) -> F64:
    """np.clip(a, 0, 1) in place, with the two ufuncs themselves: np.clip's dispatch costs more
    than the clipping on a window of nodes, twice a decision."""
    return np.minimum(np.maximum(a, 0.0, out=a), 1.0, out=a)


def _most_allocated(v: _View, a: _Ask, t: ScoreTerms, w: Window) -> F64:
    return utilization_after(t, a.fit_demand)


def _least_allocated(v: _View, a: _Ask, t: ScoreTerms, w: Window) -> F64:
    return 1.0 - utilization_after(t, a.fit_demand)


def _alignment(v: _View, a: _Ask, t: ScoreTerms, w: Window) -> F64:
    return alignment(t, a.fit_demand)


def _group_soft(v: _View, a: _Ask, t: ScoreTerms, w: Window) -> F64 | None:
    spec = a.request.spec
    if not spec.placement_group or spec.group_policy.hard or spec.group_policy is AffinityPolicy.NONE:
        return None
    counts = v.group_counts(spec.placement_group)[w]
    if spec.group_policy.attracts:
        return (counts > 0).astype(np.float64)
    top = counts.max() if counts.size else 0.0
    return 1.0 - counts / top if top > 0 else np.ones_like(counts)


# Scorers see every node of the window (contiguous vectors beat gathers) through `t`, the
# score terms of the window; infeasible nodes are dropped after.
Scorer = Callable[[_View, _Ask, ScoreTerms, Window], "F64 | None"]
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
    return _Ask(request, policy, fit, _seed(request.seed_key))


def _never(snap: ClusterSnapshot, vm: str, why: str) -> Rejection:
    return Rejection(vm, int(snap.present.sum()), 0, (), (), False, why)


@dataclass(frozen=True, slots=True)
class _Scored:
    total: F64  # combined score of each feasible node looked at
    idx: NDArrayInt  # their node indices
    parts: tuple[tuple[str, F64], ...]  # each scorer's normalized score
    looked_at: int  # nodes in the window, or every node when the window had no feasible one


def _evaluate(view: _View, ask: _Ask, w: Window = ALL) -> _Scored | Rejection:
    """Scores of the feasible nodes among window `w`, or why there are none.

    The success path combines the masks without counting; only a refusal pays for the
    per-filter counts of its explanation, and only after looking at every node."""
    snap = view.snap
    alive = snap.schedulable[w]
    for _, flt in REQUEST_FILTERS:
        res = flt(view, ask)
        if res is not None:
            alive = alive & res[0][w]
    t = view.terms_of(w)
    fit = fit_matrix(t.free_physical, t.free_over, ask.fit_demand, ask.policy.qos_class)
    local = np.flatnonzero(alive & fit.ok)
    if local.size == 0:
        return _evaluate(view, ask) if w is not ALL else _explain_refusal(view, ask, fit)
    if w is ALL:
        idx, looked_at = local, snap.size
    elif isinstance(w, slice):
        idx, looked_at = local + w.start, w.stop - w.start
    else:
        idx, looked_at = w[local], w.size
    parts: list[tuple[str, F64]] = []
    for name, scorer in SCORERS[snap.config.strategy]:
        s = scorer(view, ask, t, w)
        if s is not None:
            parts.append((name, normalize(s[local])))
    if len(parts) == 1:
        return _Scored(parts[0][1], idx, tuple(parts), looked_at)
    weights = [snap.config.weight(n) for n, _ in parts]
    total = sum(wt * s for wt, (_, s) in zip(weights, parts)) / max(sum(weights), 1e-12)
    return _Scored(np.asarray(total, dtype=np.float64), idx, tuple(parts), looked_at)


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
    t = view.terms_of(ALL)
    free = t.free_over
    if ask.policy.qos_class is QosClass.GUARANTEED:
        free = np.minimum(free, t.free_physical)
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


def _window(view: _View, ask: _Ask) -> Window:
    snap = view.snap
    # A VM pinned to one node (its local volumes) looks at every node: a window would miss it.
    return ALL if ask.request.pinned else window(
        snap.size, nodes_to_score(snap.size, snap.config.percentage_of_nodes_to_score), ask.seed, view.lane)


def _score(view: _View, ask: _Ask) -> _Scored | Rejection:
    return _evaluate(view, ask, _window(view, ask))


def _pick(view: _View, ask: _Ask, sc: _Scored) -> Decision:
    best = sc.total.max()
    ties = np.flatnonzero(sc.total >= best - TIE_EPSILON)
    # The seed is a hash of the request id: its residue is as good a draw as an RNG's, for less.
    pick = int(ties[0]) if ties.size == 1 else int(ties[ask.seed % ties.size])
    return _decision(view, ask, int(sc.idx[pick]), float(sc.total[pick]),
                     tuple((n, float(s[pick])) for n, s in sc.parts))


def _decision(view: _View, ask: _Ask, node_i: int, score: float, scores: tuple[tuple[str, float], ...]) -> Decision:
    spec = ask.request.spec
    return Decision(
        vm=spec.name, node=view.snap.names[node_i], node_index=node_i,
        qos=qos.resolve(spec, ask.policy), reserved=qos.reservation(spec, ask.policy),
        score=score, scores=scores,
    )


def _decide(view: _View, request: PlacementRequest) -> Decision | Rejection:
    ask = _ask(view.snap, request)
    if isinstance(ask, Rejection):
        return ask
    fast = _compiled(view, ask) if COMPILED else None
    if fast is not None:
        return fast
    sc = _score(view, ask)
    return sc if isinstance(sc, Rejection) else _pick(view, ask, sc)


# The compiled success path (kernel.py); False runs every decision the NumPy way (tests compare).
COMPILED = True


def _compiled(view: _View, ask: _Ask) -> Decision | None:
    """`_score` + `_pick` in one compiled pass when the request needs only what it covers: the
    strategy's resource scorers (no soft group scorer), and a feasible node."""
    # Imported here: node agents use the fit function (vdcos/model/fit.py), not the compiled loop,
    # and need not load numba (a third of a second at each start).
    from vdcos.scheduler.core.kernel import best_in_window
    snap, request = view.snap, ask.request
    spec = request.spec
    if request.pinned or (spec.placement_group and not spec.group_policy.hard
                          and spec.group_policy is not AffinityPolicy.NONE):
        return None
    mask = _NO_MASK
    for _, flt in REQUEST_FILTERS:
        res = flt(view, ask)
        if res is not None:
            mask = res[0] if mask is _NO_MASK else mask & res[0]
    pack = snap.config.strategy is Strategy.PACK
    # the strategy's scorers but the group one, which only a soft group (not here) brings
    names = tuple(name for name, _ in SCORERS[snap.config.strategy] if name != "group")
    t = view.terms
    util, grad, free_sq, physical, over = view.ov
    w = _window(view, ask)
    # the window, then (like _evaluate) every node; when none is feasible the NumPy path explains why
    for w in (w, ALL) if w is not ALL else (ALL,):
        if w is ALL:
            widx, start, k = _NO_INDEX, 0, snap.size
        elif isinstance(w, slice):
            widx, start, k = _NO_INDEX, w.start, w.stop - w.start
        else:
            widx, start, k = w, 0, 0
        node, total, first, second = best_in_window(
            widx, start, k, t.util, t.inv, t.grad, t.inv_sq, t.free_sq, t.free_physical, t.free_over,
            snap.schedulable, mask, ask.fit_demand, ask.policy.qos_class is QosClass.GUARANTEED, pack,
            snap.config.weight(names[0]), snap.config.weight(names[-1]), np.uint64(ask.seed), TIE_EPSILON,
            view.slot_of, util, grad, free_sq, physical, over)
        if node >= 0:
            break
    else:
        return None
    return _decision(view, ask, int(node), float(total), tuple(zip(names, (float(first), float(second)))))


def schedule(snapshot: ClusterSnapshot, request: PlacementRequest, lane: Lane = SOLO) -> Decision | Rejection:
    return _decide(_View.of(snapshot, lane), request)


def schedule_batch(snapshot: ClusterSnapshot, requests: Sequence[PlacementRequest],
                   lane: Lane = SOLO) -> list[Decision | Rejection]:
    """Decide several requests in order, each seeing the ones before it; the snapshot is untouched."""
    view = _View.of(snapshot, lane)
    out: list[Decision | Rejection] = []
    for req in requests:
        d = _decide(view, req)
        out.append(d)
        if isinstance(d, Decision):
            _apply(view, req, d)
    return out


def _apply(view: _View, req: PlacementRequest, d: Decision) -> None:
    view.place(d.node_index, d.reserved.as_tuple(), d.qos.qos_class is QosClass.GUARANTEED,
               d.qos.qos_class is not QosClass.BEST_EFFORT)
    spec = req.spec
    if spec.placement_group:
        g = view.group(spec.placement_group) or PlacementGroup(spec.placement_group, spec.group_policy)
        view.joined[spec.placement_group] = PlacementGroup(g.name, g.policy, (*g.members, (spec.name, d.node)))


def explain(snapshot: ClusterSnapshot, request: PlacementRequest, limit: int = 10,
            lane: Lane = SOLO) -> Explanation:
    """The decision a placement would make now, and the nodes it compared, best first."""
    view = _View.of(snapshot, lane)
    ask = _ask(snapshot, request)
    if isinstance(ask, Rejection):
        return Explanation(None, None, (), ask, snapshot.revision, 0, snapshot.size)
    sc = _score(view, ask)
    if isinstance(sc, Rejection):
        return Explanation(ask.policy.qos_class, None, (), sc, snapshot.revision, snapshot.size, snapshot.size)
    order = np.argsort(-sc.total, kind="stable")[: max(limit, 1)]
    cands = tuple(Candidate(snapshot.names[int(sc.idx[k])], float(sc.total[k]),
                            tuple((n, float(s[k])) for n, s in sc.parts)) for k in order)
    return Explanation(ask.policy.qos_class, _pick(view, ask, sc), cands, None, snapshot.revision, sc.looked_at,
                       snapshot.size)
