"""What-if answers and rebalancing plans on hand-built clusters: counts checked by hand, every
plan replayed move by move against the fit function."""
from __future__ import annotations

import pytest

from vdcos.model import (AffinityPolicy, AllocEntry, Allocation, NodeSpec, Overcommit, QosClass, Resources,
                         SchedulerConfig)
from vdcos.planner import ProblemError
from vdcos.planner.cluster import HostType, Move, Unit, balance, consolidate, headroom, hosts_needed, stranded, verify
from vdcos.scheduler.core import ClusterSnapshot, build_snapshot

G, B, BE = QosClass.GUARANTEED, QosClass.BURSTABLE, QosClass.BEST_EFFORT
HOST = Resources(vcpus=8, memory_mib=16384, disk_gib=100, network_mbps=1000)


def cluster(placed: dict[str, list[Unit]], cpu_ratio: float = 1.0,
            cordoned: set[str] | None = None) -> tuple[ClusterSnapshot, list[Unit]]:
    nodes = [NodeSpec(name, HOST) for name in placed]
    allocs = {name: Allocation(name, tuple(AllocEntry(u.vm, u.qos_class, u.reserved) for u in us))
              for name, us in placed.items()}
    config = SchedulerConfig(overcommit=Overcommit(vcpus=cpu_ratio))
    units = [u for us in placed.values() for u in us]
    return build_snapshot(nodes, allocs, config=config, cordoned=cordoned), units


def vm(name: str, node: str, vcpus: int, mem: int, cls: QosClass = G, **kw: object) -> Unit:
    size = Resources(vcpus=vcpus, memory_mib=mem)
    return Unit(name, node, cls, Resources() if cls is BE else size, size, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls, ratio, want", [
    # Free: n1 6 vCPU / 12 GiB, n2 8 / 16. Shape 2 vCPU / 4 GiB.
    (G, 1.0, 3 + 4),
    (G, 2.0, 3 + 4),   # guaranteed VMs never use overcommitted CPU
    (B, 2.0, 3 + 4),   # memory (not overcommitted) binds before the doubled CPU does
])
def test_headroom_counts_exactly_per_class(cls: QosClass, ratio: float, want: int) -> None:
    snap, _ = cluster({"n1": [vm("a", "n1", 2, 4096)], "n2": []}, cpu_ratio=ratio)
    h = headroom(snap, Resources(vcpus=2, memory_mib=4096), cls)
    assert h.count == want and dict(h.per_node) == {"n1": 3, "n2": 4}
    assert dict(h.limited_by) == {"memory_mib": 2} if cls is B else True


def test_headroom_cpu_bound_shapes_gain_from_overcommit_only_when_burstable() -> None:
    snap, _ = cluster({"n1": [], "n2": []}, cpu_ratio=2.0)
    shape = Resources(vcpus=4, memory_mib=1024)
    assert headroom(snap, shape, G).count == 4
    assert headroom(snap, shape, B).count == 8
    be = headroom(snap, shape, BE)
    assert be.unbounded and be.count == 2
    assert headroom(snap, shape, G, one_per_node=True).count == 2


def test_cordoned_nodes_give_no_headroom_and_full_ones_strand_what_they_have_left() -> None:
    snap, _ = cluster({"n1": [vm("a", "n1", 8, 4096)], "n2": []}, cordoned={"n2"})
    assert headroom(snap, Resources(vcpus=1, memory_mib=1), G).count == 0
    assert stranded(snap)["memory_mib"] == 16384 - 4096  # n1's CPUs are all taken


def test_hosts_needed_packs_both_pools() -> None:
    one = [HostType("h", HOST)]
    half = Resources(vcpus=4, memory_mib=8192)
    plan, _ = hosts_needed([(half, G, 6)], one, Overcommit())
    assert plan.hosts == plan.lower_bound == 3
    # Burstable CPU is overcommitted 4x: memory decides, two per host still.
    assert hosts_needed([(half, B, 6)], one, Overcommit(vcpus=4.0))[0].hosts == 3
    cpu = Resources(vcpus=4, memory_mib=1024)
    assert hosts_needed([(cpu, B, 8)], one, Overcommit(vcpus=4.0))[0].hosts == 1
    assert hosts_needed([(cpu, G, 8)], one, Overcommit(vcpus=4.0))[0].hosts == 4


