"""The one fit function, table-driven."""
import numpy as np
import pytest

from vdcos.model import AllocEntry, Allocation, Overcommit, QosClass, Resources
from vdcos.model.fit import OVERCOMMITTED, PHYSICAL, fit_matrix, fits

CAP = Resources(16, 65536, 1000, 10000, 5000)
OC = Overcommit(vcpus=4.0, memory_mib=1.0, disk_gib=1.0, network_mbps=2.0, disk_iops=1.0)
G, B, BE = QosClass.GUARANTEED, QosClass.BURSTABLE, QosClass.BEST_EFFORT


def alloc(*entries: tuple[QosClass, Resources]) -> Allocation:
    return Allocation("n", tuple(AllocEntry(f"vm{i}", c, r) for i, (c, r) in enumerate(entries)))


CASES = [
    ("empty node takes guaranteed", alloc(), Resources(16, 65536), G, []),
    ("guaranteed cannot use overcommit", alloc(), Resources(17, 1024), G, [("vcpus", PHYSICAL)]),
    ("burstable may use overcommit", alloc(), Resources(64, 1024), B, []),
    ("burstable beyond overcommit", alloc(), Resources(65, 1024), B, [("vcpus", OVERCOMMITTED)]),
    ("guaranteed blocked by guaranteed", alloc((G, Resources(12, 1024))), Resources(8, 1024), G, [("vcpus", PHYSICAL)]),
    ("guaranteed beside burstable within physical", alloc((B, Resources(40, 1024))), Resources(16, 1024), G, []),
    ("guaranteed blocked by overcommitted pool", alloc((B, Resources(56, 1024))), Resources(16, 1024), G,
     [("vcpus", OVERCOMMITTED)]),
    ("memory is not overcommitted", alloc((B, Resources(1, 60000))), Resources(1, 8192), B,
     [("memory_mib", OVERCOMMITTED)]),
    ("best-effort needs headroom", alloc((B, Resources(1, 65536))), Resources(1, 512), BE,
     [("memory_mib", OVERCOMMITTED)]),
    ("best-effort entries reserve nothing", alloc((BE, Resources(64, 65536))), Resources(16, 65536), G, []),
    ("zero request always fits", alloc((G, Resources(16, 65536, 1000, 20000))), Resources(0, 0, 0, 0), G, []),
    ("IOPS reservations add up", alloc((G, Resources(1, 1024, disk_iops=3000))), Resources(1, 1024, disk_iops=2000),
     G, []),
    ("IOPS beyond what the disks sustain", alloc((B, Resources(1, 1024, disk_iops=3000))),
     Resources(1, 1024, disk_iops=2500), B, [("disk_iops", OVERCOMMITTED)]),
    ("several dimensions short", alloc(), Resources(20, 70000, 2000), G,
     [("vcpus", PHYSICAL), ("memory_mib", PHYSICAL), ("memory_mib", OVERCOMMITTED), ("disk_gib", PHYSICAL),
      ("disk_gib", OVERCOMMITTED)]),
]


@pytest.mark.parametrize("allocation,demand,cls,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_fits(allocation: Allocation, demand: Resources, cls: QosClass, expected: list[tuple[str, str]]) -> None:
    got = fits(CAP, OC, allocation, demand, cls)
    assert sorted((s.dimension, s.pool) for s in got) == sorted(expected)


def test_insufficient_reports_free_amount() -> None:
    (short,) = fits(CAP, OC, alloc((G, Resources(10, 1024))), Resources(8, 1024), G)
    assert (short.requested, short.free) == (8, 6)


@pytest.mark.parametrize("seed", range(20))
def test_fit_matrix_is_the_definition(seed: int) -> None:
    """Whatever shortcut fit_matrix takes, per node and dimension: short where a dimension asked
    for (> 0) exceeds the pool's free amount, the physical pool only for guaranteed; fits where
    nothing is short. Demand per node or one for all, QoS per node or one for all."""
    rng = np.random.default_rng(seed)
    d_n, n = 5, 40
    fp, fo = (rng.integers(-2, 6, (d_n, n)).astype(np.float64) for _ in range(2))
    one = rng.integers(0, 4, d_n).astype(np.float64) * (rng.random(d_n) < 0.7)
    per_node = rng.integers(0, 4, (d_n, n)).astype(np.float64) * (rng.random((d_n, n)) < 0.7)
    qos_mask = rng.random(n) < 0.5
    for demand in (one, per_node):
        d = demand[:, None] if demand.ndim == 1 else demand
        for qos in (*QosClass, qos_mask):
            g = np.full(n, qos is QosClass.GUARANTEED) if isinstance(qos, QosClass) else qos
            short_over = (fo < d) & (d > 0)
            short_phys = (fp < d) & (d > 0) & g
            got = fit_matrix(fp, fo, demand, qos)
            assert (got.short_overcommitted == short_over).all()
            assert (got.short_physical == short_phys).all()
            assert (got.ok == ~(short_over | short_phys).any(axis=0)).all()
