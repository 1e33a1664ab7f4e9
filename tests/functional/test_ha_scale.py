"""HA at scale on sim hosts: 10,000 registered hosts (the cache, the snapshot and admission
control see them all; all but 60 are cordoned so that the 60 can be filled), admission control
tolerating one host failure, then hosts lost one after another: every HA-protected VM of each
is re-placed every time, and admission control refused what would have broken that promise."""
from __future__ import annotations

import json
from typing import Iterator

import pytest

from tests.conftest import wait_until
from vdcos.apiserver.server import SchedulerServer, create_server
from vdcos.cli.client import Client
from vdcos.model import Allocation, HostFailure, NodeSpec, PlacementRecord, Resources, decode, pairs
from vdcos.nodeagent.agent import node_records
from vdcos.state import keys
from vdcos.state.etcd import EtcdStore
from vdcos.state.store import Put
from vdcos.v1 import ha_service_pb2 as ha_pb
from vdcos.v1 import placement_service_pb2 as place_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

pytestmark = pytest.mark.etcd
HOSTS, OPEN = 10_000, 60
CAP = Resources(16, 65536, 1000, 10000, 20000)


@pytest.fixture
def big(store: EtcdStore) -> Iterator[tuple[EtcdStore, SchedulerServer, Client, dict[str, int]]]:
    shared = store.grant_lease(3600)
    leases: dict[str, int] = {}
    batch: list[Put] = []
    for i in range(HOSTS):
        name = f"sim-{i:05d}"
        lease = leases[name] = store.grant_lease(3600) if i < OPEN else shared
        batch += node_records(NodeSpec(name, CAP, pairs({"rack": f"r{i // 40}"})), lease)
        if i >= OPEN:
            batch.append(Put(keys.node_cordon(name), b'{"reason": "closed for the HA scale test", "at": 0}'))
        if len(batch) >= 900:
            store.txn([], batch)
            batch = []
    store.txn([], batch)
    server = create_server("127.0.0.1:0", store)
    client = Client(f"127.0.0.1:{server.port}")
    wait_until(lambda: len(server.cache.node_names()) == HOSTS, 60)
    yield store, server, client, leases
    client.channel.close()
    server.stop(0)


def placements(store: EtcdStore) -> dict[str, PlacementRecord]:
    kvs, _ = store.get_prefix(keys.VMS)
    return {keys.split(kv.key, keys.VMS)[0]: decode(PlacementRecord, json.loads(kv.value))
            for kv in kvs if kv.key.endswith("/placement")}


def vms_on(store: EtcdStore, node: str) -> list[str]:
    kv = store.get(keys.alloc(node))
    return [e.vm for e in decode(Allocation, json.loads(kv.value)).entries] if kv else []


def test_every_protected_vm_is_replaced_after_each_host_loss(big: tuple[EtcdStore, SchedulerServer, Client,
                                                                         dict[str, int]]) -> None:
    store, server, client, leases = big
    client.placement.UpdateSchedulerConfig(place_pb.UpdateSchedulerConfigRequest(
        config=pb.SchedulerConfig(ha_host_failures_to_tolerate=1)))
    # 8 fit a host by memory: 480 would fill the 60 open hosts; one host's worth must stay free.
    spec = pb.VmSpec(resources=pb.Resources(vcpus=2, memory_mib=8192))
    reqs = []
    for i in range(500):
        s = pb.VmSpec()
        s.CopyFrom(spec)
        s.name = f"vm-{i:04d}"
        reqs.append(vm_pb.CreateVmRequest(spec=s, request_id=f"r{i}"))
    results = client.vms.BatchCreateVms(vm_pb.BatchCreateVmsRequest(requests=reqs), timeout=120).results
    placed = [r.name for r in results if not r.HasField("error")]
    refused = [r for r in results if r.HasField("error")]
    # Exactly one host's worth (8 VMs) kept free: refused by admission control while they fit.
    assert len(placed) == 480 - 8
    assert all("HA admission control" in r.error.message and "memory_mib" in r.error.message
               for r in refused[:8]), refused[:8]
    room = client.ha.GetHaStatus(ha_pb.GetHaStatusRequest())
    assert room.failover_capacity_ok and room.protected_vms == len(placed), room

    for round_ in range(3):
        before = placements(store)
        victim = max((f"sim-{i:05d}" for i in range(OPEN)), key=lambda n: len(vms_on(store, n)))
        lost = vms_on(store, victim)
        assert lost
        store.revoke_lease(leases[victim])
        wait_until(lambda: not vms_on(store, victim), 60)
        after = placements(store)
        for vm in lost:
            assert after[vm].node != victim and after[vm].epoch == before[vm].epoch + 1, (round_, vm)
        assert all(after[v].epoch == before[v].epoch for v in after if v not in lost)
        kv = store.get(keys.ha_host(victim))
        rec = decode(HostFailure, json.loads(kv.value)) if kv else None
        assert rec is not None and sorted(rec.restarted) == sorted(lost) and not rec.pending and not rec.lost
        # The host comes back, empty, with a new lease: the next loss is covered again.
        leases[victim] = store.grant_lease(3600)
        store.txn([], node_records(NodeSpec(victim, CAP, pairs({"rack": "r0"})), leases[victim])[1:])
        wait_until(lambda: store.get(keys.ha_host(victim)) is None, 30)
    assert len(placements(store)) == len(placed)

