"""`vdcos capacity ...` (what-if answers, the report) and `vdcos rebalance ...`."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from google.protobuf import json_format

from vdcos.cli.client import Client
from vdcos.cli.common import Subparsers, UsageError, connect, emit, enum_name, kv_list, table
from vdcos.model import DIMENSIONS
from vdcos.v1 import capacity_service_pb2 as cap_pb
from vdcos.v1 import types_pb2 as pb


def shape(args: argparse.Namespace) -> pb.Resources:
    return pb.Resources(vcpus=args.vcpus, memory_mib=args.memory_mib, disk_gib=args.disk_gib,
                        network_mbps=args.network_mbps, disk_iops=args.disk_iops)


def parse_vm_shapes(values: list[str]) -> list[cap_pb.VmShape]:
    """--vm COUNTxVCPUS:MEMORY_MIB[:POLICY], e.g. 10x4:8192:gold."""
    out = []
    for i, v in enumerate(values):
        try:
            count, rest = v.split("x", 1)
            parts = rest.split(":")
            if len(parts) not in (2, 3):
                raise ValueError
            out.append(cap_pb.VmShape(count=int(count), resources=pb.Resources(
                vcpus=int(parts[0]), memory_mib=int(parts[1])), qos_policy=parts[2] if len(parts) == 3 else ""))
        except ValueError:
            raise UsageError(f"--vm[{i}]: expected COUNTxVCPUS:MEMORY_MIB[:POLICY] (e.g. 10x4:8192:gold), "
                             f"got {v!r}") from None
    if not out:
        raise UsageError("--vm: give at least one VM shape")
    return out


CLASS_NAMES = {pb.QOS_CLASS_GUARANTEED: "guaranteed", pb.QOS_CLASS_BURSTABLE: "burstable",
               pb.QOS_CLASS_BEST_EFFORT: "best-effort"}


def rebalance_lines(rb: cap_pb.Rebalance) -> str:
    head = [f"{enum_name(cap_pb.RebalanceGoal, rb.goal, 'REBALANCE_GOAL_')} "
            f"{rb.id or '(plan only: nothing runs)'}  state {enum_name(cap_pb.RebalanceState, rb.state, 'REBALANCE_STATE_')}"
            + ("  (automatic)" if rb.automatic else "")]
    if rb.goal != cap_pb.REBALANCE_GOAL_EVACUATE:
        head.append(f"hosts in use {rb.hosts_in_use_before} -> {rb.hosts_in_use_after}; load std. dev. "
                    f"{rb.imbalance_before:.3f} -> {rb.imbalance_after:.3f}")
    if rb.hosts_freed:
        head.append("hosts freed: " + ", ".join(rb.hosts_freed))
    rows = [[i + 1, s.vm, s.source_node, s.target_node or "(scheduler)", s.state, s.message or s.reason]
            for i, s in enumerate(rb.steps)]
    out = "\n".join(head)
    if rows:
        out += "\n" + table(["STEP", "VM", "FROM", "TO", "STATE", "NOTE"], rows)
    for vm, why in sorted(rb.unmovable.items()):
        out += f"\nstays: {vm}: {why}"
    if rb.message:
        out += f"\n{rb.message}"
    return out


def wait_rebalance(c: Client, args: argparse.Namespace, rb: cap_pb.Rebalance) -> cap_pb.Rebalance:
    done = (cap_pb.REBALANCE_STATE_COMPLETED, cap_pb.REBALANCE_STATE_FAILED)
    seen = 0
    while rb.id and rb.state not in done:
        time.sleep(0.5)
        rb = c.capacity.GetRebalance(cap_pb.GetRebalanceRequest(id=rb.id), timeout=args.timeout).rebalance
        finished = sum(1 for s in rb.steps if s.state in ("done", "failed", "skipped"))
        if args.output != "json" and finished > seen:
            for s in rb.steps[seen:finished]:
                print(f"  {s.vm}: {s.source_node} -> {s.target_node or '?'} {s.state}"
                      + (f" ({s.message})" if s.state != "done" and s.message else ""))
            seen = finished
    return rb


def parse_host_types(values: list[str]) -> list[cap_pb.HostType]:
    out = []
    for i, v in enumerate(values):
        try:
            name, rest = v.split("=", 1)
            parts = [int(x) for x in rest.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            out.append(cap_pb.HostType(name=name, capacity=pb.Resources(vcpus=parts[0], memory_mib=parts[1]),
                                       available=parts[2] if len(parts) == 3 else 0))
        except ValueError:
            raise UsageError(f"--host-type[{i}]: expected NAME=VCPUS:MEMORY_MIB[:COUNT] (e.g. big=64:262144:4), "
                             f"got {v!r}") from None
    return out


def cmd_capacity(args: argparse.Namespace) -> int:
    shapes = parse_vm_shapes(args.vm) if args.capacity_command == "hosts" else []
    types = parse_host_types(args.host_type) if args.capacity_command == "hosts" else []
    if args.capacity_command == "hosts" and not types and not (args.host_vcpus and args.host_memory_mib):
        raise UsageError("--host-vcpus and --host-memory-mib: give one host's size (or --host-type)")
    with connect(args) as c:
        if args.capacity_command == "headroom":
            h = c.capacity.GetHeadroom(cap_pb.GetHeadroomRequest(
                shape=shape(args), qos_policy=args.policy or "", node_selector=kv_list(args.selector, "--selector"),
                one_per_node=args.one_per_node), timeout=args.timeout)
            emit(args, h, lambda: table(["CLASS", "MORE VMS", "LIMITED BY"], [
                [CLASS_NAMES[x.qos_class], "unbounded (reserves nothing)" if x.unbounded else x.count,
                 ", ".join(f"{d} on {n} nodes" for d, n in sorted(x.limited_by.items(), key=lambda kv: -kv[1]))]
                for x in h.headroom]))
        elif args.capacity_command == "hosts":
            req = cap_pb.PlanHostsRequest(vms=shapes, time_limit_s=args.time_limit, host_types=types)
            if not types:
                req.host.CopyFrom(pb.Resources(vcpus=args.host_vcpus, memory_mib=args.host_memory_mib,
                                               disk_gib=args.host_disk_gib, network_mbps=args.host_network_mbps,
                                               disk_iops=args.host_disk_iops))
            r = c.capacity.PlanHosts(req, timeout=max(args.timeout, args.time_limit + 30))
            mix = ", ".join(f"{n} {k}" for n, k in sorted(r.hosts_by_type.items())) if types else ""
            emit(args, r, lambda: f"{r.hosts} hosts{f' ({mix})' if mix else ''} "
                                  f"({'optimal' if r.optimal else f'no fewer than {r.lower_bound}'}; "
                                  f"{r.method}, {r.seconds:.1f} s)")
        elif args.capacity_command == "lose":
            r = c.capacity.SimulateNodeLoss(cap_pb.SimulateNodeLossRequest(node=args.node), timeout=args.timeout)
            emit(args, r, lambda: table(["VM", "CLASS", "VCPUS", "MEMORY_MIB", "RE-PLACED ON"], [
                [v.vm, CLASS_NAMES.get(v.qos_class, "?"), v.reserved.vcpus, v.reserved.memory_mib,
                 v.node or f"nowhere: {v.rejection.summary}"] for v in r.vms])
                + f"\n{r.replaced} re-placed, {r.lost} lost ({r.reserved_lost.vcpus} vCPUs, "
                  f"{r.reserved_lost.memory_mib} MiB reserved)\n" + failover_line(c, args))
        else:
            return capacity_report(c, args)
    return 0


def failover_line(c: Client, args: argparse.Namespace) -> str:
    from vdcos.v1 import ha_service_pb2 as ha_pb
    h = c.ha.GetHaStatus(ha_pb.GetHaStatusRequest(event_limit=1), timeout=args.timeout)
    return (f"failover headroom ({h.protected_vms} HA-protected VMs, tolerating "
            f"{h.host_failures_to_tolerate} host failures): {h.failover_capacity_message}")


def capacity_report(c: Client, args: argparse.Namespace) -> int:
    from vdcos.cli.report import draw, utilization
    r = c.capacity.GetCapacityReport(cap_pb.GetCapacityReportRequest(), timeout=args.timeout)
    if args.picture:
        draw(r, Path(args.picture))
    if args.json:
        Path(args.json).write_text(json.dumps(json_format.MessageToDict(r, preserving_proto_field_name=True),
                                              indent=2) + "\n")

    def human() -> str:
        names, rows = utilization(r)
        lines = [table(["NODE", *[d.upper() for d in DIMENSIONS], "VMS"],
                       [[n, *[f"{rows[j][i]:.0%}" for j in range(len(DIMENSIONS))], r.nodes[i].vms]
                        for i, n in enumerate(names)][:50])]
        if len(names) > 50:
            lines.append(f"... {len(names) - 50} more nodes (-o json or --json FILE for all)")
        lines.append("stranded (free where another dimension is full): "
                     + ", ".join(f"{d} {r.stranded.get(d, 0):.0f}" for d in DIMENSIONS))
        lines.append("headroom: " + "; ".join(f"{h.name} {h.guaranteed} guaranteed / {h.burstable} burstable"
                                              for h in r.headroom))
        lines.append(f"load std. dev. {r.imbalance:.3f}")
        lines.append(failover_line(c, args))
        if args.picture:
            lines.append(f"picture: {args.picture}")
        return "\n".join(lines)
    emit(args, r, human)
    return 0


def cmd_rebalance(args: argparse.Namespace) -> int:
    with connect(args) as c:
        if args.rebalance_command in ("plan", "run"):
            goal = {"consolidate": cap_pb.REBALANCE_GOAL_CONSOLIDATE, "balance": cap_pb.REBALANCE_GOAL_BALANCE}
            rb = c.capacity.PlanRebalance(cap_pb.PlanRebalanceRequest(
                goal=goal[args.goal], max_migrations=args.max_migrations, imbalance_threshold=args.threshold,
                execute=args.rebalance_command == "run"), timeout=args.timeout).rebalance
            if args.rebalance_command == "run" and not args.no_wait:
                rb = wait_rebalance(c, args, rb)
        elif args.rebalance_command == "show":
            rb = c.capacity.GetRebalance(cap_pb.GetRebalanceRequest(id=args.id), timeout=args.timeout).rebalance
        else:
            lr = c.capacity.ListRebalances(cap_pb.ListRebalancesRequest(), timeout=args.timeout)
            emit(args, lr, lambda: table(["ID", "GOAL", "STATE", "STEPS", "AUTO"], [
                [r.id, enum_name(cap_pb.RebalanceGoal, r.goal, "REBALANCE_GOAL_"),
                 enum_name(cap_pb.RebalanceState, r.state, "REBALANCE_STATE_"), len(r.steps),
                 "yes" if r.automatic else ""] for r in lr.rebalances]))
            return 0
    emit(args, rb, lambda: rebalance_lines(rb))
    return 0 if rb.state != cap_pb.REBALANCE_STATE_FAILED else 1


def register(sub: Subparsers) -> None:
    cap = sub.add_parser("capacity", help="what-if: headroom, hosts needed, losing a host; the capacity report")
    capsub = cap.add_subparsers(dest="capacity_command", required=True)
    hr = capsub.add_parser("headroom", help="how many more VMs of a shape fit now, per QoS class")
    hr.add_argument("--vcpus", type=int, required=True)
    hr.add_argument("--memory-mib", type=int, required=True)
    hr.add_argument("--disk-gib", type=int, default=0)
    hr.add_argument("--network-mbps", type=int, default=0)
    hr.add_argument("--disk-iops", type=int, default=0)
    hr.add_argument("--policy", help="only this policy's class (with its IOPS reservation)")
    hr.add_argument("--selector", action="append", default=[], metavar="KEY=VALUE")
    hr.add_argument("--one-per-node", action="store_true", help="as a hard anti-affinity group")
    hh = capsub.add_parser("hosts", help="how many hosts of a type a list of VMs needs")
    hh.add_argument("--vm", action="append", default=[], metavar="COUNTxVCPUS:MEMORY_MIB[:POLICY]")
    hh.add_argument("--host-type", action="append", default=[], metavar="NAME=VCPUS:MEMORY_MIB[:COUNT]",
                    help="heterogeneous hosts, instead of --host-*: the types on offer (COUNT 0 or none: as many "
                         "as needed)")
    hh.add_argument("--host-vcpus", type=int, default=0)
    hh.add_argument("--host-memory-mib", type=int, default=0)
    hh.add_argument("--host-disk-gib", type=int, default=0)
    hh.add_argument("--host-network-mbps", type=int, default=0)
    hh.add_argument("--host-disk-iops", type=int, default=0)
    hh.add_argument("--time-limit", type=float, default=5.0, metavar="SECONDS")
    capsub.add_parser("lose", help="what breaks if a host is lost").add_argument("node")
    rp = capsub.add_parser("report", help="utilization, stranded capacity, headroom (and a picture)")
    rp.add_argument("-o", dest="picture", metavar="FILE.png", help="draw the report into this PNG")
    rp.add_argument("--json", metavar="FILE", help="write the report as JSON")
    cap.set_defaults(fn=cmd_capacity)

    rb = sub.add_parser("rebalance", help="consolidate (free hosts) or balance by live migration")
    rbsub = rb.add_subparsers(dest="rebalance_command", required=True)
    for name, text in (("plan", "show the moves; nothing runs"), ("run", "plan and carry it out now")):
        p = rbsub.add_parser(name, help=text)
        p.add_argument("goal", choices=["consolidate", "balance"])
        p.add_argument("--max-migrations", type=int, default=0, help="default: the configured cap")
        p.add_argument("--threshold", type=float, default=0.0, help="balance: the std. dev. to get under")
        if name == "run":
            p.add_argument("--no-wait", action="store_true", help="print the id and return")
    rbsub.add_parser("show").add_argument("id")
    rbsub.add_parser("list")
    rb.set_defaults(fn=cmd_rebalance)

