"""Capacity planning through the real API, etcd and sim hosts: what-if answers change nothing;
rebalancing plans, drains and automatic mode move VMs by live migration, one safe step at a
time, and etcd afterwards shows every node within capacity."""
from __future__ import annotations

import json

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.conftest import Cluster, details, wait_until
from vdcos.model import Allocation, Rebalance, RebalanceGoal, RebalanceState, Resources, decode, dumps
from vdcos.state import keys
from vdcos.v1 import capacity_service_pb2 as cap_pb
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import placement_service_pb2 as place_pb
from vdcos.v1 import qos_policy_service_pb2 as pol_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

pytestmark = pytest.mark.etcd

SMALL = Resources(8, 16384, 100, 1000)


def create(c: Cluster, name: str, node: str = "", vcpus: int = 2, mem: int = 4096, policy: str = "",
           group: str = "", group_policy: int = 0) -> None:
    spec = pb.VmSpec(name=name, resources=pb.Resources(vcpus=vcpus, memory_mib=mem), qos_policy=policy,
                     node_selector={"host": node} if node else {}, placement_group=group, group_policy=group_policy)
    c.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec))
    wait_until(lambda: c.client.vms.GetVm(vm_pb.GetVmRequest(name=name)).vm.status.phase == pb.VM_PHASE_RUNNING)


def where(c: Cluster) -> dict[str, str]:
    return {v.spec.name: v.placement.node for v in c.client.vms.ListVms(vm_pb.ListVmsRequest()).vms}


def allocs(c: Cluster) -> dict[str, Allocation]:
    kvs, _ = c.store.get_prefix(keys.ALLOC)
    return {a.node: a for a in (decode(Allocation, json.loads(kv.value)) for kv in kvs)}


def within_capacity(c: Cluster) -> None:
    """Read from etcd: no node holds more than its capacity (guaranteed) or allocatable (committed)."""
    for node, a in allocs(c).items():
        cap = c.server.cache.node(node).spec.capacity  # type: ignore[union-attr]
        assert all(g <= k for g, k in zip(a.guaranteed.as_tuple(), cap.as_tuple())), node


def written_since(c: Cluster, revision: int) -> list[str]:
    """Keys changed after `revision`, but for what agents keep writing about hosts and VMs, the
    events every process writes a moment after what they tell, and metering's records."""
    return [kv.key for kv in c.store.get_prefix(keys.ROOT)[0] if kv.mod_revision > revision
            and not kv.key.startswith((keys.NODES, keys.POOLS, keys.EVENTS, keys.USAGE))
            and not kv.key.endswith("/status")]


def wait_done(c: Cluster, rid: str, timeout: float = 60) -> cap_pb.Rebalance:
    def done() -> cap_pb.Rebalance | None:
        rb = c.client.capacity.GetRebalance(cap_pb.GetRebalanceRequest(id=rid)).rebalance
        return rb if rb.state in (cap_pb.REBALANCE_STATE_COMPLETED, cap_pb.REBALANCE_STATE_FAILED) else None
    wait_until(done, timeout)
    return c.client.capacity.GetRebalance(cap_pb.GetRebalanceRequest(id=rid)).rebalance


def nodes(c: Cluster, *names: str) -> None:
    for n in names:
        c.add_node(n, SMALL, labels={"host": n})


def test_headroom_is_exact_per_class_and_writes_nothing(cluster: Cluster) -> None:
    nodes(cluster, "n1", "n2")
    create(cluster, "a", "n1", vcpus=4, mem=8192)
    before = cluster.store.get_prefix(keys.ROOT)[1]
    got = cluster.client.capacity.GetHeadroom(cap_pb.GetHeadroomRequest(
        shape=pb.Resources(vcpus=2, memory_mib=4096))).headroom
    by = {h.qos_class: h for h in got}
    # Free memory decides: n1 8 GiB -> 2, n2 16 GiB -> 4, in either class (CPU overcommit 4x helps
    # only the burstable ones, and memory binds first).
    assert by[pb.QOS_CLASS_GUARANTEED].count == 6 and dict(by[pb.QOS_CLASS_GUARANTEED].per_node) == {"n1": 2, "n2": 4}
    assert by[pb.QOS_CLASS_BURSTABLE].count == 6
    assert by[pb.QOS_CLASS_BEST_EFFORT].unbounded
    cpu = cluster.client.capacity.GetHeadroom(cap_pb.GetHeadroomRequest(
        shape=pb.Resources(vcpus=4, memory_mib=512))).headroom
    # "a" is burstable: it holds no physical CPU. Guaranteed: 8 physical CPUs each; burstable: 4x.
    assert [h.count for h in cpu[:2]] == [2 + 2, 7 + 8]
    assert dict(cpu[0].limited_by) == {"vcpus": 2}
    cluster.client.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(policy=pb.QosPolicy(
        name="gold", qos_class=pb.QOS_CLASS_GUARANTEED)))
    gold = cluster.client.capacity.GetHeadroom(cap_pb.GetHeadroomRequest(
        shape=pb.Resources(vcpus=4, memory_mib=512), qos_policy="gold", one_per_node=True)).headroom
    assert [(h.qos_class, h.count) for h in gold] == [(pb.QOS_CLASS_GUARANTEED, 2)]
    assert written_since(cluster, before) == [keys.policy("gold")]


