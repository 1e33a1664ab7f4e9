"""The gRPC API against a real etcd and a real server on port 0."""
from __future__ import annotations

import json
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import Cluster, details, wait_until
from vdcos.model import Resources
from vdcos.state import keys
from vdcos.v1 import capacity_service_pb2 as cap_pb
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import placement_service_pb2 as place_pb
from vdcos.v1 import qos_policy_service_pb2 as pol_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb


def spec(name: str, vcpus: int = 2, mem: int = 4096, **kw: object) -> pb.VmSpec:
    return pb.VmSpec(name=name, resources=pb.Resources(vcpus=vcpus, memory_mib=mem, disk_gib=10), **kw)


def create(c: Cluster, s: pb.VmSpec) -> pb.Vm:
    return c.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=s), timeout=10).vm


def policy(c: Cluster, name: str, cls: int, **kw: object) -> pb.QosPolicy:
    return c.client.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(
        policy=pb.QosPolicy(name=name, qos_class=cls, **kw)), timeout=10).policy


def all_keys(c: Cluster) -> list[str]:
    # What agents publish about their hosts changes on its own, and so do the events every
    # process writes a moment after what they tell (a journal) and metering's records.
    return [kv.key for kv in c.store.get_prefix(keys.ROOT)[0]
            if not kv.key.startswith((keys.NODES, keys.POOLS, keys.EVENTS, keys.USAGE))]


def said(c: Cluster, vm: str) -> bool:
    """Some node's agent has a status for the VM."""
    return any(keys.split(kv.key, keys.VM_STATUSES)[1] == vm for kv in c.store.get_prefix(keys.VM_STATUSES)[0])


