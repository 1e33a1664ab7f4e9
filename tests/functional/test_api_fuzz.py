"""Whatever a client sends, the API answers with a status it documents, writes nothing when it
refuses the input, and keeps the cluster consistent.

Every RPC of every vdcos service, read from the descriptors (a new RPC is covered without
editing this file), gets requests built field by field from seeded random values: names of
objects that exist, names that break every rule, numbers at and past their limits, enum
numbers no client library would send, nested messages half filled in. The server is the real
one, on a real etcd, with sim agents doing their part: once without authentication, and once in
TLS with a token of every role (cluster admin and reader, a project's owner, member and reader),
where a project's callers must also leave everything outside their project as it was. Bounded:
a fixed number of requests per RPC, streams cut after a moment.
"""
from __future__ import annotations

import importlib
import json
import math
import pkgutil
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf import message_factory
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import Cluster, details, secure_etcd, sim_agent, wait_until
from vdcos.apiserver.authz import ANY_IDENTITY, PROJECT_ROLES, ROLES as CLUSTER_ROLES, RULES
from vdcos.apiserver.server import create_server
from vdcos.cli.client import Client
from vdcos.model import Resources
from vdcos.security.pki import Identity, TlsFiles
from vdcos.security.tls import secure_channel
from vdcos.state.etcd import EtcdStore
from vdcos.scheduler.audit import over_capacity
from vdcos.state import keys
import vdcos.v1
from vdcos.v1 import capacity_service_pb2 as cap_pb
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import placement_service_pb2 as place_pb
from vdcos.v1 import project_service_pb2 as proj_pb
from vdcos.v1 import qos_policy_service_pb2 as pol_pb
from vdcos.v1 import token_service_pb2 as tok_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import volume_service_pb2 as vol_pb

MODULES = [importlib.import_module(f"vdcos.v1.{m.name}") for m in pkgutil.iter_modules(vdcos.v1.__path__)
           if m.name.endswith("_service_pb2")]
PER_RPC = 40
SEED = 20261123
# What a request may end with: never INTERNAL (a bug the server caught) nor UNKNOWN (one it did not).
DOCUMENTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
              grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION,
              grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
# Records only API calls write, and only while they run: none may change when a request is
# refused. (Agents publish node, pool, VM, volume and migration state on their own, and migrations
# started by earlier calls move allocations and placements while they run.)
API_WRITTEN = (keys.CONFIG, keys.POLICIES, "/vdcos/networks/", "/vdcos/ports/")

EXISTING = ["h0", "h1", "h2", "web-1", "db-1", "gold", "net1", "vol1", "snap1", "g1", "p", "p-web-1", "p-net1",
            "p-vol1"]
STRINGS = ["", "a", "x" * 63, "x" * 64, "y" * 5000, "Web_1", "../etc/passwd", "a/b", "a b", "\x00", "ünï",
           "-a", "a-", "*", "%s%n", "1", "0", "-1", "10.0.0.1/24", "zz:zz", "aa:bb:cc:dd:ee:ff", "rack=r1",
           "2026-01-01T00:00:00Z", "pack", "spread"]
INTS = [0, 1, -1, 2, 7, 100, 1 << 20, (1 << 31) - 1, -(1 << 31)]
INT64S = [*INTS, (1 << 62), -(1 << 62), (1 << 63) - 1]
UINTS = [0, 1, 2, 100, 1 << 20, (1 << 32) - 1]
FLOATS = [0.0, 0.5, 1.0, -1.0, 3.5, 1e300, -1e300, math.inf, -math.inf, math.nan]


def rpcs() -> Iterator[tuple[str, d.MethodDescriptor]]:
    for mod in MODULES:
        for svc in mod.DESCRIPTOR.services_by_name.values():
            for m in svc.methods:
                yield f"{svc.name}.{m.name}", m


def fill(msg: Any, rng: random.Random, depth: int = 0) -> Any:
    """Sets a random subset of `msg`'s fields to random values of their types."""
    for f in msg.DESCRIPTOR.fields:
        if rng.random() >= (0.35 if depth < 3 else 0.8):
            fill_field(msg, f, rng, depth)
    return msg