def test_hosts_needed_for_a_vm_list(cluster: Cluster) -> None:
    cluster.client.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(policy=pb.QosPolicy(
        name="gold", qos_class=pb.QOS_CLASS_GUARANTEED)))
    host = pb.Resources(vcpus=16, memory_mib=65536, disk_gib=1000, network_mbps=10000)
    r = cluster.client.capacity.PlanHosts(cap_pb.PlanHostsRequest(host=host, vms=[
        cap_pb.VmShape(resources=pb.Resources(vcpus=8, memory_mib=8192), qos_policy="gold", count=5),
        cap_pb.VmShape(resources=pb.Resources(vcpus=8, memory_mib=8192), count=4),
    ]))
    # Gold needs physical CPUs: 2 per host -> 3 hosts; the burstable ones fit beside them (4x CPU).
    assert (r.hosts, r.lower_bound, r.optimal) == (3, 3, True) and len(r.host_of_vm) == 9
    assert dict(r.hosts_by_type) == {"host": 3}
    # Two types: one 32-core host takes four gold VMs, the rest go on 16-core ones.
    big = pb.Resources(vcpus=32, memory_mib=131072, disk_gib=1000, network_mbps=10000)
    mixed = cluster.client.capacity.PlanHosts(cap_pb.PlanHostsRequest(vms=[
        cap_pb.VmShape(resources=pb.Resources(vcpus=8, memory_mib=8192), qos_policy="gold", count=5)],
        host_types=[cap_pb.HostType(name="std", capacity=host), cap_pb.HostType(name="big", capacity=big, available=1)]))
    assert mixed.hosts == 2 and dict(mixed.hosts_by_type) == {"big": 1, "std": 1}
    assert sorted(mixed.type_of_host.values()) == ["big", "std"]
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.capacity.PlanHosts(cap_pb.PlanHostsRequest(host=host, vms=[
            cap_pb.VmShape(resources=pb.Resources(vcpus=32, memory_mib=1024), qos_policy="gold", count=1)]))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "vcpus (physical)" in e.value.details()


@pytest.mark.parametrize("call, field", [
    (lambda c: c.capacity.PlanHosts(cap_pb.PlanHostsRequest()), "vms"),
    (lambda c: c.capacity.PlanHosts(cap_pb.PlanHostsRequest(vms=[cap_pb.VmShape(
        resources=pb.Resources(vcpus=1, memory_mib=64), count=0)], host=pb.Resources(vcpus=1, memory_mib=64))),
     "vms[0].count"),
    (lambda c: c.capacity.GetHeadroom(cap_pb.GetHeadroomRequest()), "shape"),
    (lambda c: c.capacity.PlanHosts(cap_pb.PlanHostsRequest(vms=[cap_pb.VmShape(
        resources=pb.Resources(vcpus=1, memory_mib=64), count=1)], host_types=[
        cap_pb.HostType(name="a", capacity=pb.Resources(vcpus=1, memory_mib=64), available=-1)])),
     "host_types[0].available"),
    (lambda c: c.capacity.PlanRebalance(cap_pb.PlanRebalanceRequest(goal=cap_pb.REBALANCE_GOAL_EVACUATE)), "goal"),
    (lambda c: c.capacity.PlanRebalance(cap_pb.PlanRebalanceRequest(
        goal=cap_pb.REBALANCE_GOAL_BALANCE, imbalance_threshold=2)), "imbalance_threshold"),
    (lambda c: c.capacity.GetRebalance(cap_pb.GetRebalanceRequest(id="../x")), "id"),
    (lambda c: c.nodes.DrainNode(node_pb.DrainNodeRequest(name="Bad Name")), "name"),
    (lambda c: c.placement.UpdateSchedulerConfig(place_pb.UpdateSchedulerConfigRequest(
        config=pb.SchedulerConfig(rebalance_mode=7))), "config.rebalance_mode"),
])
def test_bad_planning_requests_name_the_field(cluster: Cluster, call: object, field: str) -> None:
    nodes(cluster, "n1")
    before = cluster.store.get_prefix(keys.ROOT)[1]
    with pytest.raises(grpc.RpcError) as e:
        call(cluster.client)  # type: ignore[operator]
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    br = error_details_pb2.BadRequest()
    details(e.value)[0].Unpack(br)
    assert field in [v.field for v in br.field_violations]
    assert not cluster.client.nodes.GetNode(node_pb.GetNodeRequest(name="n1")).node.cordoned
    assert written_since(cluster, before) == []


