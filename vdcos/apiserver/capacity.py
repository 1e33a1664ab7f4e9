"""CapacityService: capacity summary, headroom, hosts needed, node loss, reports and rebalancing."""
from __future__ import annotations

from vdcos.apiserver import convert, validate
from vdcos.apiserver.common import Ctx, blocking, check_name
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc
from vdcos.model import Resources, pairs
from vdcos.planner.cluster import HostType
from vdcos.scheduler.core import Rejection
from vdcos.v1 import capacity_service_pb2 as cap_pb
from vdcos.v1 import capacity_service_pb2_grpc as cap_grpc


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
        check_name(request.node, "node")
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