def fill_field(msg: Any, f: d.FieldDescriptor, rng: random.Random, depth: int) -> None:
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        target = getattr(msg, f.name)
        key_f, value_f = f.message_type.fields
        for _ in range(rng.randrange(4)):
            if value_f.message_type is None:  # the API's maps are of scalars
                target[scalar(key_f, rng)] = scalar(value_f, rng)
        return
    repeated = f.is_repeated
    for _ in range(rng.randrange(4) if repeated else 1):
        if f.message_type is not None:
            sub = getattr(msg, f.name).add() if repeated else getattr(msg, f.name)
            sub.SetInParent()
            if not f.message_type.full_name.startswith("google.protobuf.") and depth < 4:
                fill(sub, rng, depth + 1)
        elif repeated:
            getattr(msg, f.name).append(scalar(f, rng))
        else:
            setattr(msg, f.name, scalar(f, rng))


def mutate(msg: Any, rng: random.Random) -> None:
    """One field of a valid request, at any depth, cleared or set to a random value: each rule
    is met alone, and what is still valid goes all the way through."""
    while True:
        f = rng.choice(msg.DESCRIPTOR.fields)
        if f.message_type is not None and not f.message_type.GetOptions().map_entry and rng.random() < 0.7:
            if f.is_repeated and len(getattr(msg, f.name)):
                msg = rng.choice(getattr(msg, f.name))
                continue
            if not f.is_repeated and msg.HasField(f.name):
                msg = getattr(msg, f.name)
                continue
        msg.ClearField(f.name)
        if rng.random() < 0.8:
            fill_field(msg, f, rng, 2)
        return


def scalar(f: d.FieldDescriptor, rng: random.Random) -> Any:
    t = f.type
    if t == d.FieldDescriptor.TYPE_STRING:
        return rng.choice(EXISTING) if rng.random() < 0.5 else rng.choice(STRINGS)
    if t == d.FieldDescriptor.TYPE_BYTES:
        return rng.choice([b"", b"\x00\xff", b"x" * 100])
    if t == d.FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if t == d.FieldDescriptor.TYPE_ENUM:
        values = [v.number for v in f.enum_type.values]
        return rng.choice([*values, *values, 99, -5])  # proto3 enums are open: any int32 arrives
    if t in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        v = rng.choice(FLOATS)
        return max(min(v, 3e38), -3e38) if t == d.FieldDescriptor.TYPE_FLOAT and math.isfinite(v) else v
    if t in (d.FieldDescriptor.TYPE_UINT32, d.FieldDescriptor.TYPE_FIXED32):
        return rng.choice(UINTS)
    if t in (d.FieldDescriptor.TYPE_UINT64, d.FieldDescriptor.TYPE_FIXED64):
        return rng.choice([*UINTS, (1 << 64) - 1])
    if t in (d.FieldDescriptor.TYPE_INT64, d.FieldDescriptor.TYPE_SINT64, d.FieldDescriptor.TYPE_SFIXED64):
        return rng.choice(INT64S)
    return rng.choice(INTS)


def api_state(c: Cluster) -> dict[str, bytes]:
    kvs, _ = c.store.get_prefix(keys.ROOT)
    return {kv.key: kv.value for kv in kvs
            if kv.key.startswith(API_WRITTEN) or kv.key.startswith(keys.VMS) and kv.key.endswith("/spec")}


def call(c: Cluster | grpc.Channel, name: str, m: d.MethodDescriptor,
         request: Any) -> tuple[grpc.StatusCode, grpc.RpcError | None]:
    channel = c.client.channel if isinstance(c, Cluster) else c
    svc = m.containing_service.full_name
    path = f"/{svc}/{m.name}"
    out = message_factory.GetMessageClass(m.output_type)
    ser, de = (lambda x: x.SerializeToString()), out.FromString
    try:
        if m.client_streaming:
            stream = channel.stream_stream(path, request_serializer=ser, response_deserializer=de)
            for answer in stream(iter(request), timeout=10):
                # CreateVms answers each request with its own status: none may be a crash either
                code = next(s for s in grpc.StatusCode if s.value[0] == answer.error.code)
                assert code in DOCUMENTED, (name, answer.error)
        elif m.server_streaming:
            stream = channel.unary_stream(path, request_serializer=ser, response_deserializer=de)
            for _ in stream(request, timeout=0.3):
                pass
        else:
            channel.unary_unary(path, request_serializer=ser, response_deserializer=de)(request, timeout=10)
        return grpc.StatusCode.OK, None
    except grpc.RpcError as e:
        if m.server_streaming and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return grpc.StatusCode.OK, None  # a watch that was cut, as planned
        return e.code(), e


