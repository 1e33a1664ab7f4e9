"""The capacity planner's packing engine: parsing, feasibility, bounds, heuristics, the MIP, and
the online policy being the scheduler's own."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from vdcos.model import NodeSpec, Overcommit, QosClass, QosPolicy, Resources, SchedulerConfig, VmSpec
from vdcos.planner import Packing, Problem, ProblemError, check, first_fit, load_vbp, lower_bound, online, solve
from vdcos.planner.colgen import solve_cover
from vdcos.planner.exact import mip
from vdcos.planner.heuristics import portfolio
from vdcos.planner.search import fewer_hosts
from vdcos.scheduler.core import Decision, PlacementRequest, build_snapshot, schedule_batch


def problem(cap: list[int], items: list[list[int]]) -> Problem:
    return Problem("t", np.asarray(cap, dtype=np.int64), np.asarray(items, dtype=np.int64).reshape(-1, len(cap)))


def test_vbp_expands_demand_counts_in_file_order(tmp_path: Path) -> None:
    f = tmp_path / "x.vbp"
    f.write_text("2\n10 8\n3\n5 4 2\n1 1 1\n0 8 1\n")
    p = load_vbp(f)
    assert p.name == "x" and p.capacity.tolist() == [10, 8]
    assert p.items.tolist() == [[5, 4], [5, 4], [1, 1], [0, 8]]


@pytest.mark.parametrize("text,why", [
    ("", "empty"), ("2\n10 8\n2\n5 4 1\n", "need"), ("1\n10\n1\n11 1\n", "fits on no host"),
    ("1\n0\n0\n", "positive"), ("2\n10 x\n", "not a .vbp"),
], ids=["empty", "short", "item-too-big", "zero-capacity", "not-numbers"])
def test_bad_vbp_files_say_why(tmp_path: Path, text: str, why: str) -> None:
    f = tmp_path / "bad.vbp"
    f.write_text(text)
    with pytest.raises(ProblemError, match=why):
        load_vbp(f)


def test_check_catches_an_overfull_host() -> None:
    p = problem([10], [[6], [6]])
    check(p, Packing(np.array([0, 1])))
    with pytest.raises(ProblemError, match="over capacity"):
        check(p, Packing(np.array([0, 0])))


def test_lower_bound_takes_volume_and_mutually_exclusive_items() -> None:
    assert lower_bound(problem([10, 10], [[5, 1]] * 4)) == 2           # volume
    assert lower_bound(problem([10, 10], [[6, 1], [1, 6], [6, 6]])) == 2  # [6,1] and [1,6] share
    assert lower_bound(problem([10, 10], [[6, 1], [6, 1], [6, 1]])) == 3  # no two share


def test_vector_packing_needs_the_shapes_to_complement() -> None:
    # First fit in arrival order wastes a host; pairing the complementary shapes does not.
    p = problem([10, 10], [[6, 2], [6, 2], [2, 6], [2, 6], [4, 4], [4, 4]])
    assert first_fit(p).hosts == 3
    plan = solve(p, time_limit=2)
    check(p, plan.packing)
    assert plan.hosts == plan.lower_bound == 3 or plan.hosts >= plan.lower_bound


def test_the_mip_proves_what_heuristics_cannot_reach() -> None:
    # Three 1-D items of 4 and three of 6 on hosts of 10: pairs (4,6) make 3 hosts.
    p = problem([10], [[4], [4], [4], [6], [6], [6]])
    bad = Packing(np.array([0, 0, 1, 2, 3, 4]))  # 5 hosts
    better, bound = mip(p, bad, lower_bound(p), 5.0)
    assert better is not None and better.hosts == 3 and bound == 3
    check(p, better)


def test_solve_is_feasible_and_never_worse_than_first_fit() -> None:
    rng = np.random.default_rng(11)
    p = problem([100, 100, 100], rng.integers(1, 60, (60, 3)).tolist())
    a = solve(p, time_limit=1)
    check(p, a.packing)
    assert lower_bound(p) <= a.lower_bound <= a.hosts <= first_fit(p).hosts


def perfectly_packable(hosts: int, per_host: int, d: int, seed: int) -> Problem:
    """Each host's capacity cut into per_host random pieces per dimension, shuffled: the volume
    bound is the optimum, and first-fit-decreasing rarely finds it."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.integers(1, 100, (hosts, per_host - 1, d)), axis=1)
    edges = np.concatenate((np.zeros((hosts, 1, d), int), cuts, np.full((hosts, 1, d), 100)), axis=1)
    items = np.diff(edges, axis=1).reshape(-1, d)
    return problem([100] * d, items[rng.permutation(len(items))].tolist())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_local_search_frees_hosts_the_heuristics_leave_in_use(seed: int) -> None:
    p = perfectly_packable(12, 3, 3, seed)
    start, _ = portfolio(p)
    assert start.hosts > 12  # the heuristics miss the perfect packing
    best, tries = start, 0
    while best.hosts > 12 and tries < 20:
        fewer = fewer_hosts(p, best, time.monotonic() + 30, seed=tries)
        tries += 1
        if fewer is not None:
            assert fewer.hosts == best.hosts - 1
            check(p, fewer)
            best = fewer
    assert best.hosts == 12