def test_vm_lifecycle_reaches_running_on_the_chosen_node(cluster: Cluster) -> None:
    for i in range(3):
        cluster.add_node(f"h{i}")
    policy(cluster, "gold", pb.QOS_CLASS_GUARANTEED, cpu_weight=200)
    vm = create(cluster, spec("web-1", qos_policy="gold"))
    assert vm.placement.node in {"h0", "h1", "h2"}
    assert (vm.placement.qos_class, vm.placement.cpu_shares) == (pb.QOS_CLASS_GUARANTEED, 4096)
    agent = cluster.agents[vm.placement.node]
    wait_until(lambda: cluster.client.vms.GetVm(vm_pb.GetVmRequest(name="web-1")).vm.status.phase
               == pb.VM_PHASE_RUNNING)
    assert [d.name for d in agent.driver.list_domains()] == ["web-1"]
    node = cluster.client.nodes.GetNode(node_pb.GetNodeRequest(name=vm.placement.node)).node
    assert (node.guaranteed.vcpus, node.committed.vcpus, node.vm_count) == (2, 2, 1)
    cluster.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="web-1"))
    wait_until(lambda: not agent.driver.list_domains())
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.vms.GetVm(vm_pb.GetVmRequest(name="web-1"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    wait_until(lambda: not said(cluster, "web-1"))


BAD = [
    ("bad-name", spec("Web_1"), "spec.name"),
    ("zero-vcpus", spec("a", vcpus=0), "spec.resources.vcpus"),
    ("huge-memory", spec("a", mem=1 << 40), "spec.resources.memory_mib"),
    ("missing-resources", pb.VmSpec(name="a"), "spec.resources"),
    ("group-without-policy", spec("a", placement_group="g"), "spec.group_policy"),
    ("policy-without-group", spec("a", group_policy=pb.AFFINITY_POLICY_AFFINITY), "spec.placement_group"),
    ("bad-selector", spec("a", node_selector={"bad key!": "x"}), "spec.node_selector['bad key!']"),
    ("bad-policy-name", spec("a", qos_policy="../etc"), "spec.qos_policy"),
    ("bad-network", spec("a", networks=["ok", "NOT OK"]), "spec.networks[1]"),
    ("long-name", spec("a" * 64), "spec.name"),
    # More disks than a guest has device names and PCI slots for: refused here, not by the agent.
    ("too-many-volumes", spec("a", volumes=[f"v{i}" for i in range(27)]), "spec.volumes"),
    ("volume-twice", spec("a", volumes=["v1", "v1"]), "spec.volumes"),
]


@pytest.mark.parametrize("s,field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_invalid_argument_with_the_field_and_writes_nothing(cluster: Cluster, s: pb.VmSpec,
                                                                         field: str) -> None:
    cluster.add_node("h0")
    before = all_keys(cluster)
    with pytest.raises(grpc.RpcError) as e:
        create(cluster, s)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (detail,) = details(e.value)
    br = error_details_pb2.BadRequest()
    assert detail.Unpack(br)
    assert field in [v.field for v in br.field_violations]
    assert all_keys(cluster) == before


def test_refusals_explain_themselves_with_the_right_code(cluster: Cluster) -> None:
    cluster.add_node("h0", Resources(8, 16384, 100, 1000))
    cluster.add_node("h1", Resources(8, 16384, 100, 1000))
    policy(cluster, "gold", pb.QOS_CLASS_GUARANTEED)
    create(cluster, spec("a", vcpus=6, qos_policy="gold"))
    with pytest.raises(grpc.RpcError) as e:  # fits once something is deleted
        create(cluster, spec("b", vcpus=8, qos_policy="gold"))
        create(cluster, spec("c", vcpus=4, qos_policy="gold"))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    rej = pb.PlacementRejection()
    assert any(d.Unpack(rej) for d in details(e.value))
    (dim,) = rej.dimensions
    assert (dim.dimension, dim.pool, dim.requested, dim.largest_free, dim.nodes_short) == ("vcpus", "physical", 4, 2, 2)
    with pytest.raises(grpc.RpcError) as e:  # bigger than any node: never
        create(cluster, spec("d", vcpus=9, qos_policy="gold"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "none ever could" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        create(cluster, spec("e", qos_policy="missing"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        create(cluster, spec("a"))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_create_vms_stream_answers_each_request_on_its_own(cluster: Cluster) -> None:
    """Nova-style multi-create over one stream: good requests are placed, a bad one gets its
    field violation, a refused one its PlacementRejection, a duplicate ALREADY_EXISTS; the
    stream goes on through all of them."""
    cluster.add_node("h0", Resources(8, 16384, 100, 1000))
    cluster.add_node("h1", Resources(8, 16384, 100, 1000))
    policy(cluster, "gold", pb.QOS_CLASS_GUARANTEED)
    asks = [spec(f"s{i}", vcpus=1, mem=1024, qos_policy="gold") for i in range(12)]
    asks += [spec("Bad_Name"), spec("too-big", vcpus=9, qos_policy="gold"), spec("s0", vcpus=1, mem=1024)]
    reqs = [vm_pb.CreateVmsRequest(spec=s, request_id=f"r{i}") for i, s in enumerate(asks)]
    answers = list(cluster.client.vms.CreateVms(iter(reqs), timeout=30))
    assert sorted(a.request_id for a in answers) == sorted(r.request_id for r in reqs)
    by_id = {a.request_id: a for a in answers}
    for i in range(12):
        a = by_id[f"r{i}"]
        assert a.name == f"s{i}" and not a.HasField("error") and a.vm.placement.node in {"h0", "h1"}
    bad, big, dup = by_id["r12"].error, by_id["r13"].error, by_id["r14"].error
    br, rej = error_details_pb2.BadRequest(), pb.PlacementRejection()
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and bad.details[0].Unpack(br)
    assert [v.field for v in br.field_violations] == ["spec.name"]
    assert big.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and any(d.Unpack(rej) for d in big.details)
    assert rej.dimensions[0].dimension == "vcpus"
    assert dup.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    placed = {kv.key for kv in cluster.store.get_prefix(keys.VMS)[0] if kv.key.endswith("/placement")}
    assert placed == {keys.vm_placement(f"s{i}") for i in range(12)}


def test_batch_create_validates_the_whole_batch_then_places_each_vm_on_its_own(cluster: Cluster) -> None:
    """AIP-233 batch create: one bad request fails the call naming it, and nothing is written;
    a valid batch answers each VM in request order, placed or refused alone, and a refused
    VM's NICs are given back."""
    cluster.add_node("h0", Resources(8, 16384, 100, 1000))
    cluster.add_node("h1", Resources(8, 16384, 100, 1000))
    policy(cluster, "gold", pb.QOS_CLASS_GUARANTEED)
    cluster.client.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(name="n1",
                                                                                              cidr="10.9.0.0/24")))
    create(cluster, spec("old", vcpus=1, mem=1024))
    wait_until(lambda: said(cluster, "old"))  # the agent's write, not ours
    before = all_keys(cluster)

    def batch(*specs: pb.VmSpec) -> vm_pb.BatchCreateVmsResponse:
        return cluster.client.vms.BatchCreateVms(vm_pb.BatchCreateVmsRequest(
            requests=[vm_pb.CreateVmRequest(spec=s, request_id=f"r{i}") for i, s in enumerate(specs)]), timeout=30)

    for bad, fields in (((spec("a"), spec("Bad_Name"), spec("b"), spec("a")),
                         ["requests[1].spec.name", "requests[3].spec.name"]),
                        ((), ["requests"])):
        with pytest.raises(grpc.RpcError) as e:
            batch(*bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        br = error_details_pb2.BadRequest()
        assert details(e.value)[0].Unpack(br) and [v.field for v in br.field_violations] == fields
    assert all_keys(cluster) == before

    asks = [spec(f"s{i}", vcpus=1, mem=1024, qos_policy="gold") for i in range(10)]
    asks += [spec("too-big", vcpus=9, qos_policy="gold", networks=["n1"]), spec("old", vcpus=1, mem=1024),
             spec("with-nic", vcpus=1, mem=1024, networks=["n1"])]
    got = batch(*asks).results
    assert [(a.name, a.request_id) for a in got] == [(s.name, f"r{i}") for i, s in enumerate(asks)]
    for a in got[:10] + [got[12]]:
        assert not a.HasField("error") and a.vm.placement.node in {"h0", "h1"}
    rej = pb.PlacementRejection()
    assert got[10].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert any(d.Unpack(rej) for d in got[10].error.details) and rej.dimensions[0].dimension == "vcpus"
    assert got[11].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert [p.name for p in cluster.client.networks.ListPorts(net_pb.ListPortsRequest(network="n1")).ports] \
        == ["with-nic"]
    placed = {kv.key for kv in cluster.store.get_prefix(keys.VMS)[0] if kv.key.endswith("/placement")}
    assert placed == {keys.vm_placement(n) for n in ["old", "with-nic", *(f"s{i}" for i in range(10))]}


def test_explain_ranks_and_commits_nothing(cluster: Cluster) -> None:
    for i in range(3):
        cluster.add_node(f"h{i}")
    create(cluster, spec("a"))
    wait_until(lambda: said(cluster, "a"))  # the agent's write, not ours
    before = all_keys(cluster)
    r = cluster.client.placement.ExplainPlacement(place_pb.ExplainPlacementRequest(spec=spec("b"), limit=5))
    assert r.placeable and r.chosen_node == r.candidates[0].node and len(r.candidates) == 3
    assert set(r.candidates[0].scores) == {"most_allocated", "alignment"}
    r = cluster.client.placement.ExplainPlacement(place_pb.ExplainPlacementRequest(spec=spec("b", vcpus=1000)))
    assert not r.placeable and r.rejection.dimensions[0].dimension == "vcpus"
    assert all_keys(cluster) == before


def test_policies_crud_and_in_use_protection(cluster: Cluster) -> None:
    cluster.add_node("h0")
    p = policy(cluster, "silver", pb.QOS_CLASS_BURSTABLE, cpu_limit_percent=50, memory_limit_ratio=1.5)
    assert p.cpu_weight == 100
    with pytest.raises(grpc.RpcError) as e:
        policy(cluster, "silver", pb.QOS_CLASS_BURSTABLE)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as e:
        policy(cluster, "x", pb.QOS_CLASS_UNSPECIFIED, cpu_limit_percent=300)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    br = error_details_pb2.BadRequest()
    details(e.value)[0].Unpack(br)
    assert {v.field for v in br.field_violations} == {"policy.qos_class", "policy.cpu_limit_percent"}
    vm = create(cluster, spec("a", vcpus=2, qos_policy="silver"))
    assert (vm.placement.cpu_quota_us, vm.placement.memory_limit_mib) == (100_000, 6144)
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.policies.DeleteQosPolicy(pol_pb.DeleteQosPolicyRequest(name="silver"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "used by a" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(
            policy=pb.QosPolicy(name="silver", qos_class=pb.QOS_CLASS_GUARANTEED), update_existing=True))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    cluster.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="a"))
    cluster.client.policies.DeleteQosPolicy(pol_pb.DeleteQosPolicyRequest(name="silver"))
    assert not cluster.client.policies.ListQosPolicies(pol_pb.ListQosPoliciesRequest()).policies


def test_cordon_keeps_vms_and_takes_no_new_ones(cluster: Cluster) -> None:
    cluster.add_node("h0")
    create(cluster, spec("a"))
    node = cluster.client.nodes.CordonNode(node_pb.CordonNodeRequest(name="h0", reason="maintenance")).node
    assert node.cordoned and node.vm_count == 1
    with pytest.raises(grpc.RpcError) as e:
        create(cluster, spec("b"))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "cordoned" in e.value.details()
    cluster.client.nodes.UncordonNode(node_pb.UncordonNodeRequest(name="h0"))
    create(cluster, spec("b"))
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.nodes.CordonNode(node_pb.CordonNodeRequest(name="nope"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_lease_expiry_marks_node_not_ready_within_the_ttl(cluster: Cluster) -> None:
    cluster.add_node("h0", ttl=2)
    agent = cluster.add_node("h1", ttl=2)
    create(cluster, spec("a", node_selector={}))
    agent.stop()  # dies without revoking: only the TTL can tell
    t0 = time.monotonic()
    wait_until(lambda: cluster.client.nodes.GetNode(node_pb.GetNodeRequest(name="h1")).node.state
               == pb.NODE_STATE_NOT_READY, timeout=6)
    assert time.monotonic() - t0 <= 4.0
    for i in range(4):
        assert create(cluster, spec(f"n{i}")).placement.node == "h0"


def test_capacity_summary_and_scheduler_config(cluster: Cluster) -> None:
    cluster.add_node("h0")
    cluster.add_node("h1")
    create(cluster, spec("a", vcpus=4))
    s = cluster.client.capacity.GetCapacitySummary(cap_pb.GetCapacitySummaryRequest())
    assert (s.nodes_ready, s.capacity.vcpus, s.allocatable.vcpus, s.committed.vcpus) == (2, 32, 128, 4)
    assert s.vms_by_class["burstable"] == 1
    conf = cluster.client.placement.UpdateSchedulerConfig(place_pb.UpdateSchedulerConfigRequest(
        config=pb.SchedulerConfig(overcommit=pb.Overcommit(vcpus=1.0), strategy=pb.STRATEGY_SPREAD))).config
    assert conf.overcommit.vcpus == 1.0 and conf.overcommit.memory_mib == 1.0 and conf.strategy == pb.STRATEGY_SPREAD
    s = cluster.client.capacity.GetCapacitySummary(cap_pb.GetCapacitySummaryRequest())
    assert s.allocatable.vcpus == 32
    b = create(cluster, spec("b", vcpus=4))
    a = cluster.client.vms.GetVm(vm_pb.GetVmRequest(name="a")).vm
    assert a.placement.node != b.placement.node  # spread
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.placement.UpdateSchedulerConfig(place_pb.UpdateSchedulerConfigRequest(
            config=pb.SchedulerConfig(overcommit=pb.Overcommit(vcpus=-1), scorer_weights={"nope": 1})))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_health_reflection_and_watch(cluster: Cluster) -> None:
    cluster.add_node("h0")
    ch = cluster.client.channel
    h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="vdcos.v1.VmService"))
    assert h.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(ch)
    resp = next(iter(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))))
    names = {s.name for s in resp.list_services_response.service}
    assert {"vdcos.v1.VmService", "vdcos.v1.NodeService", "vdcos.v1.QosPolicyService",
            "vdcos.v1.PlacementService", "vdcos.v1.CapacityService", "grpc.health.v1.Health"} <= names
    stream = cluster.client.vms.WatchVms(vm_pb.WatchVmsRequest(), timeout=10)
    time.sleep(0.3)
    create(cluster, spec("w"))
    first = next(stream)
    assert first.type == pb.EVENT_TYPE_PUT and first.vm.spec.name == "w"
    stream.cancel()


def test_nothing_a_client_sends_crashes_the_server(cluster: Cluster) -> None:
    cluster.add_node("h0")
    raw = cluster.client.channel.unary_unary("/vdcos.v1.VmService/CreateVm")
    for junk in (b"\xff\xff\xff", b"\x0a\x05\x0a\x03\xff\xfe\xfd", b"", b"\x12" * 50):
        try:
            raw(junk, timeout=5)
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL,
                                grpc.StatusCode.UNKNOWN)
    assert create(cluster, spec("still-fine")).placement.node == "h0"
    assert json.loads(cluster.store.get(keys.vm_spec("still-fine")).value)["name"] == "still-fine"  # type: ignore[union-attr]