def valid(name: str, i: int) -> list[Any]:
    """Requests that succeed on the populated cluster (new names: i is unique), to mutate."""
    res = pb.Resources(vcpus=1, memory_mib=512, disk_gib=1, network_mbps=10)

    def vm(n: str) -> pb.VmSpec:
        return pb.VmSpec(name=n, resources=res, qos_policy="gold", placement_group="g2",
                         group_policy=pb.AFFINITY_POLICY_SOFT_ANTI_AFFINITY, node_selector={"rack": "r0"},
                         networks=["net1"])
    shape = cap_pb.VmShape(resources=res, qos_policy="gold", count=3)
    return {
        "VmService.CreateVm": [vm_pb.CreateVmRequest(spec=vm(f"fz-{i}"), request_id=f"r{i}")],
        "VmService.BatchCreateVms": [vm_pb.BatchCreateVmsRequest(requests=[
            vm_pb.CreateVmRequest(spec=vm(f"fzb-{i}-{k}")) for k in range(3)])],
        "VmService.CreateVms": [[vm_pb.CreateVmsRequest(spec=vm(f"fzs-{i}-{k}")) for k in range(2)]],
        "PlacementService.ExplainPlacement": [place_pb.ExplainPlacementRequest(spec=vm(f"fz-{i}"), limit=3)],
        "PlacementService.UpdateSchedulerConfig": [place_pb.UpdateSchedulerConfigRequest(config=pb.SchedulerConfig(
            overcommit=pb.Overcommit(vcpus=4, memory_mib=1.5, disk_gib=1, network_mbps=1, disk_iops=1),
            strategy=pb.STRATEGY_PACK, scorer_weights={"most_allocated": 1.0}))],
        "QosPolicyService.CreateQosPolicy": [pol_pb.CreateQosPolicyRequest(policy=pb.QosPolicy(
            name=f"p{i}", qos_class=pb.QOS_CLASS_BURSTABLE, cpu_weight=150, cpu_limit_percent=80,
            memory_limit_ratio=1.5))],
        "NetworkService.CreateNetwork": [net_pb.CreateNetworkRequest(network=net_pb.Network(
            name=f"n{i}", cidr=f"10.{i % 200}.{i // 200}.0/24"))],
        "NetworkService.CreatePort": [net_pb.CreatePortRequest(network="net1", name=f"port{i}", host="h1")],
        "VolumeService.CreateVolume": [vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
            name=f"v{i}", size_gib=1, pool=vol_pb.POOL_KIND_SHARED))],
        "VolumeService.CreateSnapshot": [vol_pb.CreateSnapshotRequest(snapshot=vol_pb.Snapshot(
            name=f"s{i}", volume="vol1"))],
        "VolumeService.AttachVolume": [vol_pb.AttachVolumeRequest(name="vol1", vm="web-1")],
        "MigrationService.MigrateVm": [mig_pb.MigrateVmRequest(vm="db-1", options=mig_pb.MigrationOptions(
            max_downtime_ms=300))],
        "CapacityService.GetHeadroom": [cap_pb.GetHeadroomRequest(shape=res, qos_policy="gold")],
        "CapacityService.GetCapacityReport": [cap_pb.GetCapacityReportRequest(shapes=[shape])],
        "CapacityService.PlanHosts": [cap_pb.PlanHostsRequest(vms=[shape], host=pb.Resources(
            vcpus=16, memory_mib=65536, disk_gib=1000, network_mbps=10000), time_limit_s=0.5)],
        "CapacityService.PlanRebalance": [cap_pb.PlanRebalanceRequest(goal=cap_pb.REBALANCE_GOAL_BALANCE,
                                                                      max_migrations=2)],
    }.get(name, [])


@pytest.fixture
def populated(cluster: Cluster) -> Cluster:
    for i in range(3):
        cluster.add_node(f"h{i}", Resources(16, 65536, 1000, 10000), labels={"rack": f"r{i % 2}"})
    cl = cluster.client
    cl.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(policy=pb.QosPolicy(
        name="gold", qos_class=pb.QOS_CLASS_GUARANTEED)), timeout=10)
    cl.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(name="net1", cidr="10.9.0.0/24")),
                              timeout=10)
    for name, pol in (("web-1", "gold"), ("db-1", "")):
        cl.vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(
            name=name, qos_policy=pol, resources=pb.Resources(vcpus=2, memory_mib=2048, disk_gib=10),
            placement_group="g1", group_policy=pb.AFFINITY_POLICY_ANTI_AFFINITY, networks=["net1"])), timeout=10)
    cl.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
        name="vol1", size_gib=1, pool=vol_pb.POOL_KIND_SHARED)), timeout=10)
    return cluster