def test_losing_a_node_says_which_vms_find_a_new_home(cluster: Cluster) -> None:
    nodes(cluster, "n1")
    cluster.client.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(policy=pb.QosPolicy(
        name="gold", qos_class=pb.QOS_CLASS_GUARANTEED)))
    create(cluster, "g1", vcpus=2, mem=2048, policy="gold")
    create(cluster, "g2", vcpus=4, mem=2048, policy="gold")
    create(cluster, "b1", vcpus=2, mem=2048)
    nodes(cluster, "n2")
    create(cluster, "big", "n2", vcpus=6, mem=12288, policy="gold")
    before = allocs(cluster)
    r = cluster.client.capacity.SimulateNodeLoss(cap_pb.SimulateNodeLossRequest(node="n1"))
    # n2 has 2 physical CPUs left: g2 (4) cannot go, g1 (2) can; b1 fits under overcommit.
    out = {v.vm: v for v in r.vms}
    assert [v.vm for v in r.vms] == ["g2", "g1", "b1"]  # guaranteed first, big first
    assert out["g1"].node == "n2" and out["b1"].node == "n2" and not out["g2"].node
    assert "vcpus" in {d.dimension for d in out["g2"].rejection.dimensions}
    assert (r.replaced, r.lost, r.reserved_lost.vcpus) == (2, 1, 4)
    assert allocs(cluster) == before


def spread(c: Cluster) -> None:
    c.client.placement.UpdateSchedulerConfig(place_pb.UpdateSchedulerConfigRequest(config=pb.SchedulerConfig(
        strategy=pb.STRATEGY_SPREAD)))


def test_consolidation_runs_by_live_migration_and_frees_hosts(cluster: Cluster) -> None:
    nodes(cluster, "n1", "n2", "n3")
    spread(cluster)
    for i in range(3):
        create(cluster, f"v{i}", vcpus=2, mem=2048)
    pinned = cluster.client.capacity.PlanRebalance(cap_pb.PlanRebalanceRequest(
        goal=cap_pb.REBALANCE_GOAL_CONSOLIDATE)).rebalance
    plan = pinned
    assert not plan.id and plan.state == cap_pb.REBALANCE_STATE_PLANNED
    assert (plan.hosts_in_use_before, plan.hosts_in_use_after, len(plan.steps)) == (3, 1, 2)
    assert set(where(cluster).values()) == {"n1", "n2", "n3"}  # a plan alone moves nothing
    capped = cluster.client.capacity.PlanRebalance(cap_pb.PlanRebalanceRequest(
        goal=cap_pb.REBALANCE_GOAL_CONSOLIDATE, max_migrations=1)).rebalance
    assert len(capped.steps) == 1 and len(capped.hosts_freed) == 1
    run = cluster.client.capacity.PlanRebalance(cap_pb.PlanRebalanceRequest(
        goal=cap_pb.REBALANCE_GOAL_CONSOLIDATE, execute=True)).rebalance
    assert run.id.startswith("rb-")
    done = wait_done(cluster, run.id)
    assert done.state == cap_pb.REBALANCE_STATE_COMPLETED, done
    assert [s.state for s in done.steps] == ["done", "done"] and all(s.migration_id for s in done.steps)
    assert len(set(where(cluster).values())) == 1
    for freed in done.hosts_freed:
        assert not allocs(cluster)[freed].entries
    within_capacity(cluster)


