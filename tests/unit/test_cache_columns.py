"""The cache keeps its score terms current one column per changed record, in plain floats; a
snapshot built from the same records in one go must hold the very same bits."""
from __future__ import annotations

import random

import pytest

from vdcos.model import (AllocEntry, Allocation, NodeSpec, NodeStatus, Overcommit, QosClass, Resources,
                         SchedulerConfig, dumps)
from vdcos.scheduler.cache import ClusterCache, allocation_sums, with_entry
from vdcos.scheduler.core import build_snapshot
from vdcos.state import keys
from vdcos.state.store import KV

TERMS = ("inv", "inv_sq", "util", "grad", "free_sq", "free_physical", "free_over", "schedulable")


def records(seed: int) -> tuple[list[NodeSpec], dict[str, Allocation], set[str]]:
    rng = random.Random(seed)
    nodes, allocs, ready = [], {}, set()
    for i in range(200):
        # Zero capacities (no inverse) and over-allocated nodes (negative free) included.
        cap = Resources(*(rng.choice([0, 1, 7, 32, 96]) for _ in range(2)), rng.choice([0, 500, 8000]),
                        rng.choice([0, 25000]), rng.choice([0, 3000]))
        node = NodeSpec(f"n{i}", cap)
        nodes.append(node)
        allocs[node.name] = Allocation(node.name, tuple(
            AllocEntry(f"vm{i}-{j}", rng.choice(list(QosClass)),
                       Resources(*(rng.randrange(0, 60) for _ in range(2)), rng.randrange(0, 9000),
                                 rng.randrange(0, 30000), rng.randrange(0, 4000)))
            for j in range(rng.randrange(0, 6))))
        if rng.random() < 0.9:
            ready.add(node.name)
    return nodes, allocs, ready


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_columns_kept_one_by_one_equal_a_snapshot_built_at_once(seed: int) -> None:
    nodes, allocs, ready = records(seed)
    config = SchedulerConfig(overcommit=Overcommit(vcpus=3.7, memory_mib=1.3, disk_gib=1.0, network_mbps=2.0,
                                                   disk_iops=0.5))
    cache = ClusterCache(store=None)  # type: ignore[arg-type]  # fed records directly, never started
    rev = 0

    def kv(key: str, value: bytes) -> KV:
        nonlocal rev
        rev += 1
        return KV(key, value, rev, rev)

    cache.apply_kvs([kv(keys.CONFIG, dumps(config))], rev)
    cache.snapshot()  # the config marks every column stale: derive them all once, now
    for node in nodes:  # then one record at a time, each refreshing its node's column
        cache.apply_kvs([kv(keys.node_spec(node.name), dumps(node))], rev)
        if node.name in ready:
            cache.apply_kvs([kv(keys.node_status(node.name), dumps(NodeStatus(True, 0.0)))], rev)
        cache.apply_kvs([kv(keys.alloc(node.name), dumps(allocs[node.name]))], rev)
    got = cache.snapshot()
    want = build_snapshot(nodes, allocs, ready=ready, config=config)
    assert got.names == want.names
    assert got.allocatable.tobytes() == want.allocatable.tobytes()
    for name in TERMS:
        assert getattr(got.score_terms, name).tobytes() == getattr(want.score_terms, name).tobytes(), name


@pytest.mark.parametrize("cls", list(QosClass), ids=[c.value for c in QosClass])
def test_the_remembered_sums_of_an_allocation_are_its_sums(cls: QosClass) -> None:
    """The worker's sums, derived from the previous allocation's (scheduler/cache.py), are the
    ones the value object adds up itself."""
    a = Allocation("n")
    for i, c in enumerate([QosClass.GUARANTEED, QosClass.BURSTABLE, QosClass.BEST_EFFORT, cls, cls]):
        a = with_entry(a, AllocEntry(f"vm-{i}", c, Resources(i + 1, 512 * (i + 1), i, 10 * i, 100 * i)))
        assert allocation_sums(a) == Allocation(a.node, a.entries).sums()
    again = with_entry(a, AllocEntry("vm-0", cls, Resources(7, 7, 7, 7, 7)))  # replaces vm-0's entry
    assert allocation_sums(again) == Allocation(again.node, again.entries).sums()
