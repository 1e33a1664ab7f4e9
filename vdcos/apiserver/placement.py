"""PlacementService: explain a placement; read and change the scheduler's configuration."""
from __future__ import annotations

from vdcos.apiserver import convert, validate
from vdcos.apiserver.common import Ctx, blocking
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc
from vdcos.v1 import placement_service_pb2 as place_pb
from vdcos.v1 import placement_service_pb2_grpc as place_grpc
from vdcos.v1 import types_pb2 as pb


class PlacementServicer(place_grpc.PlacementServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def ExplainPlacement(self, request: place_pb.ExplainPlacementRequest, context: Ctx) -> place_pb.ExplainPlacementResponse:
        violations = validate.vm_spec(request.spec) if request.HasField("spec") else [("spec", "is required")]
        if not 0 <= request.limit <= 1000:
            violations.append(("limit", f"must be between 0 and 1000, got {request.limit}"))
        validate.check(violations)
        spec = convert.vm_spec_from_pb(request.spec)
        ex = self.ops.explain(spec.in_project(spec.project), request.request_id, request.limit or 10)
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
