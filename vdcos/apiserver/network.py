"""NetworkService: tenant networks and their ports."""
from __future__ import annotations

from vdcos.apiserver import convert, scope, validate
from vdcos.apiserver.common import Ctx, blocking, check_name
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import network_service_pb2_grpc as net_grpc


class NetworkServicer(net_grpc.NetworkServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    async def _visible(self, network: str, within: scope.Scope) -> None:
        """NOT_FOUND for another project's network, as for a missing one."""
        if within.project is not None:
            within.check((await blocking(self.ops.get_network, network)).project, f"network {network!r}")

    @rpc
    async def CreateNetwork(self, request: net_pb.CreateNetworkRequest, context: Ctx) -> net_pb.CreateNetworkResponse:
        validate.check(validate.network(request.network) if request.HasField("network")
                       else [("network", "is required")])
        n = request.network
        project = scope.current().owner(n.project)
        return net_pb.CreateNetworkResponse(network=convert.network_to_pb(
            await blocking(self.ops.create_network, n.name, n.cidr, n.vni, project)))

    @rpc
    async def GetNetwork(self, request: net_pb.GetNetworkRequest, context: Ctx) -> net_pb.GetNetworkResponse:
        check_name(request.name)
        n = await blocking(self.ops.get_network, request.name)
        scope.current().check(n.project, f"network {request.name!r}")
        ports = await blocking(self.ops.list_ports, request.name)
        return net_pb.GetNetworkResponse(network=convert.network_to_pb(n),
                                         ports=[convert.port_to_pb(p, b) for p, b in ports])

    @rpc
    async def ListNetworks(self, request: net_pb.ListNetworksRequest, context: Ctx) -> net_pb.ListNetworksResponse:
        if request.project:
            check_name(request.project, "project")
        sees = scope.current().sees
        return net_pb.ListNetworksResponse(networks=[
            convert.network_to_pb(n) for n in await blocking(self.ops.list_networks)
            if sees(n.project) and (not request.project or n.project == request.project)])

    @rpc
    async def DeleteNetwork(self, request: net_pb.DeleteNetworkRequest, context: Ctx) -> net_pb.DeleteNetworkResponse:
        check_name(request.name)
        await blocking(self.ops.delete_network, request.name, scope.current().project)
        return net_pb.DeleteNetworkResponse()

    @rpc
    async def CreatePort(self, request: net_pb.CreatePortRequest, context: Ctx) -> net_pb.CreatePortResponse:
        validate.check(validate.port(request))
        within = scope.current()
        await self._visible(request.network, within)
        # Checked again in the port's transaction: the network cannot change hands meanwhile.
        p = await blocking(self.ops.create_endpoint, request.network, request.name, request.host, request.ip,
                           request.max_mbps, within.project)
        return net_pb.CreatePortResponse(port=convert.port_to_pb(p, []))

    @rpc
    async def ListPorts(self, request: net_pb.ListPortsRequest, context: Ctx) -> net_pb.ListPortsResponse:
        if request.network:
            check_name(request.network, "network")
        within = scope.current()
        if request.network:
            await self._visible(request.network, within)
        ports = await blocking(self.ops.list_ports, request.network)
        if within.project is not None and not request.network:
            mine = {n.name for n in await blocking(self.ops.list_networks) if n.project == within.project}
            ports = [(p, b) for p, b in ports if p.network in mine]
        return net_pb.ListPortsResponse(ports=[convert.port_to_pb(p, b) for p, b in ports])

    @rpc
    async def DeletePort(self, request: net_pb.DeletePortRequest, context: Ctx) -> net_pb.DeletePortResponse:
        check_name(request.network, "network")
        check_name(request.name)
        await self._visible(request.network, scope.current())
        await blocking(self.ops.delete_endpoint, request.network, request.name)
        return net_pb.DeletePortResponse()
