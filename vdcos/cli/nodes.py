"""`vdcos nodes | cordon | uncordon | node drain`."""
from __future__ import annotations

import argparse
from typing import Sequence

from vdcos.cli.capacity import rebalance_lines, wait_rebalance
from vdcos.cli.common import Subparsers, connect, emit, enum_name, kv_list, table
from vdcos.v1 import capacity_service_pb2 as cap_pb
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import types_pb2 as pb


def node_rows(nodes: Sequence[pb.Node]) -> str:
    rows = []
    for n in nodes:
        state = (enum_name(pb.NodeState, n.state, "NODE_STATE_") + (",cordoned" if n.cordoned else "")
                 + (f",ha:{n.ha_state}" if n.ha_state else ""))
        rows.append([n.name, state, f"{n.committed.vcpus}/{n.allocatable.vcpus}",
                     f"{n.guaranteed.vcpus}/{n.capacity.vcpus}",
                     f"{n.committed.memory_mib}/{n.allocatable.memory_mib}",
                     f"{n.committed.disk_gib}/{n.allocatable.disk_gib}", n.vm_count,
                     ",".join(f"{k}={v}" for k, v in sorted(n.labels.items()))])
    return table(["NODE", "STATE", "VCPU(commit/alloc)", "VCPU(guar/phys)", "MEM_MIB(commit/alloc)",
                  "DISK_GIB", "VMS", "LABELS"], rows)


def cmd_nodes(args: argparse.Namespace) -> int:
    with connect(args) as c:
        r = c.nodes.ListNodes(node_pb.ListNodesRequest(label_selector=kv_list(args.selector, "--selector")),
                              timeout=args.timeout)
    emit(args, r, lambda: node_rows(r.nodes))
    return 0


def cmd_cordon(args: argparse.Namespace) -> int:
    with connect(args) as c:
        if args.command == "cordon":
            node = c.nodes.CordonNode(node_pb.CordonNodeRequest(name=args.node, reason=args.reason),
                                      timeout=args.timeout).node
        else:
            node = c.nodes.UncordonNode(node_pb.UncordonNodeRequest(name=args.node), timeout=args.timeout).node
    emit(args, node, lambda: node_rows([node]))
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    with connect(args) as c:
        r = c.nodes.DrainNode(node_pb.DrainNodeRequest(name=args.node, reason=args.reason, dry_run=args.dry_run),
                              timeout=args.timeout)
        rb = r.rebalance
        if not args.dry_run and not args.no_wait:
            if args.output != "json":
                print(f"{args.node} cordoned; moving {len(rb.steps)} VMs by live migration")
            rb = wait_rebalance(c, args, rb)
    emit(args, rb, lambda: rebalance_lines(rb))
    return 0 if rb.state != cap_pb.REBALANCE_STATE_FAILED else 1


def register(sub: Subparsers) -> None:
    nodes = sub.add_parser("nodes", help="list nodes")
    nodes.add_argument("--selector", action="append", default=[], metavar="KEY=VALUE")
    nodes.set_defaults(fn=cmd_nodes)
    for name in ("cordon", "uncordon"):
        p = sub.add_parser(name, help=f"{name} a node")
        p.add_argument("node")
        if name == "cordon":
            p.add_argument("--reason", default="")
        p.set_defaults(fn=cmd_cordon)



def register_drain(sub: Subparsers) -> None:
    nd = sub.add_parser("node", help="maintenance: drain a node")
    ndsub = nd.add_subparsers(dest="node_command", required=True)
    dr = ndsub.add_parser("drain", help="cordon, then move every VM off by live migration")
    dr.add_argument("node")
    dr.add_argument("--reason", default="")
    dr.add_argument("--dry-run", action="store_true", help="where each VM would go; nothing changes")
    dr.add_argument("--no-wait", action="store_true")
    nd.set_defaults(fn=cmd_node)

