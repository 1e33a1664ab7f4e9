"""High availability on sim hosts through the real API, etcd and HA controller: a host whose
lease expires gets its VMs restarted elsewhere, once, in priority order, with a new epoch; what
cannot be restarted is recorded with why; an agent that comes back starts nothing that moved."""
from __future__ import annotations

import json

import pytest

from tests.conftest import Cluster, wait_until
from vdcos.model import (DEFAULT_POLICY, Assignment, HaEvent, HostFailure, PlacementRecord, Resources, VmSpec,
                         decode, dumps)
from vdcos.model.qos import reservation, resolve
from vdcos.nodeagent.agent import NodeAgent
from vdcos.state import keys
from vdcos.v1 import ha_service_pb2 as ha_pb
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

pytestmark = pytest.mark.etcd
BIG = Resources(16, 65536, 1000, 10000, 20000)


def create_on(c: Cluster, node: str, name: str, vcpus: int = 2, policy: int = 0, priority: int = 0) -> None:
    c.create_on(node, pb.VmSpec(name=name, resources=pb.Resources(vcpus=vcpus, memory_mib=1024),
                                ha=pb.HaSettings(restart_policy=policy, priority=priority)))


def vm(c: Cluster, name: str) -> pb.Vm:
    return c.client.vms.GetVm(vm_pb.GetVmRequest(name=name)).vm


def failure(c: Cluster, node: str) -> HostFailure | None:
    kv = c.store.get(keys.ha_host(node))
    return decode(HostFailure, json.loads(kv.value)) if kv else None


def events(c: Cluster) -> list[HaEvent]:
    kvs, _ = c.store.get_prefix(keys.HA_EVENTS)
    return [decode(HaEvent, json.loads(kv.value)) for kv in kvs]


def running_on(c: Cluster) -> dict[str, list[str]]:
    """VM -> the live agents whose hypervisor runs it."""
    out: dict[str, list[str]] = {}
    for n, a in c.agents.items():
        if not a._stop.is_set():
            for d in a.driver.list_domains():
                out.setdefault(d.name, []).append(n)
    return out


def test_a_lost_hosts_vms_restart_elsewhere_once_in_priority_order(cluster: Cluster) -> None:
    c = cluster
    c.add_node("h1", ttl=2)
    c.add_node("h2")
    c.add_node("h3")
    create_on(c, "h1", "low", priority=pb.RESTART_PRIORITY_LOW)
    create_on(c, "h1", "high", priority=pb.RESTART_PRIORITY_HIGH)
    create_on(c, "h1", "medium")
    create_on(c, "h1", "stays", policy=pb.RESTART_POLICY_NEVER)
    create_on(c, "h1", "host-only", policy=pb.RESTART_POLICY_ON_HOST_FAILURE)
    assert vm(c, "high").placement.epoch == 1
    c.agents["h1"].stop()  # dies without revoking its lease

    moved = ("high", "medium", "low", "host-only")
    wait_until(lambda: all(vm(c, n).placement.node in ("h2", "h3") and vm(c, n).status.phase == pb.VM_PHASE_RUNNING
                           for n in moved), timeout=20)
    for n in moved:
        v = vm(c, n)
        assert v.placement.epoch == 2 and v.status.node == v.placement.node
    assert vm(c, "stays").placement.node == "h1"
    on = running_on(c)
    assert all(len(on[n]) == 1 for n in moved)
    rec = failure(c, "h1")
    assert rec is not None and rec.phase.value == "failed-over"
    assert sorted(rec.restarted) == sorted(moved)
    assert dict(rec.lost) == {"stays": "restart policy never: it stays down with its host"}
    restarted = [e.vm for e in events(c) if e.kind == "vm-restarted"]
    assert restarted.index("high") < restarted.index("medium") < restarted.index("low")
    assert [e.kind for e in events(c)][:2] == ["host-failed", "host-fenced"]
    status = c.client.ha.GetHaStatus(ha_pb.GetHaStatusRequest())
    assert [h.node for h in status.hosts] == ["h1"] and status.hosts[0].phase == "failed-over"
    assert {e.vm for e in status.events if e.kind == "vm-restarted"} == set(moved)
    assert c.client.nodes.GetNode(node_pb.GetNodeRequest(name="h1")).node.ha_state == "failed-over"

    # h1 comes back: it destroys what moved, starts only what is still its own, and the record goes.
    old = c.agents["h1"]
    back = NodeAgent(c.store, old.spec, old.driver, lease_ttl=2, resync_s=0.5, pools=old.storage.pools
                     if old.storage else None).start()
    c.agents["h1"] = back
    wait_until(lambda: vm(c, "stays").status.phase == pb.VM_PHASE_RUNNING and failure(c, "h1") is None, timeout=15)
    on = running_on(c)
    assert on["stays"] == ["h1"] and all(len(on[n]) == 1 and on[n] != ["h1"] for n in moved)
    assert events(c)[-1].kind == "host-back"
    assert not back.created or back.created == ["stays"]