def requests(name: str, m: d.MethodDescriptor, rng: random.Random, per_rpc: int = PER_RPC) -> Iterator[Any]:
    """`per_rpc` random requests, then as many one-field mutations of valid ones (where written)."""
    request_type = message_factory.GetMessageClass(m.input_type)
    for _ in range(per_rpc):
        if m.client_streaming:
            yield [fill(request_type(), rng) for _ in range(rng.randrange(1, 4))]
        else:
            yield fill(request_type(), rng)
    for i in range(per_rpc if valid(name, 0) else 0):
        request = rng.choice(valid(name, i))
        if m.client_streaming:
            mutate(rng.choice(request), rng)
        else:
            mutate(request, rng)
        yield request


def test_random_requests_to_every_rpc_get_documented_answers_and_refusals_write_nothing(populated: Cluster) -> None:
    c = populated
    rng = random.Random(SEED)
    seen: dict[str, dict[str, int]] = {}
    for name, m in rpcs():
        for request in requests(name, m, rng):
            before = api_state(c)
            code, err = call(c, name, m, request)
            seen.setdefault(name, {}).setdefault(code.name, 0)
            seen[name][code.name] += 1
            assert code in DOCUMENTED, f"{name}({request}) -> {code.name}: {err.details() if err else ''}"
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                assert err is not None
                br = error_details_pb2.BadRequest()
                assert any(x.Unpack(br) for x in details(err)) and br.field_violations, (name, request)
                assert all(v.field for v in br.field_violations), (name, br)
            if code != grpc.StatusCode.OK:
                assert api_state(c) == before, f"{name} refused {request} ({code.name}) but wrote"
    # Every RPC was reached, and the requests got past validation too, not only refused by it.
    assert len(seen) == sum(1 for _ in rpcs())
    assert sum(n.get("OK", 0) for n in seen.values()) > 300, seen
    assert sum(n.get("INVALID_ARGUMENT", 0) for n in seen.values()) > 300, seen
    # The server is up and what it committed is consistent.
    health = health_pb2_grpc.HealthStub(c.client.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    assert over_capacity(c.store) == []
    for kv in c.store.get_prefix(keys.ALLOC)[0]:
        for entry in json.loads(kv.value)["entries"]:
            vm = entry["vm"]
            if "/" not in vm:  # a VM's entry, not a local volume's: the VM has its records
                assert c.store.get(keys.vm_spec(vm)) is not None, (kv.key, vm)


# Each role's callers, by token, on a TLS server: cluster admin and reader, and project p's owner,
# member and reader. Fewer requests per RPC than above: five roles call every RPC.
ROLES = (("admin", ""), ("reader", ""), ("owner", "p"), ("member", "p"), ("reader", "p"))
PER_ROLE = 5


@dataclass
class SecureCluster:
    store: EtcdStore
    channels: dict[tuple[str, str], grpc.Channel]


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureCluster]:
    """A TLS server on its own etcd with three sim agents (each with its certificate), the
    cluster's objects of `populated`, and project p's own VM, network and volume."""
    with secure_etcd(tmp_path, "fuzz") as (ca, etcd, store, replica):
        server = create_server("127.0.0.1:0", store, tls=replica)
        admin = Client(f"127.0.0.1:{server.mtls_port}", ca.issue(Identity("user", "admin")))
        agents, channels = [], {}
        try:
            agents = [sim_agent(etcd, ca, f"h{i}", Resources(16, 65536, 1000, 10000), tmp_path,
                                {"rack": f"r{i % 2}"}) for i in range(3)]
            wait_until(lambda: len(server.cache.node_names()) == 3, timeout=20)
            admin.projects.CreateProject(proj_pb.CreateProjectRequest(project=proj_pb.Project(name="p")))
            populate(admin, "")
            populate(admin, "p")
            for role, project in ROLES:
                secret = admin.tokens.CreateToken(tok_pb.CreateTokenRequest(name=f"fz-{role}", role=role,
                                                                            project=project)).secret
                channels[(role, project)] = secure_channel(f"127.0.0.1:{server.port}", TlsFiles(ca.cert_path), [],
                                                           secret)
            yield SecureCluster(store, channels)
        finally:
            for ch in channels.values():
                ch.close()
            admin.channel.close()
            for agent, node_store in agents:
                agent.stop()
                node_store.close()
            server.stop(0)


