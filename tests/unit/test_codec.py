"""The etcd value codec: every record type round-trips, the bytes are compact JSON with sorted
keys (what json.dumps gives), and the allocation and assignment records' joined encodings give
exactly the generic encoder's bytes."""
from __future__ import annotations

import json

import pytest

from vdcos.model import (AffinityPolicy, AllocEntry, Allocation, Assignment, PlacementGroup, QosClass,
                         QosSettings, Resources, VmSpec, assignment_bytes, decode, dumps)
from vdcos.model.codec import _encoder, _json

ENTRY = AllocEntry("vm-a", QosClass.GUARANTEED, Resources(2, 4096, 20, 100), "gold")
SPEC = VmSpec("web-1", Resources(2, 2048, 10, 50), qos_policy="gold", placement_group="web",
              group_policy=AffinityPolicy.ANTI_AFFINITY, node_selector=(("zone", "a"),))


@pytest.mark.parametrize("record", [
    Allocation("host-1"),
    Allocation("host-1", (ENTRY,)),
    Allocation('odd "node" \\ é', (ENTRY, AllocEntry("volume/v1", QosClass.GUARANTEED, Resources(disk_gib=5)),
                                   AllocEntry("vm-b", QosClass.BEST_EFFORT, Resources(1, 512), held_by="m-1"))),
    SPEC,
    PlacementGroup("web", AffinityPolicy.ANTI_AFFINITY, (("web-1", "host-1"), ("web-2", "host-2"))),
    Assignment(SPEC, QosSettings(QosClass.BURSTABLE, 512, cpu_quota_us=50_000), Resources(1, 1024)),
], ids=lambda r: type(r).__name__)
def test_round_trip(record: object) -> None:
    assert decode(type(record), json.loads(dumps(record))) == record


@pytest.mark.parametrize("record", [SPEC, Allocation('odd "node" \\ é', (ENTRY,))], ids=lambda r: type(r).__name__)
def test_bytes_are_compact_sorted_json(record: object) -> None:
    data = _encoder(type(record))(record)
    assert dumps(record) == json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def test_allocation_bytes_match_the_generic_encoder() -> None:
    a = Allocation("host-1")
    for i in range(30):
        a = a.with_entry(AllocEntry(f"vm-{i:03d}", list(QosClass)[i % 3], Resources(i, i * 512, i), "p"))
        # each call meets cached entries and one new one
        assert dumps(a) == _json(_encoder(Allocation)(a))


def test_assignment_bytes_match_the_generic_encoder() -> None:
    for spec in (SPEC, VmSpec("db", Resources(1, 512))):
        for qos in (QosSettings(QosClass.BURSTABLE, 512, cpu_quota_us=50_000), QosSettings(QosClass.GUARANTEED, 2048)):
            a = Assignment(spec, qos, Resources(1, 1024, 3, 4, 5))
            assert assignment_bytes(dumps(spec), a.qos, a.reserved) == dumps(a) == _json(_encoder(Assignment)(a))
