"""NodeService: list, get, cordon, drain, uncordon and watch nodes."""
from __future__ import annotations

from typing import AsyncIterator

from vdcos.apiserver import convert, validate
from vdcos.apiserver.common import Ctx, blocking, check_name, check_node_and_reason, watch
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc, stream_rpc
from vdcos.state import keys
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import node_service_pb2_grpc as node_grpc
from vdcos.v1 import types_pb2 as pb


class NodeServicer(node_grpc.NodeServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    def _pb(self, name: str) -> pb.Node:
        return convert.node_to_pb(self.ops.node(name), self.ops.config(), self.ops.ha_states().get(name, ""))

    @rpc
    async def ListNodes(self, request: node_pb.ListNodesRequest, context: Ctx) -> node_pb.ListNodesResponse:
        out: validate.Violations = []
        validate.labels(dict(request.label_selector), "label_selector", out)
        validate.check(out)
        config = self.ops.config()
        ha = await blocking(self.ops.ha_states)
        return node_pb.ListNodesResponse(nodes=[convert.node_to_pb(v, config, ha.get(v.spec.name, ""))
                                                for v in self.ops.nodes(dict(request.label_selector))])

    @rpc
    async def GetNode(self, request: node_pb.GetNodeRequest, context: Ctx) -> node_pb.GetNodeResponse:
        check_name(request.name)
        return node_pb.GetNodeResponse(node=await blocking(self._pb, request.name))

    @rpc
    async def CordonNode(self, request: node_pb.CordonNodeRequest, context: Ctx) -> node_pb.CordonNodeResponse:
        check_node_and_reason(request.name, request.reason)
        await blocking(self.ops.cordon, request.name, request.reason, True)
        return node_pb.CordonNodeResponse(node=await blocking(self._pb, request.name))

    @rpc
    async def DrainNode(self, request: node_pb.DrainNodeRequest, context: Ctx) -> node_pb.DrainNodeResponse:
        check_node_and_reason(request.name, request.reason)
        if not request.dry_run:
            await blocking(self.ops.cordon, request.name, request.reason or "drain", True)
        rb = await blocking(self.ops.planning.drain, request.name, request.dry_run)
        return node_pb.DrainNodeResponse(node=await blocking(self._pb, request.name), rebalance=convert.rebalance_to_pb(rb))

    @rpc
    async def UncordonNode(self, request: node_pb.UncordonNodeRequest, context: Ctx) -> node_pb.UncordonNodeResponse:
        check_name(request.name)
        await blocking(self.ops.cordon, request.name, "", False)
        return node_pb.UncordonNodeResponse(node=await blocking(self._pb, request.name))

    @stream_rpc
    async def WatchNodes(self, request: node_pb.WatchNodesRequest, context: Ctx) -> AsyncIterator[node_pb.WatchNodesResponse]:
        async for events, rev in watch(self.ops, keys.NODES):
            await blocking(self.ops.cache.wait_for_revision, rev, 2.0)
            for name in dict.fromkeys(keys.split(e.kv.key, keys.NODES)[0] for e in events):
                view = self.ops.cache.node(name)
                if view is None:
                    yield node_pb.WatchNodesResponse(type=pb.EVENT_TYPE_DELETE, node=pb.Node(name=name),
                                                     revision=rev)
                else:
                    yield node_pb.WatchNodesResponse(type=pb.EVENT_TYPE_PUT, revision=rev,
                                                     node=convert.node_to_pb(view, self.ops.config()))