def test_hosts_needed_on_a_mix_of_host_types() -> None:
    half = Resources(vcpus=4, memory_mib=8192)
    double = Resources(vcpus=16, memory_mib=32768)
    plan, types = hosts_needed([(half, G, 6)], [HostType("small", HOST), HostType("big", double, available=1)],
                               Overcommit())
    used = {types[h] for h in set(plan.packing.host.tolist())}
    assert plan.hosts == 2 and used == {"big", "small"}  # the big one takes 4, a small one 2
    with pytest.raises(ProblemError, match="no host left"):
        hosts_needed([(half, G, 6)], [HostType("small", HOST, available=2)], Overcommit())


def test_hosts_needed_names_the_dimension_a_vm_cannot_get() -> None:
    with pytest.raises(ProblemError, match="memory_mib"):
        hosts_needed([(Resources(vcpus=1, memory_mib=99999), G, 1)], [HostType("h", HOST)], Overcommit())


def test_consolidation_frees_hosts_with_every_step_safe() -> None:
    snap, units = cluster({
        "n1": [vm("a", "n1", 4, 8192)],
        "n2": [vm("b", "n2", 2, 4096)],
        "n3": [vm("c", "n3", 2, 4096)],
        "n4": [vm("d", "n4", 4, 4096)],
    })
    plan = consolidate(snap, units, max_moves=10)
    verify(snap, units, plan.moves)
    assert plan.hosts_in_use_before == 4 and plan.hosts_in_use_after == 2
    assert len(plan.hosts_freed) == 2 and len(plan.moves) == 2
    assert all(m.source in plan.hosts_freed for m in plan.moves)


def test_consolidation_keeps_anti_affine_vms_apart_and_respects_the_cap() -> None:
    anti = {"group": "db", "group_policy": AffinityPolicy.ANTI_AFFINITY}
    snap, units = cluster({
        "n1": [vm("db-1", "n1", 1, 1024, **anti)],
        "n2": [vm("db-2", "n2", 1, 1024, **anti)],
        "n3": [vm("web", "n3", 1, 1024), vm("web2", "n3", 1, 1024)],
    })
    plan = consolidate(snap, units, max_moves=10)
    verify(snap, units, plan.moves)
    assert plan.hosts_in_use_after == 2  # web and web2 join one database each, or both one
    ends = {m.vm: m.target for m in plan.moves}
    assert ends.get("db-1", "n1") != ends.get("db-2", "n2")
    assert len(consolidate(snap, units, max_moves=1).moves) <= 1


def test_vms_held_by_hard_affinity_or_pinned_stay_and_are_named() -> None:
    snap, units = cluster({
        "n1": [vm("a", "n1", 1, 1024, group="pair", group_policy=AffinityPolicy.AFFINITY)],
        "n2": [vm("b", "n2", 1, 1024, pinned="not running")],
        "n3": [vm("c", "n3", 6, 8192)],
    })
    plan = consolidate(snap, units, max_moves=10)
    verify(snap, units, plan.moves)
    assert [(m.vm, m.target in ("n1", "n2")) for m in plan.moves] == [("c", True)]  # onto a stayer
    assert dict(plan.unmovable) == {"a": "hard affinity with group pair: its members move together or not at all",
                                    "b": "not running"}


def test_balance_spreads_a_hot_host_under_the_threshold() -> None:
    snap, units = cluster({
        "n1": [vm(f"v{i}", "n1", 2, 4096, B) for i in range(4)],
        "n2": [], "n3": [], "n4": [],
    })
    plan = balance(snap, units, threshold=0.15, max_moves=10)
    verify(snap, units, plan.moves)
    assert plan.imbalance_before > 0.4 and plan.imbalance_after <= 0.15
    assert len(plan.moves) == 3 and {m.source for m in plan.moves} == {"n1"}
    assert len(balance(snap, units, threshold=0.0, max_moves=2).moves) == 2


def test_an_already_balanced_cluster_gets_no_moves() -> None:
    snap, units = cluster({n: [vm(f"v-{n}", n, 2, 4096)] for n in ("n1", "n2", "n3")})
    assert not balance(snap, units, threshold=0.05, max_moves=10).moves


def test_verify_refuses_a_plan_that_only_fits_at_its_end() -> None:
    """A swap: each VM fits where the other was, but only once the other has left."""
    snap, units = cluster({"n1": [vm("a", "n1", 6, 8192)], "n2": [vm("b", "n2", 6, 8192)]})
    with pytest.raises(ValueError, match="does not fit"):
        verify(snap, units, (Move("a", "n1", "n2", ""), Move("b", "n2", "n1", "")))