def test_a_vm_that_fits_nowhere_waits_then_starts_when_capacity_appears(cluster: Cluster) -> None:
    c = cluster
    c.add_node("h1", ttl=2)
    c.add_node("h2", Resources(2, 8192, 100, 1000, 1000))  # 8 vCPUs allocatable at 4x
    create_on(c, "h1", "wide", vcpus=12)
    create_on(c, "h1", "narrow", vcpus=2)
    c.agents["h1"].stop()
    wait_until(lambda: (r := failure(c, "h1")) is not None and "wide" in dict(r.pending), timeout=20)
    rec = failure(c, "h1")
    assert rec is not None and rec.phase.value == "restarting" and "vcpus" in dict(rec.pending)["wide"]
    assert vm(c, "narrow").placement.node == "h2" and vm(c, "wide").placement.node == "h1"
    c.add_node("h3", BIG)
    wait_until(lambda: vm(c, "wide").placement.node == "h3" and vm(c, "wide").status.phase == pb.VM_PHASE_RUNNING,
               timeout=20)
    assert (r := failure(c, "h1")) is not None and r.phase.value == "failed-over" and not r.pending


def test_a_vm_on_a_local_volume_is_lost_with_its_host_not_restarted_blank(cluster: Cluster) -> None:
    from vdcos.v1 import volume_service_pb2 as vol_pb

    c = cluster
    c.add_node("h1", ttl=2)
    c.add_node("h2")
    c.client.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
        name="data", pool=vol_pb.POOL_KIND_LOCAL, size_gib=5, host="h1")))
    wait_until(lambda: c.client.volumes.GetVolume(vol_pb.GetVolumeRequest(name="data")).volume.state
               == vol_pb.VOLUME_STATE_AVAILABLE)
    c.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(
        name="db", volumes=["data"], resources=pb.Resources(vcpus=1, memory_mib=512))))
    create_on(c, "h1", "app")
    c.agents["h1"].stop()
    wait_until(lambda: (r := failure(c, "h1")) is not None and r.phase.value == "failed-over", timeout=20)
    rec = failure(c, "h1")
    assert rec is not None and rec.restarted == ("app",)
    assert dict(rec.lost) == {"db": "its local volume data died with h1; not restarted blank"}
    assert vm(c, "db").placement.node == "h1" and vm(c, "app").placement.node == "h2"
    assert [e.vm for e in events(c) if e.kind == "vm-lost"] == ["db"]


def test_an_agent_never_starts_a_vm_at_a_stale_epoch(cluster: Cluster) -> None:
    """An assignment left behind (an agent frozen while the VM moved): the placement says the
    VM is elsewhere at a newer epoch, so the agent starts nothing from it."""
    c = cluster
    c.add_node("h1")
    c.add_node("h2")
    spec = VmSpec("ghost", Resources(1, 128))
    qos, reserved = resolve(spec, DEFAULT_POLICY), reservation(spec, DEFAULT_POLICY)
    c.store.put(keys.vm_spec("ghost"), dumps(spec))
    c.store.put(keys.vm_placement("ghost"), dumps(PlacementRecord("h2", qos, reserved, 0.0, 0.0, epoch=3)))
    c.store.put(keys.assign("h1", "ghost"), dumps(Assignment(spec, qos, reserved, epoch=2)))
    c.store.put(keys.assign("h2", "ghost"), dumps(Assignment(spec, qos, reserved, epoch=3)))
    wait_until(lambda: "ghost" in running_on(c))
    c.agents["h1"].reconcile()
    assert running_on(c)["ghost"] == ["h2"]
