"""`vdcos ha status`: the hosts the HA controller declared failed, what it did with their VMs,
its recent decisions, and admission control's failover headroom."""
from __future__ import annotations

import argparse

from vdcos.cli.common import Subparsers, connect, emit, table, when
from vdcos.v1 import ha_service_pb2 as ha_pb


def status_lines(r: ha_pb.GetHaStatusResponse) -> str:
    lines = [f"HA controller led by: {r.leader or 'nobody yet'}",
             f"admission control: host failures to tolerate {r.host_failures_to_tolerate}, "
             f"{r.protected_vms} protected VMs; {'OK' if r.failover_capacity_ok else 'SHORT'}: "
             f"{r.failover_capacity_message}"]
    if r.hosts:
        lines.append(table(["HOST", "PHASE", "DECLARED", "RESTARTED", "LOST", "WAITING", "STILL RUNNING", "MESSAGE"], [
            [h.node, h.phase, when(h.declared_at), len(h.restarted), len(h.lost), len(h.pending),
             len(h.still_running), h.message] for h in r.hosts]))
        for h in r.hosts:
            lines += [f"  {h.node}: {v.vm} lost: {v.reason}" for v in h.lost]
            lines += [f"  {h.node}: {v.vm} waits: {v.reason}" for v in h.pending]
    else:
        lines.append("no failed hosts")
    if r.events:
        lines.append(table(["TIME", "EVENT", "HOST", "VM", "EPOCH", "MESSAGE"], [
            [when(e.at), e.kind, e.node, e.vm or "-", e.epoch or "-", e.message] for e in r.events]))
    return "\n".join(lines)


def cmd_ha(args: argparse.Namespace) -> int:
    with connect(args) as c:
        r = c.ha.GetHaStatus(ha_pb.GetHaStatusRequest(event_limit=args.events), timeout=args.timeout)
    emit(args, r, lambda: status_lines(r))
    return 0


def register(sub: Subparsers) -> None:
    ha = sub.add_parser("ha", help="high availability: failed hosts, restarts, failover headroom")
    hsub = ha.add_subparsers(dest="ha_command", required=True)
    st = hsub.add_parser("status", help="failed hosts, what happened to their VMs, recent HA events")
    st.add_argument("--events", type=int, default=50, help="most recent events to show (default 50)")
    ha.set_defaults(fn=cmd_ha)
