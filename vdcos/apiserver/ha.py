"""HaService: the HA controller's failed hosts and decisions, and admission control's headroom."""
from __future__ import annotations

from vdcos.apiserver import convert, validate
from vdcos.apiserver.common import Ctx, blocking
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc
from vdcos.controllers import ha
from vdcos.v1 import ha_service_pb2 as ha_pb
from vdcos.v1 import ha_service_pb2_grpc as ha_grpc


class HaServicer(ha_grpc.HaServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def GetHaStatus(self, request: ha_pb.GetHaStatusRequest, context: Ctx) -> ha_pb.GetHaStatusResponse:
        if not 0 <= request.event_limit <= 10_000:
            validate.check([("event_limit", f"must be between 0 (50) and 10000, got {request.event_limit}")])
        hosts, events, leader = await blocking(ha.status, self.ops.store, request.event_limit or 50)
        room = await blocking(self.ops.failover_capacity)
        return ha_pb.GetHaStatusResponse(
            leader=leader, host_failures_to_tolerate=room.failures, protected_vms=room.protected_vms,
            failover_capacity_ok=room.ok, failover_capacity_message=room.message,
            hosts=[convert.host_failure_to_pb(h) for h in hosts], events=[convert.ha_event_to_pb(e) for e in events])
