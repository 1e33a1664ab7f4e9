"""Thin gRPC servicers: validate, proto -> domain, call Operations, domain -> proto."""
from __future__ import annotations

import asyncio
import json
from contextlib import aclosing
from typing import AsyncIterator, Callable, TypeVar

import grpc
import grpc.aio

from vdcos.api import convert, validate
from vdcos.api.status import as_status, rpc, stream_rpc
from vdcos.errors import NotFound, Unavailable
from vdcos.model import Migration, Resources, VmSpec, decode, pairs
from vdcos.planner.cluster import HostType
from vdcos.scheduler.core import Rejection
from vdcos.scheduler.operations import Operations, VmRecord
from vdcos.state import keys
from vdcos.state.store import Event
from vdcos.v1 import capacity_service_pb2 as cap_pb
from vdcos.v1 import capacity_service_pb2_grpc as cap_grpc
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import migration_service_pb2_grpc as mig_grpc
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import network_service_pb2_grpc as net_grpc
from vdcos.v1 import volume_service_pb2 as vol_pb
from vdcos.v1 import volume_service_pb2_grpc as vol_grpc
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import node_service_pb2_grpc as node_grpc
from vdcos.v1 import placement_service_pb2 as place_pb
from vdcos.v1 import placement_service_pb2_grpc as place_grpc
from vdcos.v1 import qos_policy_service_pb2 as pol_pb
from vdcos.v1 import qos_policy_service_pb2_grpc as pol_grpc
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import vm_service_pb2_grpc as vm_grpc

Ctx = grpc.aio.ServicerContext
T = TypeVar("T")
STREAM_IN_FLIGHT = 256  # requests of one CreateVms stream being placed at once
MAX_BATCH_CREATE = 1000


async def blocking(fn: Callable[..., T], *args: object) -> T:
    """etcd reads and writes block: keep them off the event loop."""
    return await asyncio.to_thread(fn, *args)


def _name(value: str, field: str = "name") -> None:
    out: validate.Violations = []
    validate.name(value, field, out)
    validate.check(out)


def _node_and_reason(name: str, reason: str) -> None:
    """A node named for cordoning or draining, and the reason given."""
    out: validate.Violations = []
    validate.name(name, "name", out)
    if len(reason) > 256:
        out.append(("reason", "at most 256 characters"))
    validate.check(out)


def _create_violations(request: vm_pb.CreateVmRequest | vm_pb.CreateVmsRequest, field: str = "") -> validate.Violations:
    violations = validate.vm_spec(request.spec, f"{field}spec") if request.HasField("spec") \
        else [(f"{field}spec", "is required")]
    if len(request.request_id) > 128:
        violations.append((f"{field}request_id", "at most 128 characters"))
    return violations


def _create_request(request: vm_pb.CreateVmRequest | vm_pb.CreateVmsRequest) -> VmSpec:
    validate.check(_create_violations(request))
    return convert.vm_spec_from_pb(request.spec)


def _batch_create_request(request: vm_pb.BatchCreateVmsRequest) -> list[VmSpec]:
    """All of the batch, or INVALID_ARGUMENT naming every bad request in it."""
    n = len(request.requests)
    if not 1 <= n <= MAX_BATCH_CREATE:
        validate.check([("requests", f"between 1 and {MAX_BATCH_CREATE} VMs, got {n}")])
    violations: validate.Violations = []
    first: dict[str, int] = {}
    for i, req in enumerate(request.requests):
        violations += _create_violations(req, f"requests[{i}].")
        if req.spec.name and (j := first.setdefault(req.spec.name, i)) != i:
            violations.append((f"requests[{i}].spec.name", f"{req.spec.name!r} is also requests[{j}]"))
    validate.check(violations)
    return [convert.vm_spec_from_pb(req.spec) for req in request.requests]


def _result(req: vm_pb.CreateVmRequest | vm_pb.CreateVmsRequest, got: VmRecord | Exception,
            out: vm_pb.CreateVmsResponse | None = None) -> vm_pb.CreateVmsResponse:
    answer = vm_pb.CreateVmsResponse() if out is None else out
    if isinstance(got, Exception):
        answer.error.CopyFrom(as_status(got))
    else:
        convert.vm_to_pb(got, answer.vm)
    answer.name, answer.request_id = req.spec.name, req.request_id
    return answer