def test_online_mode_is_the_schedulers_own_choice() -> None:
    """The planner's online policy and the scheduler core place the same VMs on the same hosts."""
    rng = np.random.default_rng(7)
    cap = [16, 64, 100, 1000, 1000]
    items = np.column_stack([rng.integers(1, 9, 40), rng.integers(1, 33, 40), rng.integers(1, 40, 40),
                             rng.integers(1, 400, 40), rng.integers(1, 300, 40)])
    p = problem(cap, items.tolist())
    got = online(p)
    nodes = [NodeSpec(f"h{i:03d}", Resources(*cap)) for i in range(p.n)]
    # The planner packs real capacity: no overcommit, as for guaranteed VMs.
    snap = build_snapshot(nodes, policies={"g": QosPolicy("g", QosClass.GUARANTEED)},
                          config=SchedulerConfig(overcommit=Overcommit(1.0, 1.0, 1.0, 1.0, 1.0)))
    decisions = schedule_batch(snap, [PlacementRequest(VmSpec(f"vm{i}", Resources(*map(int, row)), qos_policy="g"))
                                      for i, row in enumerate(items)])
    assert all(isinstance(d, Decision) for d in decisions)
    # Hosts are interchangeable when empty: compare the grouping, not the host names.
    sched = [d.node for d in decisions if isinstance(d, Decision)]
    groups = {tuple(int(i) for i in np.flatnonzero(got.host == h)) for h in range(got.hosts)}
    assert groups == {tuple(i for i, n in enumerate(sched) if n == h) for h in set(sched)}


def test_heterogeneous_hosts_open_where_the_items_fit_and_search_keeps_each_capacity() -> None:
    rng = np.random.default_rng(5)
    big, small = [100, 100], [50, 50]
    hosts = np.array([big] * 4 + [small] * 8)
    # Perfectly packable onto 2 big + 4 small hosts: each host's capacity cut in 3.
    items = []
    for cap in [big, big, small, small, small, small]:
        cuts = np.sort(rng.integers(1, cap[0], (2, 2)), axis=0)
        items += np.diff(np.vstack([[0, 0], cuts, cap]), axis=0).tolist()
    p = Problem.heterogeneous("mixed", hosts, np.array(items)[rng.permutation(len(items))])
    assert lower_bound(p) >= 3  # 450 units per dimension need at least 3 of the largest
    plan = solve(p, time_limit=2)
    check(p, plan.packing)
    assert plan.lower_bound <= plan.hosts <= 7
    with pytest.raises(ProblemError, match="fits on no host"):
        Problem.heterogeneous("x", np.array([[10, 10]]), np.array([[11, 1]]))
    # Too few hosts for everything: the heuristics say so rather than invent a host.
    with pytest.raises(ProblemError, match="no host left"):
        solve(Problem.heterogeneous("few", np.array([[10, 10]]), np.array([[6, 6], [6, 6]])), time_limit=1)


def test_column_generation_proves_what_volume_cannot() -> None:
    # 40% of a host each way: two per host, never three. Volume says 4 hosts, the set-cover LP 5.
    p = problem([100, 100], [[40, 40]] * 10)
    assert lower_bound(p) == 4
    plan = solve(p, time_limit=2)
    assert plan.hosts == plan.lower_bound == 5 and plan.optimal


@pytest.mark.parametrize("seed", [1, 2])
def test_column_generation_bound_never_exceeds_a_packing(seed: int) -> None:
    p = perfectly_packable(8, 2, 3, seed)  # 8 hosts' worth, two VMs each: the optimum is 8
    start, _ = portfolio(p)
    cover, bound = solve_cover(p, start, time.monotonic() + 5)
    assert bound <= 8
    if cover is not None:
        check(p, cover)
        assert cover.hosts < start.hosts