def test_drain_cordons_and_evacuates_by_live_migration(cluster: Cluster) -> None:
    nodes(cluster, "n1")
    create(cluster, "a")
    create(cluster, "b")
    nodes(cluster, "n2", "n3")
    create(cluster, "c", "n2")
    create(cluster, "pinned", "n1", vcpus=1, mem=512)  # its node selector allows only n1
    dry = cluster.client.nodes.DrainNode(node_pb.DrainNodeRequest(name="n1", dry_run=True))
    assert not dry.node.cordoned and {s.vm for s in dry.rebalance.steps} == {"a", "b"}
    assert "selector host=n1" in dry.rebalance.unmovable["pinned"]
    cluster.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="pinned"))
    assert where(cluster)["a"] == "n1"
    r = cluster.client.nodes.DrainNode(node_pb.DrainNodeRequest(name="n1", reason="new DIMMs"))
    assert r.node.cordoned and r.rebalance.goal == cap_pb.REBALANCE_GOAL_EVACUATE
    done = wait_done(cluster, r.rebalance.id)
    assert done.state == cap_pb.REBALANCE_STATE_COMPLETED, done
    assert "n1" not in where(cluster).values() and not allocs(cluster)["n1"].entries
    within_capacity(cluster)
    assert [d.name for d in cluster.agents["n1"].driver.list_domains()] == []
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.nodes.DrainNode(node_pb.DrainNodeRequest(name="nope"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_drain_that_cannot_finish_says_which_vm_stays(cluster: Cluster) -> None:
    nodes(cluster, "n1")
    create(cluster, "huge", vcpus=2, mem=12288)
    create(cluster, "small", vcpus=1, mem=1024)
    nodes(cluster, "n2")
    create(cluster, "other", "n2", vcpus=2, mem=8192)
    r = cluster.client.nodes.DrainNode(node_pb.DrainNodeRequest(name="n1")).rebalance
    assert [s.vm for s in r.steps] == ["small"] and "memory_mib" in r.unmovable["huge"]
    done = wait_done(cluster, r.id)
    assert done.state == cap_pb.REBALANCE_STATE_FAILED and "huge" in done.message
    assert where(cluster) == {"huge": "n1", "small": "n2", "other": "n2"}


def test_automatic_mode_balances_by_itself(cluster: Cluster) -> None:
    nodes(cluster, "n1")
    for i in range(4):
        create(cluster, f"v{i}", vcpus=2, mem=2048)
    nodes(cluster, "n2", "n3")
    report = cluster.client.capacity.GetCapacityReport(cap_pb.GetCapacityReportRequest())
    assert report.imbalance > 0.1 and {n.node: n.vms for n in report.nodes} == {"n1": 4, "n2": 0, "n3": 0}
    # A run whose scheduler died long ago must not block automatic mode forever.
    stale = Rebalance("rb-00000000dead", RebalanceGoal.BALANCE, RebalanceState.RUNNING, updated_at=1.0)
    cluster.store.put(keys.rebalance(stale.id), dumps(stale))
    cluster.client.placement.UpdateSchedulerConfig(place_pb.UpdateSchedulerConfigRequest(config=pb.SchedulerConfig(
        rebalance_mode=pb.REBALANCE_MODE_AUTOMATIC, imbalance_threshold=0.05, rebalance_interval_s=1)))

    def balanced() -> bool:
        rbs = cluster.client.capacity.ListRebalances(cap_pb.ListRebalancesRequest()).rebalances
        return any(r.automatic and r.state == cap_pb.REBALANCE_STATE_COMPLETED for r in rbs)
    wait_until(balanced, 60)
    dead = cluster.client.capacity.GetRebalance(cap_pb.GetRebalanceRequest(id=stale.id)).rebalance
    assert dead.state == cap_pb.REBALANCE_STATE_FAILED and "abandoned" in dead.message
    cluster.client.placement.UpdateSchedulerConfig(place_pb.UpdateSchedulerConfigRequest(config=pb.SchedulerConfig(
        rebalance_mode=pb.REBALANCE_MODE_MANUAL)))
    assert len(set(where(cluster).values())) == 3
    after = cluster.client.capacity.GetCapacityReport(cap_pb.GetCapacityReportRequest())
    assert after.imbalance < report.imbalance
    within_capacity(cluster)