def populate(cl: Client, project: str) -> None:
    """The cluster's objects (project ""), or a project's: a network, two VMs on it, a volume."""
    pre = f"{project}-" if project else ""
    if not project:
        cl.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(policy=pb.QosPolicy(
            name="gold", qos_class=pb.QOS_CLASS_GUARANTEED)), timeout=10)
    cl.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(
        name=f"{pre}net1", cidr="10.9.0.0/24", project=project)), timeout=10)
    for name in ("web-1", "db-1"):
        cl.vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(
            name=pre + name, resources=pb.Resources(vcpus=2, memory_mib=2048, disk_gib=10), project=project,
            placement_group=f"{pre}g1", group_policy=pb.AFFINITY_POLICY_ANTI_AFFINITY, networks=[f"{pre}net1"])),
            timeout=10)
    cl.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
        name=f"{pre}vol1", size_gib=1, pool=vol_pb.POOL_KIND_SHARED, project=project)), timeout=10)


def not_projects(store: EtcdStore, project: str) -> dict[str, bytes]:
    """Every record a project's caller must never change: the API's records that are not its
    project's, the projects, quotas other than its own, and every token."""
    kvs, _ = store.get_prefix(keys.ROOT)
    out = {}
    for kv in kvs:
        k = kv.key
        if k.startswith((keys.CONFIG, keys.POLICIES, keys.PROJECTS, keys.TOKENS)) or (
                k.startswith(keys.QUOTAS) and k != keys.quota(project)):
            out[k] = kv.value
        elif k.startswith((keys.NETWORKS, keys.VOLUMES, keys.SNAPSHOTS)) or (
                k.startswith(keys.VMS) and k.endswith("/spec")):
            if json.loads(kv.value).get("project", "") != project:
                out[k] = kv.value
    return out


def test_every_role_fuzzing_every_rpc_gets_documented_answers_and_stays_in_its_project(
        secure: SecureCluster) -> None:
    """Random and mutated requests to every RPC, by a token of each role: never an undocumented
    status; PERMISSION_DENIED exactly where the role's rule says no (the table's answer, before
    the request is read); never UNAUTHENTICATED; a refusal writes nothing; and whatever project
    p's callers send, nothing outside p changes and no answer names another project's object."""
    rng = random.Random(SEED + 1)
    allowed = DOCUMENTED | {grpc.StatusCode.PERMISSION_DENIED}
    seen: dict[tuple[str, str], dict[str, int]] = {}
    for (role, project), channel in secure.channels.items():
        may = (PROJECT_ROLES if project else CLUSTER_ROLES)[role]
        for name, m in rpcs():
            path = f"/{m.containing_service.full_name}/{m.name}"
            rule = RULES.get(path)  # None: open to any identity that proves itself
            assert rule is not None or path in ANY_IDENTITY, path
            for request in requests(name, m, rng, PER_ROLE):
                before = not_projects(secure.store, project) if project else None
                code, err = call(channel, name, m, request)
                counts = seen.setdefault((role, project), {})
                counts[code.name] = counts.get(code.name, 0) + 1
                assert code in allowed, f"{role}@{project or '-'} {name}({request}) -> {code.name}: {err}"
                assert (code == grpc.StatusCode.PERMISSION_DENIED) == (rule is not None and not may(rule)), \
                    (role, project, name, code)
                if project:
                    assert not_projects(secure.store, project) == before, f"{role}@{project} {name}({request})"
            if project and rule is not None and may(rule) and not m.server_streaming and not m.client_streaming \
                    and m.name.startswith("List"):
                # A list names none of the cluster's objects (nor, for tokens, the cluster's tokens).
                out = message_factory.GetMessageClass(m.output_type)
                answer = channel.unary_unary(f"/{m.containing_service.full_name}/{m.name}", response_deserializer=(
                    out.FromString))(b"", timeout=10)
                text = str(answer)
                assert not any(f'"{n}"' in text for n in ("web-1", "db-1", "net1", "vol1", "fz-admin")), (name, text)
    for (role, project), counts in seen.items():
        assert counts.get("OK", 0) > 20, (role, project, counts)
    # What p's reader lists is p's, and p's alone.
    ch = secure.channels[("reader", "p")]
    vms = vm_pb.ListVmsResponse.FromString(ch.unary_unary("/vdcos.v1.VmService/ListVms")(
        vm_pb.ListVmsRequest().SerializeToString(), timeout=10))
    assert vms.vms and {v.spec.project for v in vms.vms} == {"p"}
    assert over_capacity(secure.store) == []
