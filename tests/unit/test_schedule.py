"""The pure scheduling core: stages, strategies, explanations, determinism."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vdcos.model import (AffinityPolicy, AllocEntry, Allocation, NodeSpec, PlacementGroup, QosClass,
                         QosPolicy, Resources, SchedulerConfig, Strategy, VmSpec, pairs)
from vdcos.model.qos import reservation, resolve
from vdcos.scheduler.core import (Decision, Lane, PlacementRequest, Rejection, build_snapshot, explain, schedule,
                                  schedule_batch)
from vdcos.scheduler.core.schedule import nodes_to_score, window

CAP = Resources(16, 65536, 1000, 10000)
GOLD = QosPolicy("gold", QosClass.GUARANTEED, cpu_weight=200)
BRONZE = QosPolicy("bronze", QosClass.BEST_EFFORT)
POLICIES = {"gold": GOLD, "bronze": BRONZE}


def nodes(n: int, labels: dict[int, dict[str, str]] | None = None) -> list[NodeSpec]:
    return [NodeSpec(f"n{i}", CAP, pairs((labels or {}).get(i, {}))) for i in range(n)]


def vm(name: str, vcpus: int = 2, mem: int = 4096, **kw: object) -> PlacementRequest:
    return PlacementRequest(VmSpec(name, Resources(vcpus, mem, 10, 100), **kw))  # type: ignore[arg-type]


def used(node: str, *entries: tuple[str, QosClass, Resources]) -> Allocation:
    return Allocation(node, tuple(AllocEntry(v, c, r) for v, c, r in entries))


def test_pack_prefers_the_fuller_node() -> None:
    snap = build_snapshot(nodes(3), {"n1": used("n1", ("a", QosClass.BURSTABLE, Resources(8, 32768)))})
    d = schedule(snap, vm("x"))
    assert isinstance(d, Decision) and d.node == "n1"


def test_spread_prefers_the_emptier_node() -> None:
    cfg = SchedulerConfig(strategy=Strategy.SPREAD)
    allocs = {f"n{i}": used(f"n{i}", ("a", QosClass.BURSTABLE, Resources(8, 32768))) for i in (0, 1)}
    d = schedule(build_snapshot(nodes(3), allocs, config=cfg), vm("x"))
    assert isinstance(d, Decision) and d.node == "n2"


def test_alignment_fills_the_complementary_shape() -> None:
    # n0 has spare CPU, n1 spare memory: a memory-heavy VM goes where memory is free.
    allocs = {"n0": used("n0", ("a", QosClass.BURSTABLE, Resources(4, 57344))),
              "n1": used("n1", ("b", QosClass.BURSTABLE, Resources(56, 8192)))}
    d = schedule(build_snapshot(nodes(2), allocs), vm("x", vcpus=1, mem=32768))
    assert isinstance(d, Decision) and d.node == "n1"


def test_ties_are_broken_by_the_request_id_and_replayable() -> None:
    snap = build_snapshot(nodes(50))
    picks = {schedule(snap, PlacementRequest(vm("x").spec, f"req-{i}")).node for i in range(20)}  # type: ignore[union-attr]
    assert len(picks) > 5, "different request ids should spread over tied nodes"
    again = [schedule(snap, PlacementRequest(vm("x").spec, "req-7")) for _ in range(3)]
    assert len({d.node for d in again}) == 1  # type: ignore[union-attr]


def test_node_selector_and_rejection_counts() -> None:
    snap = build_snapshot(nodes(4, {0: {"rack": "a"}, 1: {"rack": "b"}}))
    d = schedule(snap, vm("x", node_selector=pairs({"rack": "b"})))
    assert isinstance(d, Decision) and d.node == "n1"
    r = schedule(snap, vm("y", node_selector=pairs({"rack": "z"})))
    assert isinstance(r, Rejection) and not r.retryable
    assert [(f.filter, f.nodes_ruled_out) for f in r.filters] == [("node_selector", 4)]


def test_not_ready_and_cordoned_nodes_are_filtered_but_retryable() -> None:
    snap = build_snapshot(nodes(3), ready={"n0", "n1"}, cordoned={"n1"})
    d = schedule(snap, vm("x"))
    assert isinstance(d, Decision) and d.node == "n0"
    snap = build_snapshot(nodes(2), ready={"n1"}, cordoned={"n1"})
    r = schedule(snap, vm("x"))
    assert isinstance(r, Rejection) and r.retryable
    assert {f.filter: f.nodes_ruled_out for f in r.filters} == {"node_ready": 1, "node_schedulable": 1}


def test_resource_rejection_names_dimension_pool_and_largest_free() -> None:
    allocs = {"n0": used("n0", ("a", QosClass.GUARANTEED, Resources(12, 1024))),
              "n1": used("n1", ("b", QosClass.GUARANTEED, Resources(10, 1024)))}
    r = schedule(build_snapshot(nodes(2), allocs, policies=POLICIES), vm("x", vcpus=8, qos_policy="gold"))
    assert isinstance(r, Rejection) and r.retryable
    (dim,) = r.dimensions
    assert (dim.dimension, dim.pool, dim.nodes_short, dim.requested, dim.largest_free, dim.largest_free_node) == \
        ("vcpus", "physical", 2, 8, 6, "n1")
    assert "largest free 6 on n1" in r.summary


def test_largest_free_is_what_a_node_could_really_give() -> None:
    # n0: physical room, overcommitted pool full of burstable; n1: a little of both.
    allocs = {"n0": used("n0", ("a", QosClass.BURSTABLE, Resources(1, 60000))),
              "n1": used("n1", ("b", QosClass.GUARANTEED, Resources(1, 50000)))}
    r = schedule(build_snapshot(nodes(2), allocs, policies=POLICIES), vm("x", mem=20000, qos_policy="gold"))
    assert isinstance(r, Rejection)
    assert {(d.pool, d.largest_free, d.largest_free_node) for d in r.dimensions} == {
        ("physical", 15536, "n1"), ("overcommitted", 15536, "n1")}


def test_never_schedulable_when_bigger_than_any_node() -> None:
    r = schedule(build_snapshot(nodes(3), policies=POLICIES), vm("x", vcpus=17, qos_policy="gold"))
    assert isinstance(r, Rejection) and not r.retryable and "none ever could" in r.summary


def test_unknown_policy_is_never_schedulable() -> None:
    r = schedule(build_snapshot(nodes(1)), vm("x", qos_policy="nope"))
    assert isinstance(r, Rejection) and not r.retryable and "nope" in r.summary


@pytest.mark.parametrize("policy,expected", [
    (AffinityPolicy.ANTI_AFFINITY, {"n0", "n1", "n2"}),
    (AffinityPolicy.AFFINITY, {"n1"}),
], ids=["anti-affinity", "affinity"])
def test_hard_group_rules_in_a_batch(policy: AffinityPolicy, expected: set[str]) -> None:
    snap = build_snapshot(nodes(3), {"n1": used("n1", ("z", QosClass.BURSTABLE, Resources(8, 8192)))})
    reqs = [vm(f"g{i}", placement_group="g", group_policy=policy) for i in range(3)]
    out = schedule_batch(snap, reqs)
    assert all(isinstance(d, Decision) for d in out)
    assert {d.node for d in out} == expected  # type: ignore[union-attr]
    extra = schedule_batch(snap, [*reqs, vm("g3", placement_group="g", group_policy=policy)])[-1]
    if policy is AffinityPolicy.ANTI_AFFINITY:
        assert isinstance(extra, Rejection) and extra.filters[0].filter == "placement_group"


def test_soft_anti_affinity_spreads_but_does_not_refuse() -> None:
    snap = build_snapshot(nodes(2))
    out = schedule_batch(snap, [vm(f"s{i}", placement_group="s", group_policy=AffinityPolicy.SOFT_ANTI_AFFINITY)
                                for i in range(3)])
    assert [isinstance(d, Decision) for d in out] == [True] * 3
    assert {out[0].node, out[1].node} == {"n0", "n1"}  # type: ignore[union-attr]


def test_group_policy_mismatch_is_refused() -> None:
    groups = {"g": PlacementGroup("g", AffinityPolicy.AFFINITY, (("a", "n0"),))}
    r = schedule(build_snapshot(nodes(2), groups=groups),
                 vm("x", placement_group="g", group_policy=AffinityPolicy.ANTI_AFFINITY))
    assert isinstance(r, Rejection) and not r.retryable


def test_batch_sees_its_own_decisions_and_leaves_the_snapshot_alone() -> None:
    snap = build_snapshot(nodes(1), policies=POLICIES)
    before = snap.guaranteed.copy()
    out = schedule_batch(snap, [vm(f"v{i}", vcpus=8, qos_policy="gold") for i in range(3)])
    assert [type(d).__name__ for d in out] == ["Decision", "Decision", "Rejection"]
    assert (snap.guaranteed == before).all()


def test_best_effort_reserves_nothing() -> None:
    snap = build_snapshot(nodes(1), policies=POLICIES)
    out = schedule_batch(snap, [vm(f"b{i}", vcpus=16, mem=65536, qos_policy="bronze") for i in range(5)])
    assert all(isinstance(d, Decision) and d.reserved == Resources() for d in out)
    assert out[0].qos.cpu_shares == 2  # type: ignore[union-attr]


def test_explain_ranks_candidates_without_changing_anything() -> None:
    snap = build_snapshot(nodes(5), {"n3": used("n3", ("a", QosClass.BURSTABLE, Resources(8, 8192)))})
    ex = explain(snap, vm("x"), limit=3)
    assert ex.decision is not None and ex.decision.node == "n3"
    assert [c.node for c in ex.candidates][0] == "n3" and len(ex.candidates) == 3
    assert ex.candidates[0].score >= ex.candidates[1].score
    assert dict(ex.candidates[0].scores).keys() == {"most_allocated", "alignment"}


@pytest.mark.parametrize("policy,vcpus,shares,quota,mem_limit", [
    (QosPolicy("g", QosClass.GUARANTEED, cpu_weight=200), 2, 4096, 200_000, 4096),
    (QosPolicy("b", QosClass.BURSTABLE, cpu_limit_percent=50, memory_limit_ratio=1.5), 4, 4096, 200_000, 6144),
    (QosPolicy("b2", QosClass.BURSTABLE), 1, 1024, 0, 4096),
    (QosPolicy("be", QosClass.BEST_EFFORT), 8, 2, 0, 4096),
], ids=["guaranteed", "burstable-limited", "burstable-unlimited", "best-effort"])
def test_qos_resolution(policy: QosPolicy, vcpus: int, shares: int, quota: int, mem_limit: int) -> None:
    q = resolve(VmSpec("x", Resources(vcpus, 4096)), policy)
    assert (q.cpu_shares, q.cpu_quota_us, q.memory_limit_mib) == (shares, quota, mem_limit)


@pytest.mark.parametrize("policy,asked,reserved,limit", [
    (QosPolicy("g", QosClass.GUARANTEED, disk_iops_reservation=500), 0, 500, 500),
    (QosPolicy("g2", QosClass.GUARANTEED, disk_iops_reservation=500, disk_iops_limit=800), 700, 700, 800),
    (QosPolicy("b", QosClass.BURSTABLE, disk_iops_reservation=500, disk_iops_limit=2000), 0, 500, 2000),
    (QosPolicy("b2", QosClass.BURSTABLE, disk_iops_reservation=500), 0, 500, 0),
    (QosPolicy("be", QosClass.BEST_EFFORT, disk_iops_limit=100), 300, 0, 100),
], ids=["guaranteed-capped-at-reservation", "guaranteed-asks-more", "burstable-limited", "burstable-unlimited",
        "best-effort"])
def test_iops_reservation_comes_from_the_policy(policy: QosPolicy, asked: int, reserved: int, limit: int) -> None:
    spec = VmSpec("x", Resources(1, 1024, disk_iops=asked))
    assert reservation(spec, policy).disk_iops == reserved
    assert resolve(spec, policy).disk_iops_limit == limit


def test_iops_is_a_dimension_a_refusal_names() -> None:
    snap = build_snapshot([NodeSpec(f"n{i}", Resources(16, 65536, 1000, 10000, 1000)) for i in range(2)],
                          {"n0": used("n0", ("a", QosClass.GUARANTEED, Resources(1, 1024, disk_iops=800)))},
                          policies={"db": QosPolicy("db", QosClass.GUARANTEED, disk_iops_reservation=600)})
    first = schedule(snap, PlacementRequest(VmSpec("x", Resources(1, 1024), qos_policy="db")))
    assert isinstance(first, Decision) and first.node == "n1" and first.reserved.disk_iops == 600
    rej = schedule(snap, PlacementRequest(VmSpec("y", Resources(1, 1024, disk_iops=1200), qos_policy="db")))
    assert isinstance(rej, Rejection) and not rej.retryable
    assert [(d.dimension, d.requested) for d in rej.dimensions] == [("disk_iops", 1200)] * len(rej.dimensions)


def test_snapshot_arrays_are_read_only() -> None:
    snap = build_snapshot(nodes(2))
    with pytest.raises(ValueError):
        snap.committed[0, 0] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.revision = 3  # type: ignore[misc]


@pytest.mark.parametrize("n, percentage, expected", [
    (50, 0, 50),          # small clusters: every node
    (100, 0, 100),
    (1000, 0, 420),       # adaptive: 50 - 1000/125 = 42%
    (10000, 0, 500),      # adaptive floor: 5%
    (10000, 10, 1000),
    (10000, 100, 10000),
    (300, 5, 100),        # never fewer than 100 nodes
])
def test_nodes_to_score(n: int, percentage: int, expected: int) -> None:
    assert nodes_to_score(n, percentage) == expected


def test_window_is_seeded_wraps_and_covers_every_node() -> None:
    n, k = 1000, 100
    seen = np.zeros(n, dtype=int)
    for seed in range(n):
        w = window(n, k, seed)
        seen[np.arange(n)[w]] += 1
    assert (seen == k).all()  # every node is in exactly k of the n windows: no edge is favoured
    assert window(n, n, 5) == slice(None)


@pytest.mark.parametrize("n, k, count", [(1000, 100, 2), (1000, 100, 3), (10000, 500, 4), (1001, 100, 7)])
def test_a_lane_covers_its_own_stretch_evenly_and_only_it(n: int, k: int, count: int) -> None:
    ring = np.arange(n)
    for i in range(count):
        lo, hi = n * i // count, n * (i + 1) // count
        seen = np.zeros(n, dtype=int)
        for seed in range(hi - lo):
            w = ring[window(n, k, seed, Lane(i, count))]
            assert w.size == k and np.unique(w).size == k
            seen[w] += 1
        assert (seen[lo:hi] == k).all() and seen.sum() == k * (hi - lo)  # evenly, and nothing outside
    assert window(n, k, 3, Lane(0, 1)) == window(n, k, 3)  # one replica: the ring as before


def test_a_lane_narrower_than_a_window_gives_the_window_from_its_start() -> None:
    n, k = 1000, 300
    w = np.arange(n)[window(n, k, 12345, Lane(3, 4))]
    assert list(w[:3]) == [750, 751, 752] and w.size == k and w[-1] == (750 + k - 1) % n
    with pytest.raises(ValueError):
        Lane(2, 2)


def test_replicas_in_different_lanes_pack_different_nodes_and_refusals_still_see_every_node() -> None:
    specs = nodes(2000)
    snap = build_snapshot(specs)
    reqs = [PlacementRequest(vm(f"v{i}").spec, f"r{i}") for i in range(40)]
    halves = [{d.node for d in schedule_batch(snap, reqs, Lane(i, 2)) if isinstance(d, Decision)} for i in (0, 1)]
    assert all(snap.index[n] < 1000 for n in halves[0]) and all(snap.index[n] >= 1000 for n in halves[1])
    # Only one node has room: a request in the other lane still finds it.
    full = Resources(15, 65536 - 1024)
    last = snap.names[1999]
    allocs = {n: used(n, ("a", QosClass.BURSTABLE, full)) for n in snap.names if n != last}
    d = schedule(build_snapshot(specs, allocs), vm("big", vcpus=8, mem=8192), Lane(0, 2))
    assert isinstance(d, Decision) and d.node == last


def test_large_cluster_scores_a_window_but_finds_the_only_node_that_fits() -> None:
    specs = nodes(2000)
    full = Resources(15, 65536 - 1024)
    allocs = {f"n{i}": used(f"n{i}", ("a", QosClass.BURSTABLE, full)) for i in range(2000) if i != 1234}
    snap = build_snapshot(specs, allocs)
    small = schedule(snap, vm("tiny", vcpus=1, mem=512))
    assert isinstance(small, Decision)  # the window has room: no full scan
    ex = explain(snap, vm("big", vcpus=8, mem=8192))
    assert ex.decision is not None and ex.decision.node == "n1234"  # the window had none: every node looked at
    assert ex.nodes_scored == ex.nodes_total == 2000


def test_refusal_counts_every_node_even_when_the_window_is_small() -> None:
    snap = build_snapshot(nodes(2000), config=SchedulerConfig(percentage_of_nodes_to_score=1))
    r = schedule(snap, vm("huge", vcpus=1000))
    assert isinstance(r, Rejection) and r.nodes_total == 2000
    assert r.dimensions[0].nodes_short == 2000


def test_explain_ranks_the_window_the_decision_compared() -> None:
    snap = build_snapshot(nodes(2000), {"n7": used("n7", ("a", QosClass.BURSTABLE, Resources(8, 32768)))})
    for i in range(20):
        req = PlacementRequest(vm("x").spec, f"req-{i}")
        ex = explain(snap, req)
        assert ex.decision is not None and ex.nodes_scored == nodes_to_score(2000) < ex.nodes_total
        assert ex.candidates[0].score == ex.decision.score
        assert schedule(snap, req) == ex.decision  # what explain says is what placement does
    everyone = build_snapshot(nodes(2000), {"n7": used("n7", ("a", QosClass.BURSTABLE, Resources(8, 32768)))},
                              config=SchedulerConfig(percentage_of_nodes_to_score=100))
    assert explain(everyone, vm("x")).decision.node == "n7"  # type: ignore[union-attr]


@pytest.mark.parametrize("n_nodes, percentage", [(30, 0), (150, 0), (150, 100)])
def test_a_batch_decides_as_one_by_one_placements_on_fresh_snapshots(n_nodes: int, percentage: int) -> None:
    """The batch keeps its own placements aside (patched into the window it scores); placing the
    same requests one at a time, rebuilding the snapshot from the records after each, must agree."""
    rng = np.random.default_rng(7)
    specs = [NodeSpec(f"n{i}", Resources(int(rng.choice([8, 16, 32])), int(rng.choice([16384, 65536])), 500, 10000))
             for i in range(n_nodes)]
    cfg = SchedulerConfig(percentage_of_nodes_to_score=percentage)
    reqs = [PlacementRequest(VmSpec(f"v{i}", Resources(int(rng.integers(1, 9)), int(rng.integers(1, 33)) * 1024, 20, 100),
                                    qos_policy=str(rng.choice(["gold", "default", "bronze"]))), f"r{i}")
            for i in range(5 * n_nodes)]
    batch = schedule_batch(build_snapshot(specs, policies=POLICIES, config=cfg), reqs)
    allocs: dict[str, Allocation] = {}
    for req, got in zip(reqs, batch):
        want = schedule(build_snapshot(specs, allocs, policies=POLICIES, config=cfg), req)
        assert type(got) is type(want)
        if isinstance(want, Decision):
            assert isinstance(got, Decision) and (got.node, got.score) == pytest.approx((want.node, want.score))
            a = allocs.get(want.node, Allocation(want.node))
            allocs[want.node] = a.with_entry(AllocEntry(req.spec.name, want.qos.qos_class, want.reserved))
    assert sum(isinstance(d, Rejection) for d in batch) > 0  # the cluster filled up on the way
