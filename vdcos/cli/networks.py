"""`vdcos network ...`: tenant networks and their ports."""
from __future__ import annotations

import argparse
from typing import Sequence

from vdcos.cli.common import Subparsers, connect, emit, enum_name, table
from vdcos.v1 import network_service_pb2 as net_pb


def port_rows(ports: Sequence[net_pb.Port]) -> str:
    return table(["NETWORK", "PORT", "KIND", "IP", "MAC", "BOUND_ON", "MAX_MBPS"],
                 [[p.network, p.name, enum_name(net_pb.PortKind, p.kind, "PORT_KIND_"), f"{p.ip}/{p.prefix_length}",
                   p.mac, ",".join(p.bound_hosts) or "-", p.max_mbps or "-"] for p in ports])


def cmd_network(args: argparse.Namespace) -> int:
    with connect(args) as c:
        cmd = args.network_command
        if cmd == "create":
            n = c.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(
                name=args.name, cidr=args.cidr, vni=args.vni, project=args.project or "")), timeout=args.timeout).network
            emit(args, n, lambda: f"network {n.name}: {n.cidr}, VNI {n.vni}")
        elif cmd == "list":
            r = c.networks.ListNetworks(net_pb.ListNetworksRequest(project=args.project or ""), timeout=args.timeout)
            emit(args, r, lambda: table(["NAME", "PROJECT", "VNI", "CIDR"],
                                        [[n.name, n.project or "-", n.vni, n.cidr] for n in r.networks]))
        elif cmd == "show":
            g = c.networks.GetNetwork(net_pb.GetNetworkRequest(name=args.name), timeout=args.timeout)
            emit(args, g, lambda: f"network {g.network.name}: {g.network.cidr}, VNI {g.network.vni}\n"
                 + port_rows(g.ports))
        elif cmd == "delete":
            c.networks.DeleteNetwork(net_pb.DeleteNetworkRequest(name=args.name), timeout=args.timeout)
            if args.output != "json":
                print(f"deleted network {args.name}")
        elif cmd == "ports":
            pr = c.networks.ListPorts(net_pb.ListPortsRequest(network=args.network or ""), timeout=args.timeout)
            emit(args, pr, lambda: port_rows(pr.ports))
        elif cmd == "endpoint":
            p = c.networks.CreatePort(net_pb.CreatePortRequest(network=args.network, name=args.name, host=args.host,
                                                               ip=args.ip or "", max_mbps=args.max_mbps),
                                      timeout=args.timeout).port
            emit(args, p, lambda: port_rows([p]))
        elif cmd == "delete-endpoint":
            c.networks.DeletePort(net_pb.DeletePortRequest(network=args.network, name=args.name), timeout=args.timeout)
            if args.output != "json":
                print(f"deleted port {args.network}/{args.name}")
    return 0


def register(sub: Subparsers) -> None:
    net = sub.add_parser("network", help="tenant networks on the distributed switch, and their ports")
    nsub = net.add_subparsers(dest="network_command", required=True)
    nc = nsub.add_parser("create")
    nc.add_argument("name")
    nc.add_argument("--cidr", required=True, help="IPv4, /16 to /29; tenants may overlap")
    nc.add_argument("--vni", type=int, default=0, help="default: allocated by vdcos")
    nc.add_argument("--project", help="the project that owns it (a project's token: its own)")
    nsub.add_parser("list").add_argument("--project", help="only this project's")
    nsub.add_parser("show").add_argument("name")
    nsub.add_parser("delete").add_argument("name")
    nsub.add_parser("ports").add_argument("--network")
    ne = nsub.add_parser("endpoint", help="a namespace on a host attached like a guest (probes, peers)")
    ne.add_argument("network")
    ne.add_argument("name")
    ne.add_argument("--host", required=True)
    ne.add_argument("--ip")
    ne.add_argument("--max-mbps", type=int, default=0)
    nd = nsub.add_parser("delete-endpoint")
    nd.add_argument("network")
    nd.add_argument("name")
    net.set_defaults(fn=cmd_network)

