"""The compiled success path (core/kernel.py) decides exactly as the NumPy definition does:
the same node, the same scores to the bit, on clusters filling up under batches of mixed
requests, for every strategy, window size, lane, filter and weight it covers."""
from __future__ import annotations

import importlib
import random

import pytest

from vdcos.model import (AffinityPolicy, AllocEntry, Allocation, NodeSpec, Overcommit, QosClass, QosPolicy,
                         Resources, SchedulerConfig, Strategy, VmSpec, pairs)
from vdcos.scheduler.core import Decision, Lane, PlacementRequest, Rejection, build_snapshot, schedule_batch

# the module (the package exports its `schedule` function under the same name)
core = importlib.import_module("vdcos.scheduler.core.schedule")

POLICIES = {"gold": QosPolicy("gold", QosClass.GUARANTEED), "bronze": QosPolicy("bronze", QosClass.BEST_EFFORT),
            "iops": QosPolicy("iops", QosClass.BURSTABLE, disk_iops_reservation=500)}
HOSTS = [Resources(32, 131072, 2000, 25000), Resources(64, 262144, 4000, 25000), Resources(16, 65536, 0, 10000)]
SHAPES = [Resources(1, 2048, 20, 100), Resources(4, 8192, 80, 0), Resources(16, 65536, 320, 2000),
          Resources(2, 0, 0, 0), Resources(8, 32768, 160, 1000)]


def cluster(n: int, rng: random.Random, config: SchedulerConfig) -> tuple[list[NodeSpec], dict[str, Allocation]]:
    specs = [NodeSpec(f"n{i:04d}", rng.choice(HOSTS), pairs({"rack": f"r{i % 3}"})) for i in range(n)]
    allocs = {}
    for s in specs[: n // 2]:  # half the nodes start partly used, some of them full
        used = [AllocEntry(f"old-{s.name}-{k}", rng.choice(list(QosClass)), rng.choice(SHAPES)) for k in range(rng.randrange(6))]
        allocs[s.name] = Allocation(s.name, tuple(e for e in used if e.qos_class is not QosClass.BEST_EFFORT))
    return specs, allocs


def requests(n: int, rng: random.Random) -> list[PlacementRequest]:
    out = []
    for i in range(n):
        kw: dict[str, object] = {"qos_policy": rng.choice(["gold", "bronze", "iops", ""])}
        roll = rng.random()
        if roll < 0.15:
            kw["placement_group"], kw["group_policy"] = f"g{rng.randrange(4)}", AffinityPolicy.ANTI_AFFINITY
        elif roll < 0.2:
            kw["placement_group"], kw["group_policy"] = "a", AffinityPolicy.AFFINITY
        elif roll < 0.25:
            kw["placement_group"], kw["group_policy"] = f"s{rng.randrange(2)}", AffinityPolicy.SOFT_ANTI_AFFINITY
        elif roll < 0.3:
            kw["node_selector"] = pairs({"rack": f"r{rng.randrange(3)}"})
        avoid = (f"n{rng.randrange(50):04d}",) if rng.random() < 0.05 else ()
        out.append(PlacementRequest(VmSpec(f"vm{i}", rng.choice(SHAPES), **kw), f"req-{i}", avoid))  # type: ignore[arg-type]
    return out


def decide_both(snap: object, reqs: list[PlacementRequest], lane: Lane,
                monkeypatch: pytest.MonkeyPatch) -> tuple[list[Decision | Rejection], list[Decision | Rejection]]:
    monkeypatch.setattr(core, "COMPILED", False)
    numpy = [d for b in range(0, len(reqs), 32) for d in schedule_batch(snap, reqs[b:b + 32], lane)]  # type: ignore[arg-type]
    monkeypatch.setattr(core, "COMPILED", True)
    compiled = [d for b in range(0, len(reqs), 32) for d in schedule_batch(snap, reqs[b:b + 32], lane)]  # type: ignore[arg-type]
    return numpy, compiled


CASES = [
    ("pack-adaptive-window", 400, SchedulerConfig(), Lane()),
    ("pack-second-lane", 400, SchedulerConfig(), Lane(1, 3)),
    ("pack-small-wrapping-window", 400, SchedulerConfig(percentage_of_nodes_to_score=3), Lane(2, 3)),
    ("pack-every-node", 60, SchedulerConfig(), Lane()),
    ("spread", 300, SchedulerConfig(strategy=Strategy.SPREAD), Lane()),
    ("pack-weights-and-overcommit", 300, SchedulerConfig(
        overcommit=Overcommit(vcpus=2.5, memory_mib=1.3), scorer_weights=pairs({"most_allocated": "0.2",
                                                                                 "alignment": "3"})), Lane()),
    ("pack-alignment-off", 300, SchedulerConfig(scorer_weights=pairs({"alignment": "0"})), Lane()),
]


@pytest.mark.parametrize("n, config, lane", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_compiled_path_decides_bit_for_bit_as_the_numpy_definition(
        n: int, config: SchedulerConfig, lane: Lane, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(n * 7 + lane.index)
    specs, allocs = cluster(n, rng, config)
    ready = {s.name for s in specs if rng.random() > 0.05}
    snap = build_snapshot(specs, allocs, ready=ready, cordoned={specs[1].name}, policies=POLICIES, config=config)
    reqs = requests(1500, rng)  # enough to fill it: refusals and windows without a feasible node happen
    numpy, compiled = decide_both(snap, reqs, lane, monkeypatch)
    assert numpy == compiled
    placed = sum(isinstance(d, Decision) for d in numpy)
    assert 100 < placed < len(reqs), "the cluster should fill up: both paths and refusals exercised"


def test_the_compiled_path_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without it, the equality above would hold trivially."""
    from vdcos.scheduler.core import kernel
    calls = []
    real = kernel.best_in_window
    monkeypatch.setattr(kernel, "best_in_window", lambda *a: calls.append(1) or real(*a))
    snap = build_snapshot([NodeSpec(f"n{i}", HOSTS[0]) for i in range(3)], policies=POLICIES)
    d = schedule_batch(snap, [PlacementRequest(VmSpec("a", SHAPES[0]))])[0]
    assert isinstance(d, Decision) and calls == [1]
    assert d.scores[0][0] == "most_allocated" and d.scores[1][0] == "alignment"
