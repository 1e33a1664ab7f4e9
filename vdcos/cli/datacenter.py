"""`vdcos up | down | status | demo`: the local datacenter."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vdcos import logs
from vdcos.cli import localdc
from vdcos.cli.common import Subparsers, UsageError, connect, emit, table
from vdcos.host.wakeup import DEVICE as WAKEUP_DEVICE
from vdcos.host.wakeup import CpuWakeupLatency
from vdcos.model import DIMENSIONS
from vdcos.security.tls import INSECURE_WARNING
from vdcos.v1 import capacity_service_pb2 as cap_pb


def cmd_up(args: argparse.Namespace) -> int:
    capacity = {"vcpus": args.host_vcpus, "memory_mib": args.host_memory_mib, "disk_gib": args.host_disk_gib,
                "network_mbps": args.host_network_mbps, "disk_iops": args.host_disk_iops}
    wakeup = args.cpu_wakeup_latency_us
    if wakeup is not None:
        try:
            CpuWakeupLatency(wakeup)
        except ValueError as e:
            raise UsageError(f"--cpu-wakeup-latency-us: {e}") from None
        if not os.access(WAKEUP_DEVICE, os.W_OK):
            raise UsageError(f"--cpu-wakeup-latency-us: {WAKEUP_DEVICE} is missing or not writable (needs root)")
    given = [args.hosts, args.driver, args.etcd_members, args.replicas]
    for name, default in (("hosts", 3), ("driver", "sim"), ("etcd_members", 1), ("replicas", 1)):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.hosts < 1:
        raise UsageError("--hosts: at least 1")
    if args.etcd_members not in (1, 3, 5):
        raise UsageError("--etcd-members: 1, 3 or 5 (a majority must survive a member's loss)")
    if not 1 <= args.replicas <= 9:
        raise UsageError("--replicas: from 1 to 9")
    home = Path(args.home)
    if args.log_json:  # inherited by every process up starts, and by the supervisor's restarts
        os.environ[logs.ENV] = "1"
    existing = localdc.LocalDatacenter.load(home)
    before = existing.alive() if existing else {}
    dc = localdc.up(home, args.hosts, args.driver, capacity, lease_ttl=args.lease_ttl,
                    cpu_wakeup_latency_us=wakeup, etcd_members=args.etcd_members, replicas=args.replicas,
                    insecure=args.insecure or args.up_insecure, with_prometheus=args.prometheus)
    if existing is not None:
        started = [name for name, ok in before.items() if not ok]
        print(f"datacenter was up already; started again: {', '.join(started) if started else 'nothing (all running)'}")
        shape = (dc.hosts, dc.driver, len(dc.etcd), len(dc.api))
        if shape != (args.hosts, args.driver, args.etcd_members, args.replicas) and any(v is not None for v in given):
            print(f"note: it keeps its shape ({dc.hosts} {dc.driver} hosts, {len(dc.etcd)} etcd members, "
                  f"{len(dc.api)} API replicas); `vdcos down --purge` deletes it to start another")
    if dc.insecure:
        print(f"WARNING: {INSECURE_WARNING}", file=sys.stderr)
    print(f"datacenter up: {dc.hosts} {dc.driver} hosts, API {dc.scheduler}, etcd {dc.etcd_endpoint}, "
          + ("PLAINTEXT (--insecure)" if dc.insecure else f"TLS (CA {dc.ca})"))
    if dc.prometheus:
        print(f"Prometheus: {dc.prometheus} (scrapes every process; "
              + ("plaintext)" if dc.insecure else "mutual TLS: query it with the operator's certificate)"))
    if dc.dashboard:
        print(f"dashboard: {dc.dashboard} (`vdcos dashboard` prints a link that signs you in)")
    print(f"state and logs: {dc.home}   stop it with: vdcos down" + (f" --home {args.home}" if args.home_set else ""))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stopped = localdc.down(Path(args.home), purge=args.purge)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    print(f"deleted the datacenter's state under {args.home}" if args.purge else
          "its state is kept: `vdcos up` brings the same datacenter back; `vdcos down --purge` deletes it")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    dc = localdc.LocalDatacenter.load(Path(args.home))
    if dc is not None and args.output != "json":
        alive = dc.alive()
        print(table(["PROCESS", "KIND", "PID", "ALIVE"],
                    [[p.name, p.kind, p.pid, "yes" if alive[p.name] else "NO"] for p in dc.procs]))
        print()
    with connect(args) as c:
        s = c.capacity.GetCapacitySummary(cap_pb.GetCapacitySummaryRequest(), timeout=args.timeout)

    def human() -> str:
        rows = [[dim, getattr(s.capacity, dim), getattr(s.allocatable, dim), getattr(s.guaranteed, dim),
                 getattr(s.committed, dim), getattr(s.free_committed, dim)]
                for dim in DIMENSIONS]
        head = (f"nodes: {s.nodes_ready}/{s.nodes_total} ready, {s.nodes_cordoned} cordoned; vms: {s.vms_total} "
                f"({', '.join(f'{k} {v}' for k, v in sorted(s.vms_by_class.items()))})")
        return head + "\n" + table(["RESOURCE", "CAPACITY", "ALLOCATABLE", "GUARANTEED", "COMMITTED", "FREE"], rows)
    emit(args, s, human)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from vdcos.cli.demo import run_demo
    return run_demo(args)


def register(sub: Subparsers) -> None:
    up = sub.add_parser("up", help="start a local datacenter: etcd, scheduler, N node agents")
    up.add_argument("--hosts", type=int, help="node agents (default 3)")
    up.add_argument("--driver", choices=["sim", "libvirt"],
                    help="libvirt: a real libvirtd + QEMU per host (default sim)")
    up.add_argument("--host-vcpus", type=int, default=16)
    up.add_argument("--host-memory-mib", type=int, default=65536)
    up.add_argument("--host-disk-gib", type=int, default=1000)
    up.add_argument("--host-network-mbps", type=int, default=10000)
    up.add_argument("--host-disk-iops", type=int, default=20000)
    up.add_argument("--lease-ttl", type=int, default=10,
                    help="seconds before a silent node is NotReady; a libvirt host then fences its guests and "
                         "the HA controller restarts its VMs elsewhere (HA tests and the demo use 5)")
    up.add_argument("--etcd-members", type=int, help="etcd cluster size: 1 (default), or 3 to survive a member's loss")
    up.add_argument("--replicas", type=int, help="API/scheduler processes, 1 by default (clients fail over between them)")
    up.add_argument("--cpu-wakeup-latency-us", type=int, metavar="US",
                    help="the scheduler holds this host's idle CPUs to this wake-up latency while it serves "
                         "(0: they poll instead of halting). Costs power; see vdcos/host/wakeup.py")
    up.add_argument("--log-json", action="store_true",
                    help="every daemon logs JSON lines, each with the request id of the call behind it "
                         "(vdcos/logs.py)")
    up.add_argument("--prometheus", action="store_true",
                    help="also run a Prometheus (Debian's package) that scrapes every process's metrics and etcd's, "
                         "following hosts that join and leave; its URL is in cluster.json under `prometheus`")
    up.add_argument("--insecure", action="store_true", dest="up_insecure",
                    help="DEVELOPMENT ONLY: no CA, no certificates, plaintext etcd and API that anyone on this "
                         "machine can read and change")
    up.set_defaults(fn=cmd_up)
    down = sub.add_parser("down", help="stop the local datacenter; its state is kept for `vdcos up`")
    down.add_argument("--purge", action="store_true",
                      help="also delete its state: etcd's data, the hosts' folders, volumes and VMs' disks")
    down.set_defaults(fn=cmd_down)
    sub.add_parser("status", help="processes and datacenter capacity").set_defaults(fn=cmd_status)



def register_demo(sub: Subparsers) -> None:
    demo = sub.add_parser("demo", help="bring up a datacenter, place a mix of VMs, explain a refusal")
    demo.add_argument("--hosts", type=int, default=3)
    demo.add_argument("--driver", choices=["libvirt", "sim"], default="libvirt",
                      help="libvirt: real QEMU guests (default); sim: in-memory hosts")
    demo.set_defaults(fn=cmd_demo)