async def _watch(ops: Operations, prefix: str, start_revision: int = 0) -> AsyncIterator[tuple[list[Event], int]]:
    """etcd watch -> async generator, from `start_revision` (default: from now on); the watch is
    cancelled when the client goes away or the generator is closed."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[tuple[list[Event], int] | None] = asyncio.Queue(maxsize=10_000)
    if not start_revision:
        _, rev = await blocking(ops.store.get_prefix, prefix + "\x00none")  # the current revision
        start_revision = rev + 1
    cancel = ops.store.watch_prefix(prefix, start_revision,
                                    lambda evs, r: loop.call_soon_threadsafe(q.put_nowait, (evs, r)),
                                    lambda e: loop.call_soon_threadsafe(q.put_nowait, None))
    try:
        while True:
            item = await q.get()
            if item is None:
                return
            yield item
    finally:
        cancel()


class VmServicer(vm_grpc.VmServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def CreateVm(self, request: vm_pb.CreateVmRequest, context: Ctx) -> vm_pb.CreateVmResponse:
        rec = await self.ops.create_vm_async(_create_request(request), request.request_id)
        answer = vm_pb.CreateVmResponse()
        convert.vm_to_pb(rec, answer.vm)
        return answer

    async def _answer(self, req: vm_pb.CreateVmsRequest) -> vm_pb.CreateVmsResponse:
        """One VM of a stream: placed, or the status CreateVm would have failed with."""
        try:
            got: VmRecord | Exception = await self.ops.create_vm_async(_create_request(req), req.request_id)
        except Exception as e:
            got = e
        return _result(req, got)

    async def CreateVms(self, requests: AsyncIterator[vm_pb.CreateVmsRequest],
                        context: Ctx) -> AsyncIterator[vm_pb.CreateVmsResponse]:
        """Each request is placed concurrently with the others (the worker batches them) and
        answered as soon as it is decided; at most STREAM_IN_FLIGHT wait at once, so a client
        that sends faster than we place is slowed down, not buffered without bound."""
        answers: asyncio.Queue[vm_pb.CreateVmsResponse | None] = asyncio.Queue()
        room = asyncio.Semaphore(STREAM_IN_FLIGHT)

        async def one(req: vm_pb.CreateVmsRequest) -> None:
            try:
                answers.put_nowait(await self._answer(req))
            finally:
                room.release()

        async def read() -> None:
            tasks: set[asyncio.Task[None]] = set()
            try:
                async for req in requests:
                    await room.acquire()
                    t = asyncio.create_task(one(req))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.wait(tasks)
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
            await reader  # a broken request stream ends the call with its error
        finally:
            reader.cancel()

    @rpc
    async def BatchCreateVms(self, request: vm_pb.BatchCreateVmsRequest,
                             context: Ctx) -> vm_pb.BatchCreateVmsResponse:
        specs = _batch_create_request(request)
        got = await self.ops.create_vms_async([(s, r.request_id) for s, r in zip(specs, request.requests)])
        answer = vm_pb.BatchCreateVmsResponse()
        add = answer.results.add
        for r, g in zip(request.requests, got):
            _result(r, g, add())
        return answer

    @rpc
    async def GetVm(self, request: vm_pb.GetVmRequest, context: Ctx) -> vm_pb.GetVmResponse:
        _name(request.name)
        return vm_pb.GetVmResponse(vm=convert.vm_to_pb(await blocking(self.ops.get_vm, request.name)))

    @rpc
    async def ListVms(self, request: vm_pb.ListVmsRequest, context: Ctx) -> vm_pb.ListVmsResponse:
        if request.node:
            _name(request.node, "node")
        return vm_pb.ListVmsResponse(vms=[convert.vm_to_pb(r) for r in await blocking(self.ops.list_vms, request.node)])

    @rpc
    async def DeleteVm(self, request: vm_pb.DeleteVmRequest, context: Ctx) -> vm_pb.DeleteVmResponse:
        _name(request.name)
        await blocking(self.ops.delete_vm, request.name, request.keep_volumes)
        return vm_pb.DeleteVmResponse()

    @stream_rpc
    async def WatchVms(self, request: vm_pb.WatchVmsRequest, context: Ctx) -> AsyncIterator[vm_pb.WatchVmsResponse]:
        async for events, rev in _watch(self.ops, keys.VMS):
            for name in dict.fromkeys(keys.split(e.kv.key, keys.VMS)[0] for e in events):
                try:
                    vm = convert.vm_to_pb(await blocking(self.ops.get_vm, name))
                    kind = pb.EVENT_TYPE_PUT
                except Exception:
                    vm, kind = pb.Vm(spec=pb.VmSpec(name=name)), pb.EVENT_TYPE_DELETE
                yield vm_pb.WatchVmsResponse(type=kind, vm=vm, revision=rev)


class NodeServicer(node_grpc.NodeServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    def _pb(self, name: str) -> pb.Node:
        return convert.node_to_pb(self.ops.node(name), self.ops.config())

    @rpc
    async def ListNodes(self, request: node_pb.ListNodesRequest, context: Ctx) -> node_pb.ListNodesResponse:
        out: validate.Violations = []
        validate.labels(dict(request.label_selector), "label_selector", out)
        validate.check(out)
        config = self.ops.config()
        return node_pb.ListNodesResponse(nodes=[convert.node_to_pb(v, config)
                                                for v in self.ops.nodes(dict(request.label_selector))])

    @rpc
    async def GetNode(self, request: node_pb.GetNodeRequest, context: Ctx) -> node_pb.GetNodeResponse:
        _name(request.name)
        return node_pb.GetNodeResponse(node=self._pb(request.name))

    @rpc
    async def CordonNode(self, request: node_pb.CordonNodeRequest, context: Ctx) -> node_pb.CordonNodeResponse:
        _node_and_reason(request.name, request.reason)
        await blocking(self.ops.cordon, request.name, request.reason, True)
        return node_pb.CordonNodeResponse(node=self._pb(request.name))

    @rpc
    async def DrainNode(self, request: node_pb.DrainNodeRequest, context: Ctx) -> node_pb.DrainNodeResponse:
        _node_and_reason(request.name, request.reason)
        if not request.dry_run:
            await blocking(self.ops.cordon, request.name, request.reason or "drain", True)
        rb = await blocking(self.ops.planning.drain, request.name, request.dry_run)
        return node_pb.DrainNodeResponse(node=self._pb(request.name), rebalance=convert.rebalance_to_pb(rb))

    @rpc
    async def UncordonNode(self, request: node_pb.UncordonNodeRequest, context: Ctx) -> node_pb.UncordonNodeResponse:
        _name(request.name)
        await blocking(self.ops.cordon, request.name, "", False)
        return node_pb.UncordonNodeResponse(node=self._pb(request.name))

    @stream_rpc
    async def WatchNodes(self, request: node_pb.WatchNodesRequest, context: Ctx) -> AsyncIterator[node_pb.WatchNodesResponse]:
        async for events, rev in _watch(self.ops, keys.NODES):
            await blocking(self.ops.cache.wait_for_revision, rev, 2.0)
            for name in dict.fromkeys(keys.split(e.kv.key, keys.NODES)[0] for e in events):
                view = self.ops.cache.node(name)
                if view is None:
                    yield node_pb.WatchNodesResponse(type=pb.EVENT_TYPE_DELETE, node=pb.Node(name=name),
                                                     revision=rev)
                else:
                    yield node_pb.WatchNodesResponse(type=pb.EVENT_TYPE_PUT, revision=rev,
                                                     node=convert.node_to_pb(view, self.ops.config()))


class QosPolicyServicer(pol_grpc.QosPolicyServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def CreateQosPolicy(self, request: pol_pb.CreateQosPolicyRequest, context: Ctx) -> pol_pb.CreateQosPolicyResponse:
        validate.check(validate.policy(request.policy) if request.HasField("policy") else [("policy", "is required")])
        policy, created = await blocking(self.ops.create_policy, convert.policy_from_pb(request.policy),
                                         request.update_existing)
        return pol_pb.CreateQosPolicyResponse(policy=convert.policy_to_pb(policy), created=created)

    @rpc
    async def GetQosPolicy(self, request: pol_pb.GetQosPolicyRequest, context: Ctx) -> pol_pb.GetQosPolicyResponse:
        _name(request.name)
        return pol_pb.GetQosPolicyResponse(policy=convert.policy_to_pb(await blocking(self.ops.get_policy, request.name)))

    @rpc
    async def ListQosPolicies(self, request: pol_pb.ListQosPoliciesRequest, context: Ctx) -> pol_pb.ListQosPoliciesResponse:
        return pol_pb.ListQosPoliciesResponse(policies=[convert.policy_to_pb(p) for p in await blocking(self.ops.list_policies)])

    @rpc
    async def DeleteQosPolicy(self, request: pol_pb.DeleteQosPolicyRequest, context: Ctx) -> pol_pb.DeleteQosPolicyResponse:
        _name(request.name)
        await blocking(self.ops.delete_policy, request.name)
        return pol_pb.DeleteQosPolicyResponse()


class PlacementServicer(place_grpc.PlacementServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def ExplainPlacement(self, request: place_pb.ExplainPlacementRequest, context: Ctx) -> place_pb.ExplainPlacementResponse:
        violations = validate.vm_spec(request.spec) if request.HasField("spec") else [("spec", "is required")]
        if not 0 <= request.limit <= 1000:
            violations.append(("limit", f"must be between 0 and 1000, got {request.limit}"))
        validate.check(violations)
        ex = self.ops.explain(convert.vm_spec_from_pb(request.spec), request.request_id, request.limit or 10)
        return place_pb.ExplainPlacementResponse(
            placeable=ex.decision is not None, chosen_node=ex.decision.node if ex.decision else "",
            candidates=[convert.candidate_to_pb(c) for c in ex.candidates],
            rejection=convert.rejection_to_pb(ex.rejection) if ex.rejection else None,
            qos_class=convert.QOS_TO_PB[ex.qos_class] if ex.qos_class else pb.QOS_CLASS_UNSPECIFIED,
            snapshot_revision=ex.revision, nodes_scored=ex.nodes_scored, nodes_total=ex.nodes_total)

    @rpc
    async def GetSchedulerConfig(self, request: place_pb.GetSchedulerConfigRequest, context: Ctx) -> place_pb.GetSchedulerConfigResponse:
        return place_pb.GetSchedulerConfigResponse(config=convert.config_to_pb(self.ops.config()))

    @rpc
    async def UpdateSchedulerConfig(self, request: place_pb.UpdateSchedulerConfigRequest, context: Ctx) -> place_pb.UpdateSchedulerConfigResponse:
        validate.check(validate.config(request.config))
        new = convert.config_from_pb(request.config, self.ops.config())
        return place_pb.UpdateSchedulerConfigResponse(config=convert.config_to_pb(await blocking(self.ops.update_config, new)))


class CapacityServicer(cap_grpc.CapacityServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def GetCapacitySummary(self, request: cap_pb.GetCapacitySummaryRequest, context: Ctx) -> cap_pb.GetCapacitySummaryResponse:
        return convert.capacity_to_pb(self.ops.capacity())

    @rpc
    async def GetHeadroom(self, request: cap_pb.GetHeadroomRequest, context: Ctx) -> cap_pb.GetHeadroomResponse:
        validate.check(validate.headroom(request))
        rows = await blocking(self.ops.planning.headroom, convert.resources_from_pb(request.shape), request.qos_policy,
                              pairs(dict(request.node_selector)), request.one_per_node)
        return cap_pb.GetHeadroomResponse(headroom=[convert.headroom_to_pb(h) for h in rows])

    @rpc
    async def PlanHosts(self, request: cap_pb.PlanHostsRequest, context: Ctx) -> cap_pb.PlanHostsResponse:
        validate.check(validate.plan_hosts(request))
        vms = [(convert.resources_from_pb(v.resources), v.qos_policy, v.count) for v in request.vms]
        types = [HostType(t.name, convert.resources_from_pb(t.capacity), t.available) for t in request.host_types] \
            or [HostType("host", convert.resources_from_pb(request.host))]
        plan, type_of = await blocking(self.ops.planning.plan_hosts, vms, types, request.time_limit_s or 5.0)
        used = sorted(set(plan.packing.host.tolist()))
        by_type: dict[str, int] = {}
        for h in used:
            by_type[type_of[h]] = by_type.get(type_of[h], 0) + 1
        return cap_pb.PlanHostsResponse(hosts=plan.hosts, lower_bound=plan.lower_bound, optimal=plan.optimal,
                                        method=plan.method, host_of_vm=plan.packing.host.tolist(),
                                        seconds=plan.seconds, hosts_by_type=by_type,
                                        type_of_host={h: type_of[h] for h in used})

    @rpc
    async def SimulateNodeLoss(self, request: cap_pb.SimulateNodeLossRequest,
                               context: Ctx) -> cap_pb.SimulateNodeLossResponse:
        _name(request.node, "node")
        outcomes = await blocking(self.ops.planning.node_loss, request.node)
        out = cap_pb.SimulateNodeLossResponse(node=request.node)
        lost = Resources()
        for unit, got in outcomes:
            row = out.vms.add(vm=unit.vm, qos_class=convert.QOS_TO_PB[unit.qos_class],
                              reserved=convert.resources_to_pb(unit.reserved))
            if isinstance(got, Rejection):
                row.rejection.CopyFrom(convert.rejection_to_pb(got))
                out.lost += 1
                lost = lost + unit.reserved
            else:
                row.node = got.node
                out.replaced += 1
        out.reserved_lost.CopyFrom(convert.resources_to_pb(lost))
        return out

    @rpc
    async def GetCapacityReport(self, request: cap_pb.GetCapacityReportRequest,
                                context: Ctx) -> cap_pb.GetCapacityReportResponse:
        validate.check(validate.report(request))
        shapes = [(f"{s.resources.vcpus}cpu-{s.resources.memory_mib}mib", convert.resources_from_pb(s.resources))
                  for s in request.shapes] or None
        report = await blocking(self.ops.planning.report, shapes)
        return convert.report_to_pb(report, self.ops.capacity())

    @rpc
    async def PlanRebalance(self, request: cap_pb.PlanRebalanceRequest, context: Ctx) -> cap_pb.PlanRebalanceResponse:
        validate.check(validate.rebalance(request))
        rb = await blocking(self.ops.planning.plan_rebalance, convert.REBALANCE_GOAL_FROM_PB[request.goal],
                            request.max_migrations, request.imbalance_threshold, request.execute)
        return cap_pb.PlanRebalanceResponse(rebalance=convert.rebalance_to_pb(rb))

    @rpc
    async def GetRebalance(self, request: cap_pb.GetRebalanceRequest, context: Ctx) -> cap_pb.GetRebalanceResponse:
        validate.check(validate.rebalance_id(request.id))
        rb = await blocking(self.ops.rebalancer.get, request.id)
        return cap_pb.GetRebalanceResponse(rebalance=convert.rebalance_to_pb(rb))

    @rpc
    async def ListRebalances(self, request: cap_pb.ListRebalancesRequest,
                             context: Ctx) -> cap_pb.ListRebalancesResponse:
        rbs = await blocking(self.ops.rebalancer.list_all)
        return cap_pb.ListRebalancesResponse(rebalances=[convert.rebalance_to_pb(r) for r in rbs])


class MigrationServicer(mig_grpc.MigrationServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def MigrateVm(self, request: mig_pb.MigrateVmRequest, context: Ctx) -> mig_pb.MigrateVmResponse:
        validate.check(validate.migrate(request))
        m = await blocking(self.ops.migrate_vm, request.vm, request.target_node,
                           convert.migration_options_from_pb(request.options))
        return mig_pb.MigrateVmResponse(migration=convert.migration_to_pb(m))

    @rpc
    async def GetMigration(self, request: mig_pb.GetMigrationRequest, context: Ctx) -> mig_pb.GetMigrationResponse:
        validate.check(validate.migration_id(request.id))
        m = await blocking(self.ops.get_migration, request.id)
        return mig_pb.GetMigrationResponse(migration=convert.migration_to_pb(m))

    @rpc
    async def ListMigrations(self, request: mig_pb.ListMigrationsRequest,
                             context: Ctx) -> mig_pb.ListMigrationsResponse:
        if request.vm:
            _name(request.vm, "vm")
        ms = await blocking(self.ops.list_migrations, request.vm)
        return mig_pb.ListMigrationsResponse(migrations=[convert.migration_to_pb(m) for m in ms])

    @rpc
    async def CancelMigration(self, request: mig_pb.CancelMigrationRequest,
                              context: Ctx) -> mig_pb.CancelMigrationResponse:
        validate.check(validate.migration_id(request.id))
        m = await blocking(self.ops.cancel_migration, request.id)
        return mig_pb.CancelMigrationResponse(migration=convert.migration_to_pb(m))

    @stream_rpc
    async def WatchMigration(self, request: mig_pb.WatchMigrationRequest,
                             context: Ctx) -> AsyncIterator[mig_pb.WatchMigrationResponse]:
        validate.check(validate.migration_id(request.id))
        key = keys.migration(request.id)
        kvs, rev = await blocking(self.ops.store.get_prefix, key)
        if not kvs:
            raise NotFound(f"migration {request.id!r} not found")
        m = decode(Migration, json.loads(kvs[0].value))
        yield mig_pb.WatchMigrationResponse(migration=convert.migration_to_pb(m))
        if m.phase.done:
            return
        # From just after that read: no update in between is lost.
        async with aclosing(_watch(self.ops, key, rev + 1)) as updates:
            async for evs, _ in updates:
                for ev in evs:
                    if ev.kind == "put" and ev.kv.key == key:
                        m = decode(Migration, json.loads(ev.kv.value))
                        yield mig_pb.WatchMigrationResponse(migration=convert.migration_to_pb(m))
                if m.phase.done:
                    return
        raise Unavailable("the watch on the cluster state ended; watch again")


class NetworkServicer(net_grpc.NetworkServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def CreateNetwork(self, request: net_pb.CreateNetworkRequest, context: Ctx) -> net_pb.CreateNetworkResponse:
        validate.check(validate.network(request.network) if request.HasField("network")
                       else [("network", "is required")])
        n = request.network
        return net_pb.CreateNetworkResponse(network=convert.network_to_pb(
            await blocking(self.ops.create_network, n.name, n.cidr, n.vni)))

    @rpc
    async def GetNetwork(self, request: net_pb.GetNetworkRequest, context: Ctx) -> net_pb.GetNetworkResponse:
        _name(request.name)
        n = await blocking(self.ops.get_network, request.name)
        ports = await blocking(self.ops.list_ports, request.name)
        return net_pb.GetNetworkResponse(network=convert.network_to_pb(n),
                                         ports=[convert.port_to_pb(p, b) for p, b in ports])

    @rpc
    async def ListNetworks(self, request: net_pb.ListNetworksRequest, context: Ctx) -> net_pb.ListNetworksResponse:
        return net_pb.ListNetworksResponse(networks=[convert.network_to_pb(n)
                                                     for n in await blocking(self.ops.list_networks)])

    @rpc
    async def DeleteNetwork(self, request: net_pb.DeleteNetworkRequest, context: Ctx) -> net_pb.DeleteNetworkResponse:
        _name(request.name)
        await blocking(self.ops.delete_network, request.name)
        return net_pb.DeleteNetworkResponse()

    @rpc
    async def CreatePort(self, request: net_pb.CreatePortRequest, context: Ctx) -> net_pb.CreatePortResponse:
        validate.check(validate.port(request))
        p = await blocking(self.ops.create_endpoint, request.network, request.name, request.host, request.ip,
                           request.max_mbps)
        return net_pb.CreatePortResponse(port=convert.port_to_pb(p, []))

    @rpc
    async def ListPorts(self, request: net_pb.ListPortsRequest, context: Ctx) -> net_pb.ListPortsResponse:
        if request.network:
            _name(request.network, "network")
        ports = await blocking(self.ops.list_ports, request.network)
        return net_pb.ListPortsResponse(ports=[convert.port_to_pb(p, b) for p, b in ports])

    @rpc
    async def DeletePort(self, request: net_pb.DeletePortRequest, context: Ctx) -> net_pb.DeletePortResponse:
        _name(request.network, "network")
        _name(request.name)
        await blocking(self.ops.delete_endpoint, request.network, request.name)
        return net_pb.DeletePortResponse()


class VolumeServicer(vol_grpc.VolumeServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def CreateVolume(self, request: vol_pb.CreateVolumeRequest, context: Ctx) -> vol_pb.CreateVolumeResponse:
        validate.check(validate.volume(request.volume) if request.HasField("volume") else [("volume", "is required")])
        v = request.volume
        return vol_pb.CreateVolumeResponse(volume=convert.volume_to_pb(await blocking(
            self.ops.create_volume, v.name, convert.POOL_KIND_FROM_PB.get(v.pool), v.size_gib, v.host, v.image,
            v.snapshot)))

    @rpc
    async def GetVolume(self, request: vol_pb.GetVolumeRequest, context: Ctx) -> vol_pb.GetVolumeResponse:
        _name(request.name)
        return vol_pb.GetVolumeResponse(volume=convert.volume_to_pb(await blocking(self.ops.get_volume, request.name)))

    @rpc
    async def ListVolumes(self, request: vol_pb.ListVolumesRequest, context: Ctx) -> vol_pb.ListVolumesResponse:
        if request.vm:
            _name(request.vm, "vm")
        if request.host:
            _name(request.host, "host")
        vols = await blocking(self.ops.list_volumes, request.vm, request.host)
        return vol_pb.ListVolumesResponse(volumes=[convert.volume_to_pb(v) for v in vols
                                                   if not (request.unattached and v.vm)])

    @rpc
    async def AttachVolume(self, request: vol_pb.AttachVolumeRequest, context: Ctx) -> vol_pb.AttachVolumeResponse:
        _name(request.name)
        _name(request.vm, "vm")
        return vol_pb.AttachVolumeResponse(volume=convert.volume_to_pb(
            await blocking(self.ops.attach_volume, request.name, request.vm)))

    @rpc
    async def DetachVolume(self, request: vol_pb.DetachVolumeRequest, context: Ctx) -> vol_pb.DetachVolumeResponse:
        _name(request.name)
        return vol_pb.DetachVolumeResponse(volume=convert.volume_to_pb(
            await blocking(self.ops.detach_volume, request.name)))

    @rpc
    async def ResizeVolume(self, request: vol_pb.ResizeVolumeRequest, context: Ctx) -> vol_pb.ResizeVolumeResponse:
        _name(request.name)
        validate.check(validate.volume_size(request.size_gib, "size_gib"))
        return vol_pb.ResizeVolumeResponse(volume=convert.volume_to_pb(
            await blocking(self.ops.resize_volume, request.name, request.size_gib)))

    @rpc
    async def DeleteVolume(self, request: vol_pb.DeleteVolumeRequest, context: Ctx) -> vol_pb.DeleteVolumeResponse:
        _name(request.name)
        await blocking(self.ops.delete_volume, request.name)
        return vol_pb.DeleteVolumeResponse()

    @rpc
    async def ListPools(self, request: vol_pb.ListPoolsRequest, context: Ctx) -> vol_pb.ListPoolsResponse:
        return vol_pb.ListPoolsResponse(pools=[convert.pool_to_pb(p) for p in await blocking(self.ops.pools)])

    @rpc
    async def CreateSnapshot(self, request: vol_pb.CreateSnapshotRequest,
                             context: Ctx) -> vol_pb.CreateSnapshotResponse:
        validate.check(validate.snapshot(request.snapshot) if request.HasField("snapshot")
                       else [("snapshot", "is required")])
        return vol_pb.CreateSnapshotResponse(snapshot=convert.snapshot_to_pb(await blocking(
            self.ops.create_snapshot, request.snapshot.name, request.snapshot.volume)))

    @rpc
    async def GetSnapshot(self, request: vol_pb.GetSnapshotRequest, context: Ctx) -> vol_pb.GetSnapshotResponse:
        _name(request.name)
        return vol_pb.GetSnapshotResponse(snapshot=convert.snapshot_to_pb(
            await blocking(self.ops.get_snapshot, request.name)))

    @rpc
    async def ListSnapshots(self, request: vol_pb.ListSnapshotsRequest, context: Ctx) -> vol_pb.ListSnapshotsResponse:
        if request.volume:
            _name(request.volume, "volume")
        return vol_pb.ListSnapshotsResponse(snapshots=[convert.snapshot_to_pb(s) for s in
                                                       await blocking(self.ops.list_snapshots, request.volume)])

    @rpc
    async def DeleteSnapshot(self, request: vol_pb.DeleteSnapshotRequest,
                             context: Ctx) -> vol_pb.DeleteSnapshotResponse:
        _name(request.name)
        await blocking(self.ops.delete_snapshot, request.name)
        return vol_pb.DeleteSnapshotResponse()
