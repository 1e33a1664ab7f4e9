"""QosPolicyService: create, get, list and delete QoS policies."""
from __future__ import annotations

from vdcos.apiserver import convert, validate
from vdcos.apiserver.common import Ctx, blocking, check_name
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc
from vdcos.v1 import qos_policy_service_pb2 as pol_pb
from vdcos.v1 import qos_policy_service_pb2_grpc as pol_grpc


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
        check_name(request.name)
        return pol_pb.GetQosPolicyResponse(policy=convert.policy_to_pb(await blocking(self.ops.get_policy, request.name)))

    @rpc
    async def ListQosPolicies(self, request: pol_pb.ListQosPoliciesRequest, context: Ctx) -> pol_pb.ListQosPoliciesResponse:
        return pol_pb.ListQosPoliciesResponse(policies=[convert.policy_to_pb(p) for p in await blocking(self.ops.list_policies)])

    @rpc
    async def DeleteQosPolicy(self, request: pol_pb.DeleteQosPolicyRequest, context: Ctx) -> pol_pb.DeleteQosPolicyResponse:
        check_name(request.name)
        await blocking(self.ops.delete_policy, request.name)
        return pol_pb.DeleteQosPolicyResponse()
