"""`vdcos usage`: metered usage per project and QoS class, or per VM (--vms)."""
from __future__ import annotations

import argparse
import time

from vdcos.cli.common import Subparsers, connect, emit, table
from vdcos.cli.tokens import seconds
from vdcos.v1 import usage_service_pb2 as use_pb


def _cols(a: use_pb.UsageAmounts) -> list[str]:
    return [f"{a.vcpu_reserved_seconds / 3600:.2f}", f"{a.vcpu_used_seconds / 3600:.3f}",
            f"{a.memory_gib_seconds / 3600:.2f}", f"{a.disk_gib_seconds / 3600:.1f}", f"{a.network_bytes / 2**20:.1f}"]


AMOUNTS = ["VCPU-H RESERVED", "VCPU-H USED", "MEM GIB-H", "DISK GIB-H", "NET MIB"]


def cmd_usage(args: argparse.Namespace) -> int:
    req = use_pb.GetUsageRequest(project=args.project or "", vm=args.vm or "")
    if args.since:
        req.since.FromSeconds(int(time.time()) - seconds(args.since))
    with connect(args) as c:
        r = c.usage.GetUsage(req, timeout=args.timeout)
    if args.vms or args.vm:
        emit(args, r, lambda: table(["VM", "PROJECT", "CLASS", *AMOUNTS, "DELETED"], [
            [u.vm, u.project or "-", u.qos_class, *_cols(u.amounts), "yes" if u.HasField("deleted_at") else ""]
            for u in r.vms]))
    else:
        emit(args, r, lambda: table(["PROJECT", "CLASS", "VMS", *AMOUNTS], [
            [p.project or "-", p.qos_class, str(p.vms), *_cols(p.amounts)] for p in r.projects]))
    return 0


def register(sub: Subparsers) -> None:
    u = sub.add_parser("usage", help="metered usage: vCPU-hours reserved and used, memory and disk GiB-hours, "
                                     "network bytes, per project and QoS class")
    u.add_argument("--project", help="only this project's")
    u.add_argument("--vm", help="only this VM's")
    u.add_argument("--since", help="from this long ago, by whole hours: 3600, 90m, 24h, 7d (default: all)")
    u.add_argument("--vms", action="store_true", help="one row per VM")
    u.set_defaults(fn=cmd_usage)
