"""NetworkService: tenant networks and their ports."""
from __future__ import annotations

from vdcos.apiserver import convert, validate
from vdcos.apiserver.common import Ctx, blocking, check_name
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import network_service_pb2_grpc as net_grpc


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
        check_name(request.name)
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
        check_name(request.name)
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
            check_name(request.network, "network")
        ports = await blocking(self.ops.list_ports, request.network)
        return net_pb.ListPortsResponse(ports=[convert.port_to_pb(p, b) for p, b in ports])

    @rpc
    async def DeletePort(self, request: net_pb.DeletePortRequest, context: Ctx) -> net_pb.DeletePortResponse:
        check_name(request.network, "network")
        check_name(request.name)
        await blocking(self.ops.delete_endpoint, request.network, request.name)
        return net_pb.DeletePortResponse()
