"""`vdcos`: the operator's command line. Human tables by default, `-o json` for scripts."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import grpc
import yaml
from google.protobuf import json_format

from vdcos.apiserver import validate
from vdcos.cli import localdc
from vdcos.cli.client import Client, describe_error, describe_status, rejection_lines
from vdcos.host.wakeup import DEVICE as WAKEUP_DEVICE
from vdcos.host.wakeup import CpuWakeupLatency
from vdcos.images import CATALOG
from vdcos.model import DIMENSIONS
from vdcos.v1 import capacity_service_pb2 as cap_pb
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import placement_service_pb2 as place_pb
from vdcos.v1 import qos_policy_service_pb2 as pol_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import volume_service_pb2 as vol_pb


class UsageError(Exception):
    """Bad input caught before anything was sent; names the field."""


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower().replace("_", "-")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers)] + [fmt.format(*r) for r in cells])


def emit(args: argparse.Namespace, msg: Any, human: Callable[[], str]) -> None:
    if args.output == "json":
        print(json.dumps(json_format.MessageToDict(msg, preserving_proto_field_name=True), indent=2))
    else:
        print(human())


def server_addr(args: argparse.Namespace) -> str:
    if args.server:
        return str(args.server)
    if os.environ.get("VDCOS_SERVER"):
        return os.environ["VDCOS_SERVER"]
    dc = localdc.LocalDatacenter.load(Path(args.home))
    if dc is None or not dc.scheduler:
        raise UsageError(f"no datacenter is up under {args.home}: run `vdcos up` or pass --server HOST:PORT")
    return dc.scheduler


# --- VM spec from flags ---------------------------------------------------------------------

def _kv_list(values: list[str], field: str) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise UsageError(f"{field}: expected key=value, got {v!r}")
        k, val = v.split("=", 1)
        out[k] = val
    return out


GROUP_POLICIES = {"affinity": pb.AFFINITY_POLICY_AFFINITY, "anti-affinity": pb.AFFINITY_POLICY_ANTI_AFFINITY,
                  "soft-affinity": pb.AFFINITY_POLICY_SOFT_AFFINITY,
                  "soft-anti-affinity": pb.AFFINITY_POLICY_SOFT_ANTI_AFFINITY}


def vm_spec(args: argparse.Namespace) -> pb.VmSpec:
    return pb.VmSpec(
        name=args.name, qos_policy=args.policy or "",
        resources=pb.Resources(vcpus=args.vcpus, memory_mib=args.memory_mib, disk_gib=args.disk_gib,
                               network_mbps=args.network_mbps, disk_iops=args.disk_iops),
        placement_group=args.group or "",
        group_policy=GROUP_POLICIES[args.group_policy] if args.group_policy else pb.AFFINITY_POLICY_UNSPECIFIED,
        node_selector=_kv_list(args.selector, "--selector"), networks=args.network, volumes=args.volume,
        image=args.image or "")


def add_spec_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("--vcpus", type=int, default=1)
    p.add_argument("--memory-mib", type=int, default=1024)
    p.add_argument("--disk-gib", type=int, default=10)
    p.add_argument("--network-mbps", type=int, default=100)
    p.add_argument("--disk-iops", type=int, default=0, help="IOPS to reserve (default: what the policy reserves)")
    p.add_argument("--policy", help="QoS policy name (default: the built-in burstable 'default')")
    p.add_argument("--group", help="placement group name")
    p.add_argument("--group-policy", choices=sorted(GROUP_POLICIES))
    p.add_argument("--selector", action="append", default=[], metavar="KEY=VALUE", help="node label to require")
    p.add_argument("--network", action="append", default=[])
    p.add_argument("--volume", action="append", default=[])
    p.add_argument("--image", choices=sorted(CATALOG), help="guest boot profile (libvirt hosts)")


def vm_rows(vms: Sequence[pb.Vm]) -> str:
    rows = []
    for v in vms:
        r, p = v.spec.resources, v.placement
        rows.append([v.spec.name, p.node or "-", _enum_name(pb.QosClass, p.qos_class, "QOS_CLASS_"),
                     v.spec.qos_policy or "default", r.vcpus, r.memory_mib, r.disk_gib, p.cpu_shares,
                     _enum_name(pb.VmPhase, v.status.phase, "VM_PHASE_"), v.spec.placement_group or "-"])
    return table(["NAME", "NODE", "QOS", "POLICY", "VCPU", "MEM_MIB", "DISK_GIB", "SHARES", "PHASE", "GROUP"], rows)


def node_rows(nodes: Sequence[pb.Node]) -> str:
    rows = []
    for n in nodes:
        state = _enum_name(pb.NodeState, n.state, "NODE_STATE_") + (",cordoned" if n.cordoned else "")
        rows.append([n.name, state, f"{n.committed.vcpus}/{n.allocatable.vcpus}",
                     f"{n.guaranteed.vcpus}/{n.capacity.vcpus}",
                     f"{n.committed.memory_mib}/{n.allocatable.memory_mib}",
                     f"{n.committed.disk_gib}/{n.allocatable.disk_gib}", n.vm_count,
                     ",".join(f"{k}={v}" for k, v in sorted(n.labels.items()))])
    return table(["NODE", "STATE", "VCPU(commit/alloc)", "VCPU(guar/phys)", "MEM_MIB(commit/alloc)",
                  "DISK_GIB", "VMS", "LABELS"], rows)


# --- commands -----------------------------------------------------------------------------

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
    dc = localdc.up(Path(args.home), args.hosts, args.driver, capacity, lease_ttl=args.lease_ttl,
                    cpu_wakeup_latency_us=wakeup)
    print(f"datacenter up: {args.hosts} {args.driver} hosts, scheduler {dc.scheduler}, etcd {dc.etcd}")
    print(f"state and logs: {dc.home}   stop it with: vdcos down" + (f" --home {args.home}" if args.home_set else ""))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stopped = localdc.down(Path(args.home))
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    dc = localdc.LocalDatacenter.load(Path(args.home))
    if dc is not None and args.output != "json":
        alive = dc.alive()
        print(table(["PROCESS", "PID", "ALIVE"], [[p.name, p.pid, "yes" if alive[p.name] else "NO"] for p in dc.procs]))
        print()
    with Client(server_addr(args)) as c:
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


def cmd_nodes(args: argparse.Namespace) -> int:
    with Client(server_addr(args)) as c:
        r = c.nodes.ListNodes(node_pb.ListNodesRequest(label_selector=_kv_list(args.selector, "--selector")),
                              timeout=args.timeout)
    emit(args, r, lambda: node_rows(r.nodes))
    return 0


def cmd_cordon(args: argparse.Namespace) -> int:
    with Client(server_addr(args)) as c:
        if args.command == "cordon":
            node = c.nodes.CordonNode(node_pb.CordonNodeRequest(name=args.node, reason=args.reason),
                                      timeout=args.timeout).node
        else:
            node = c.nodes.UncordonNode(node_pb.UncordonNodeRequest(name=args.node), timeout=args.timeout).node
    emit(args, node, lambda: node_rows([node]))
    return 0


def cmd_vm(args: argparse.Namespace) -> int:
    with Client(server_addr(args)) as c:
        if args.vm_command == "create" and args.count != 1:
            return create_many(c, args)
        if args.vm_command == "create":
            r = c.vms.CreateVm(vm_pb.CreateVmRequest(spec=vm_spec(args), request_id=args.request_id or ""),
                               timeout=args.timeout)
            emit(args, r.vm, lambda: vm_rows([r.vm]))
        elif args.vm_command == "list":
            lr = c.vms.ListVms(vm_pb.ListVmsRequest(node=args.node or ""), timeout=args.timeout)
            emit(args, lr, lambda: vm_rows(lr.vms))
        elif args.vm_command == "show":
            vm = c.vms.GetVm(vm_pb.GetVmRequest(name=args.name), timeout=args.timeout).vm
            emit(args, vm, lambda: json.dumps(json_format.MessageToDict(vm, preserving_proto_field_name=True),
                                              indent=2))
        elif args.vm_command == "migrate":
            return migrate(c, args)
        elif args.vm_command == "delete":
            c.vms.DeleteVm(vm_pb.DeleteVmRequest(name=args.name, keep_volumes=args.keep_volumes), timeout=args.timeout)
            if args.output != "json":
                print(f"deleted {args.name}")
    return 0


# VMs per BatchCreateVms call: the most the API takes (vm_service.proto).
BATCH_CREATE_MAX = 1000


def create_many(c: Client, args: argparse.Namespace) -> int:
    """NAME-1 .. NAME-COUNT in BatchCreateVms calls of up to 1000; each placed or refused on its own."""
    if not 1 <= args.count <= 10_000:
        raise UsageError(f"--count: between 1 and 10000, got {args.count}")
    # The names are what differ between the VMs: the longest is checked before anything is
    # sent, so that a later call cannot be refused after earlier ones created VMs.
    longest = f"{args.name}-{args.count}"
    bad: validate.Violations = []
    validate.name(longest, "NAME", bad)
    if bad:
        raise UsageError(f"NAME with --count {args.count}: {bad[0][1]}")
    base = vm_spec(args)
    reqs = []
    for i in range(1, args.count + 1):
        s = pb.VmSpec()
        s.CopyFrom(base)
        s.name = f"{args.name}-{i}"
        reqs.append(vm_pb.CreateVmRequest(spec=s, request_id=f"{args.request_id}-{i}" if args.request_id else ""))
    answers = []
    for at in range(0, len(reqs), BATCH_CREATE_MAX):
        chunk = reqs[at:at + BATCH_CREATE_MAX]
        answers += c.vms.BatchCreateVms(vm_pb.BatchCreateVmsRequest(requests=chunk), timeout=args.timeout).results
    placed = [a.vm for a in answers if not a.HasField("error")]
    failed = [a for a in answers if a.HasField("error")]
    if args.output == "json":
        print(json.dumps([json_format.MessageToDict(a, preserving_proto_field_name=True) for a in answers], indent=2))
    else:
        if placed:
            print(vm_rows(placed))
        for a in failed:
            print(f"{a.name}: {describe_status(a.error)}", file=sys.stderr)
        print(f"{len(placed)} of {len(reqs)} created", file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


PHASE_PREFIX = "MIGRATION_PHASE_"


def _phase(m: mig_pb.Migration) -> str:
    return _enum_name(mig_pb.MigrationPhase, m.phase, PHASE_PREFIX)


def progress_bar(m: mig_pb.Migration, width: int = 30) -> str:
    p = m.progress
    total = p.memory_total_bytes or 1
    done = min(1.0, p.memory_processed_bytes / total) if p.memory_total_bytes else 0.0
    if m.phase == mig_pb.MIGRATION_PHASE_COMPLETED:
        done = 1.0
    fill = int(done * width)
    mib = 1 << 20
    return (f"[{'#' * fill}{'.' * (width - fill)}] {done * 100:5.1f}%  {_phase(m):9} "
            f"pass {p.iteration}  {p.memory_processed_bytes // mib}/{p.memory_total_bytes // mib} MiB "
            f"remaining {p.memory_remaining_bytes // mib} MiB  {p.elapsed_ms / 1000:5.1f}s")


def migrate(c: Client, args: argparse.Namespace) -> int:
    opts = mig_pb.MigrationOptions(max_downtime_ms=args.max_downtime_ms, max_bandwidth_mibps=args.bandwidth_mibps,
                                   postcopy_after_iterations=args.postcopy_after)
    m = c.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm=args.name, target_node=args.to or "", options=opts),
                               timeout=args.timeout).migration
    if args.no_wait:
        emit(args, m, lambda: f"{m.id}: {m.vm} {m.source_node} -> {m.target_node} ({_phase(m)})")
        return 0
    tty = sys.stdout.isatty() and args.output != "json"
    if args.output != "json":
        print(f"{m.id}: migrating {m.vm} from {m.source_node} to {m.target_node}")
    last = m
    for ev in c.migrations.WatchMigration(mig_pb.WatchMigrationRequest(id=m.id), timeout=args.timeout + 600):
        last = ev.migration
        if args.output != "json":
            print(("\r" if tty else "") + progress_bar(last), end="" if tty else "\n", flush=True)
    if tty:
        print()
    ok = last.phase == mig_pb.MIGRATION_PHASE_COMPLETED
    if args.output == "json":
        emit(args, last, lambda: "")
    elif ok:
        downtime = f"{last.downtime_ms} ms" if last.downtime_ms >= 0 else "not reported"
        print(f"{last.vm} now runs on {last.target_node}: downtime {downtime}, "
              f"{last.total_ms} ms in all{' (' + last.message + ')' if last.message else ''}")
    else:
        print(f"migration {_phase(last)}: {last.message}", file=sys.stderr)
    return 0 if ok else 1


def port_rows(ports: Sequence[net_pb.Port]) -> str:
    return table(["NETWORK", "PORT", "KIND", "IP", "MAC", "BOUND_ON", "MAX_MBPS"],
                 [[p.network, p.name, _enum_name(net_pb.PortKind, p.kind, "PORT_KIND_"), f"{p.ip}/{p.prefix_length}",
                   p.mac, ",".join(p.bound_hosts) or "-", p.max_mbps or "-"] for p in ports])


def cmd_network(args: argparse.Namespace) -> int:
    with Client(server_addr(args)) as c:
        cmd = args.network_command
        if cmd == "create":
            n = c.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(
                name=args.name, cidr=args.cidr, vni=args.vni)), timeout=args.timeout).network
            emit(args, n, lambda: f"network {n.name}: {n.cidr}, VNI {n.vni}")
        elif cmd == "list":
            r = c.networks.ListNetworks(net_pb.ListNetworksRequest(), timeout=args.timeout)
            emit(args, r, lambda: table(["NAME", "VNI", "CIDR"], [[n.name, n.vni, n.cidr] for n in r.networks]))
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


def volume_rows(vols: Sequence[vol_pb.Volume]) -> str:
    return table(["NAME", "POOL", "SIZE_GIB", "HOST", "IMAGE", "VM", "STATE", "PATH"],
                 [[v.name, _enum_name(vol_pb.PoolKind, v.pool, "POOL_KIND_"), v.size_gib, v.host, v.image or "-",
                   v.vm or "-", _enum_name(vol_pb.VolumeState, v.state, "VOLUME_STATE_") + (f" ({v.message})" if v.message else ""),
                   v.path or "-"] for v in vols])


def cmd_volume(args: argparse.Namespace) -> int:
    with Client(server_addr(args)) as c:
        cmd = args.volume_command
        if cmd == "create":
            if not args.size_gib and not args.from_snapshot:
                raise UsageError("volume create: --size-gib is required (unless --from-snapshot)")
            # A restore's pool is the snapshot's unless asked (then it must match).
            if args.pool:
                pool = {"local": vol_pb.POOL_KIND_LOCAL, "shared": vol_pb.POOL_KIND_SHARED}[args.pool]
            else:
                pool = vol_pb.POOL_KIND_UNSPECIFIED if args.from_snapshot else vol_pb.POOL_KIND_LOCAL
            v = c.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
                name=args.name, pool=pool, size_gib=args.size_gib or 0, host=args.host or "", image=args.image or "",
                snapshot=args.from_snapshot or "")), timeout=args.timeout).volume
            emit(args, v, lambda: volume_rows([v]))
        elif cmd == "list":
            r = c.volumes.ListVolumes(vol_pb.ListVolumesRequest(vm=args.vm or "", host=args.host or "",
                                                                unattached=args.unattached), timeout=args.timeout)
            emit(args, r, lambda: volume_rows(r.volumes))
        elif cmd == "show":
            g = c.volumes.GetVolume(vol_pb.GetVolumeRequest(name=args.name), timeout=args.timeout).volume
            emit(args, g, lambda: volume_rows([g]))
        elif cmd == "delete":
            c.volumes.DeleteVolume(vol_pb.DeleteVolumeRequest(name=args.name), timeout=args.timeout)
            if args.output != "json":
                print(f"deleted volume {args.name}")
        elif cmd == "attach":
            a = c.volumes.AttachVolume(vol_pb.AttachVolumeRequest(name=args.name, vm=args.vm),
                                       timeout=args.timeout).volume
            emit(args, a, lambda: volume_rows([a]))
        elif cmd == "detach":
            d = c.volumes.DetachVolume(vol_pb.DetachVolumeRequest(name=args.name), timeout=args.timeout).volume
            emit(args, d, lambda: volume_rows([d]))
        elif cmd == "resize":
            r2 = c.volumes.ResizeVolume(vol_pb.ResizeVolumeRequest(name=args.name, size_gib=args.size_gib),
                                        timeout=args.timeout).volume
            emit(args, r2, lambda: volume_rows([r2]))
        elif cmd == "pools":
            p = c.volumes.ListPools(vol_pb.ListPoolsRequest(), timeout=args.timeout)
            emit(args, p, lambda: table(["HOST", "POOL", "CAPACITY_GIB", "AVAILABLE_GIB", "VOLUMES", "PATH"], [
                [x.host, _enum_name(vol_pb.PoolKind, x.kind, "POOL_KIND_"), f"{x.capacity_gib:.1f}",
                 f"{x.available_gib:.1f}", x.volumes, x.path] for x in p.pools]))
    return 0


def snapshot_rows(snaps: Sequence[vol_pb.Snapshot]) -> str:
    return table(["NAME", "VOLUME", "POOL", "SIZE_GIB", "HOST", "STATE", "LIVE", "PATH"],
                 [[x.name, x.volume, _enum_name(vol_pb.PoolKind, x.pool, "POOL_KIND_"), x.size_gib, x.host,
                   _enum_name(vol_pb.VolumeState, x.state, "VOLUME_STATE_") + (f" ({x.message})" if x.message else ""),
                   "yes" if x.live else "no", x.path or "-"] for x in snaps])


def cmd_snapshot(args: argparse.Namespace) -> int:
    with Client(server_addr(args)) as c:
        cmd = args.snapshot_command
        if cmd == "create":
            s = c.volumes.CreateSnapshot(vol_pb.CreateSnapshotRequest(snapshot=vol_pb.Snapshot(
                name=args.name, volume=args.volume)), timeout=args.timeout).snapshot
            emit(args, s, lambda: snapshot_rows([s]))
        elif cmd == "list":
            r = c.volumes.ListSnapshots(vol_pb.ListSnapshotsRequest(volume=args.volume or ""), timeout=args.timeout)
            emit(args, r, lambda: snapshot_rows(r.snapshots))
        elif cmd == "show":
            g = c.volumes.GetSnapshot(vol_pb.GetSnapshotRequest(name=args.name), timeout=args.timeout).snapshot
            emit(args, g, lambda: snapshot_rows([g]))
        elif cmd == "delete":
            c.volumes.DeleteSnapshot(vol_pb.DeleteSnapshotRequest(name=args.name), timeout=args.timeout)
            if args.output != "json":
                print(f"deleted snapshot {args.name}")
    return 0


def cmd_migration(args: argparse.Namespace) -> int:
    with Client(server_addr(args)) as c:
        if args.migration_command == "list":
            r = c.migrations.ListMigrations(mig_pb.ListMigrationsRequest(vm=args.vm or ""), timeout=args.timeout)
            emit(args, r, lambda: table(
                ["ID", "VM", "FROM", "TO", "PHASE", "DOWNTIME_MS", "TOTAL_MS", "MESSAGE"],
                [[m.id, m.vm, m.source_node, m.target_node, _phase(m), m.downtime_ms if m.downtime_ms >= 0 else "-",
                  m.total_ms, m.message[:60]] for m in r.migrations]))
        elif args.migration_command == "show":
            m = c.migrations.GetMigration(mig_pb.GetMigrationRequest(id=args.id), timeout=args.timeout).migration
            emit(args, m, lambda: json.dumps(json_format.MessageToDict(m, preserving_proto_field_name=True), indent=2))
        elif args.migration_command == "cancel":
            m = c.migrations.CancelMigration(mig_pb.CancelMigrationRequest(id=args.id), timeout=args.timeout).migration
            emit(args, m, lambda: f"{m.id}: {_phase(m)}{' (cancel requested)' if m.cancel_requested else ''}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    with Client(server_addr(args)) as c:
        r = c.placement.ExplainPlacement(place_pb.ExplainPlacementRequest(spec=vm_spec(args), limit=args.limit),
                                         timeout=args.timeout)

    def human() -> str:
        cls = _enum_name(pb.QosClass, r.qos_class, "QOS_CLASS_")
        if not r.placeable:
            return f"{args.name} ({cls}) cannot be placed: {r.rejection.summary}\n" + "\n".join(
                rejection_lines(r.rejection))
        rows = [[c.node, f"{c.score:.4f}", " ".join(f"{k}={v:.3f}" for k, v in sorted(c.scores.items()))]
                for c in r.candidates]
        sample = f", compared {r.nodes_scored} of {r.nodes_total} nodes" if r.nodes_scored < r.nodes_total else ""
        return (f"{args.name} ({cls}) would go to {r.chosen_node} (snapshot revision {r.snapshot_revision}{sample})\n"
                + table(["CANDIDATE", "SCORE", "SCORERS"], rows))
    emit(args, r, human)
    return 0


POLICY_FIELDS = {"name": str, "qos_class": str, "cpu_weight": int, "cpu_limit_percent": int,
                 "memory_limit_ratio": (int, float), "disk_iops_limit": int, "disk_mbps_limit": int,
                 "network_mbps_limit": int, "disk_iops_reservation": int, "description": str}
QOS_CLASSES = {"guaranteed": pb.QOS_CLASS_GUARANTEED, "burstable": pb.QOS_CLASS_BURSTABLE,
               "best-effort": pb.QOS_CLASS_BEST_EFFORT}


def load_policies(path: str) -> list[pb.QosPolicy]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as e:
        raise UsageError(f"-f: cannot read {path}: {e.strerror}")
    except yaml.YAMLError as e:
        raise UsageError(f"-f: {path} is not valid YAML: {e}")
    out = []
    for i, doc in enumerate(docs):
        where = f"{path} document {i + 1}"
        if not isinstance(doc, dict):
            raise UsageError(f"{where}: expected a mapping of policy fields")
        kind = doc.pop("kind", "QosPolicy")
        if kind != "QosPolicy":
            raise UsageError(f"{where}: kind: expected QosPolicy, got {kind!r}")
        for k, v in doc.items():
            want = POLICY_FIELDS.get(k)
            if want is None:
                raise UsageError(f"{where}: {k}: unknown field (known: {', '.join(POLICY_FIELDS)})")
            if isinstance(v, bool) or not isinstance(v, want):
                raise UsageError(f"{where}: {k}: expected {getattr(want, '__name__', 'number')}, got {v!r}")
        cls = doc.pop("qos_class", None)
        if cls not in QOS_CLASSES:
            raise UsageError(f"{where}: qos_class: must be one of {', '.join(QOS_CLASSES)}, got {cls!r}")
        out.append(pb.QosPolicy(qos_class=QOS_CLASSES[cls], **doc))
    if not out:
        raise UsageError(f"-f: {path} holds no policy")
    return out


def cmd_policy(args: argparse.Namespace) -> int:
    with Client(server_addr(args)) as c:
        if args.policy_command == "apply":
            policies = load_policies(args.file)
            results = [c.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(policy=p, update_existing=True),
                                                  timeout=args.timeout) for p in policies]
            if args.output == "json":
                print(json.dumps([json_format.MessageToDict(r, preserving_proto_field_name=True) for r in results]))
            else:
                for r in results:
                    print(f"qospolicy/{r.policy.name} {'created' if r.created else 'configured'}")
        elif args.policy_command == "list":
            lr = c.policies.ListQosPolicies(pol_pb.ListQosPoliciesRequest(), timeout=args.timeout)
            emit(args, lr, lambda: table(
                ["NAME", "CLASS", "CPU_WEIGHT", "CPU_LIMIT%", "MEM_LIMIT_RATIO", "NET_MBPS", "IOPS(resv/limit)",
                 "DESCRIPTION"],
                [[p.name, _enum_name(pb.QosClass, p.qos_class, "QOS_CLASS_"), p.cpu_weight, p.cpu_limit_percent,
                  p.memory_limit_ratio, p.network_mbps_limit, f"{p.disk_iops_reservation}/{p.disk_iops_limit}",
                  p.description] for p in lr.policies]))
        elif args.policy_command == "delete":
            c.policies.DeleteQosPolicy(pol_pb.DeleteQosPolicyRequest(name=args.name), timeout=args.timeout)
            print(f"qospolicy/{args.name} deleted")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    with Client(server_addr(args)) as c:
        if args.config_command == "set":
            cfg = pb.SchedulerConfig(overcommit=pb.Overcommit(
                vcpus=args.cpu_overcommit or 0, memory_mib=args.memory_overcommit or 0,
                disk_gib=args.disk_overcommit or 0, network_mbps=args.network_overcommit or 0,
                disk_iops=args.iops_overcommit or 0),
                strategy={"pack": pb.STRATEGY_PACK, "spread": pb.STRATEGY_SPREAD}.get(args.strategy or "", 0),
                max_migrations_per_host=args.max_migrations_per_host or 0, max_migrations=args.max_migrations or 0,
                rebalance_mode={"manual": pb.REBALANCE_MODE_MANUAL,
                                "automatic": pb.REBALANCE_MODE_AUTOMATIC}.get(args.rebalance or "", 0),
                imbalance_threshold=args.imbalance_threshold or 0, rebalance_max_moves=args.rebalance_max_moves or 0,
                rebalance_interval_s=args.rebalance_interval or 0,
                percentage_of_nodes_to_score=args.nodes_to_score)
            conf = c.placement.UpdateSchedulerConfig(place_pb.UpdateSchedulerConfigRequest(config=cfg),
                                                     timeout=args.timeout).config
        else:
            conf = c.placement.GetSchedulerConfig(place_pb.GetSchedulerConfigRequest(), timeout=args.timeout).config
    emit(args, conf, lambda: json.dumps(json_format.MessageToDict(conf, preserving_proto_field_name=True), indent=2))
    return 0


# --- capacity planning ------------------------------------------------------------------------

def _shape(args: argparse.Namespace) -> pb.Resources:
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
    head = [f"{_enum_name(cap_pb.RebalanceGoal, rb.goal, 'REBALANCE_GOAL_')} "
            f"{rb.id or '(plan only: nothing runs)'}  state {_enum_name(cap_pb.RebalanceState, rb.state, 'REBALANCE_STATE_')}"
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


def _wait_rebalance(c: Client, args: argparse.Namespace, rb: cap_pb.Rebalance) -> cap_pb.Rebalance:
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
    with Client(server_addr(args)) as c:
        if args.capacity_command == "headroom":
            h = c.capacity.GetHeadroom(cap_pb.GetHeadroomRequest(
                shape=_shape(args), qos_policy=args.policy or "", node_selector=_kv_list(args.selector, "--selector"),
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
                  f"{r.reserved_lost.memory_mib} MiB reserved)")
        else:
            return capacity_report(c, args)
    return 0


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
        if args.picture:
            lines.append(f"picture: {args.picture}")
        return "\n".join(lines)
    emit(args, r, human)
    return 0


def cmd_rebalance(args: argparse.Namespace) -> int:
    with Client(server_addr(args)) as c:
        if args.rebalance_command in ("plan", "run"):
            goal = {"consolidate": cap_pb.REBALANCE_GOAL_CONSOLIDATE, "balance": cap_pb.REBALANCE_GOAL_BALANCE}
            rb = c.capacity.PlanRebalance(cap_pb.PlanRebalanceRequest(
                goal=goal[args.goal], max_migrations=args.max_migrations, imbalance_threshold=args.threshold,
                execute=args.rebalance_command == "run"), timeout=args.timeout).rebalance
            if args.rebalance_command == "run" and not args.no_wait:
                rb = _wait_rebalance(c, args, rb)
        elif args.rebalance_command == "show":
            rb = c.capacity.GetRebalance(cap_pb.GetRebalanceRequest(id=args.id), timeout=args.timeout).rebalance
        else:
            lr = c.capacity.ListRebalances(cap_pb.ListRebalancesRequest(), timeout=args.timeout)
            emit(args, lr, lambda: table(["ID", "GOAL", "STATE", "STEPS", "AUTO"], [
                [r.id, _enum_name(cap_pb.RebalanceGoal, r.goal, "REBALANCE_GOAL_"),
                 _enum_name(cap_pb.RebalanceState, r.state, "REBALANCE_STATE_"), len(r.steps),
                 "yes" if r.automatic else ""] for r in lr.rebalances]))
            return 0
    emit(args, rb, lambda: rebalance_lines(rb))
    return 0 if rb.state != cap_pb.REBALANCE_STATE_FAILED else 1


def cmd_node(args: argparse.Namespace) -> int:
    with Client(server_addr(args)) as c:
        r = c.nodes.DrainNode(node_pb.DrainNodeRequest(name=args.node, reason=args.reason, dry_run=args.dry_run),
                              timeout=args.timeout)
        rb = r.rebalance
        if not args.dry_run and not args.no_wait:
            if args.output != "json":
                print(f"{args.node} cordoned; moving {len(rb.steps)} VMs by live migration")
            rb = _wait_rebalance(c, args, rb)
    emit(args, rb, lambda: rebalance_lines(rb))
    return 0 if rb.state != cap_pb.REBALANCE_STATE_FAILED else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from vdcos.cli.demo import run_demo
    return run_demo(args)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vdcos", description="Virtual Datacenter OS: many hosts, one computer")
    ap.add_argument("-o", "--output", choices=["table", "json"], default="table")
    ap.add_argument("--server", help="scheduler address HOST:PORT (default: the local datacenter's)")
    ap.add_argument("--home", help="local datacenter state folder (default $VDCOS_HOME or ~/.vdcos)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per API call")
    sub = ap.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start a local datacenter: etcd, scheduler, N node agents")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--driver", choices=["sim", "libvirt"], default="sim",
                    help="libvirt: a real libvirtd + QEMU per host")
    up.add_argument("--host-vcpus", type=int, default=16)
    up.add_argument("--host-memory-mib", type=int, default=65536)
    up.add_argument("--host-disk-gib", type=int, default=1000)
    up.add_argument("--host-network-mbps", type=int, default=10000)
    up.add_argument("--host-disk-iops", type=int, default=20000)
    up.add_argument("--lease-ttl", type=int, default=10, help="seconds before a silent node is NotReady")
    up.add_argument("--cpu-wakeup-latency-us", type=int, metavar="US",
                    help="the scheduler holds this host's idle CPUs to this wake-up latency while it serves "
                         "(0: they poll instead of halting). Costs power; see vdcos/host/wakeup.py")
    up.set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop the local datacenter and remove its state").set_defaults(fn=cmd_down)
    sub.add_parser("status", help="processes and datacenter capacity").set_defaults(fn=cmd_status)
    nodes = sub.add_parser("nodes", help="list nodes")
    nodes.add_argument("--selector", action="append", default=[], metavar="KEY=VALUE")
    nodes.set_defaults(fn=cmd_nodes)
    for name in ("cordon", "uncordon"):
        p = sub.add_parser(name, help=f"{name} a node")
        p.add_argument("node")
        if name == "cordon":
            p.add_argument("--reason", default="")
        p.set_defaults(fn=cmd_cordon)

    vm = sub.add_parser("vm", help="create, list, show, delete VMs")
    vsub = vm.add_subparsers(dest="vm_command", required=True)
    create = vsub.add_parser("create")
    add_spec_flags(create)
    create.add_argument("--request-id")
    create.add_argument("--count", type=int, default=1,
                        help="create NAME-1 .. NAME-COUNT, each placed on its own (BatchCreateVms calls of 1000)")
    vl = vsub.add_parser("list")
    vl.add_argument("--node")
    vsub.add_parser("show").add_argument("name")
    vd = vsub.add_parser("delete")
    vd.add_argument("name")
    vd.add_argument("--keep-volumes", action="store_true", help="leave its volumes behind, detached")
    mg = vsub.add_parser("migrate", help="live-migrate a running VM, with a progress bar")
    mg.add_argument("name")
    mg.add_argument("--to", metavar="HOST", help="target node (default: the scheduler chooses)")
    mg.add_argument("--max-downtime-ms", type=int, default=0, help="default 25")
    mg.add_argument("--bandwidth-mibps", type=int, default=0, help="cap the copy rate (default unlimited)")
    mg.add_argument("--postcopy-after", type=int, default=0, metavar="PASSES",
                    help="switch to post-copy after this many passes (default never)")
    mg.add_argument("--no-wait", action="store_true", help="print the migration id and return")
    vm.set_defaults(fn=cmd_vm)

    net = sub.add_parser("network", help="tenant networks on the distributed switch, and their ports")
    nsub = net.add_subparsers(dest="network_command", required=True)
    nc = nsub.add_parser("create")
    nc.add_argument("name")
    nc.add_argument("--cidr", required=True, help="IPv4, /16 to /29; tenants may overlap")
    nc.add_argument("--vni", type=int, default=0, help="default: allocated by vdcos")
    nsub.add_parser("list")
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

    vol = sub.add_parser("volume", help="volumes in the hosts' local pools and the shared pool")
    vsub = vol.add_subparsers(dest="volume_command", required=True)
    vc = vsub.add_parser("create")
    vc.add_argument("name")
    vc.add_argument("--size-gib", type=int, help="required unless --from-snapshot (default: the snapshot's)")
    vc.add_argument("--pool", choices=["local", "shared"],
                    help="local (default) ties its VM to the volume's host; shared does not")
    vc.add_argument("--from-snapshot", metavar="SNAPSHOT", help="restore: start with this snapshot's content")
    vc.add_argument("--host", help="default: the ready host with the most free disk")
    vc.add_argument("--image", help="start from this base image (copy-on-write), e.g. pattern")
    vl = vsub.add_parser("list")
    vl.add_argument("--vm")
    vl.add_argument("--host")
    vl.add_argument("--unattached", action="store_true",
                    help="only the volumes no VM owns (each still holds its pool's space)")
    vsub.add_parser("show").add_argument("name")
    vsub.add_parser("delete").add_argument("name")
    va = vsub.add_parser("attach", help="attach to a VM (hot-plugged if it runs)")
    va.add_argument("name")
    va.add_argument("vm")
    vsub.add_parser("detach", help="take from its VM (hot-unplugged if it runs)").add_argument("name")
    vr = vsub.add_parser("resize", help="grow (a running guest sees its disk grow)")
    vr.add_argument("name")
    vr.add_argument("--size-gib", type=int, required=True)
    vsub.add_parser("pools", help="each host's pools: capacity and free space")
    vol.set_defaults(fn=cmd_volume)

    snap = sub.add_parser("snapshot", help="point-in-time copies of volumes (restore: volume create --from-snapshot)")
    ssub = snap.add_subparsers(dest="snapshot_command", required=True)
    sc = ssub.add_parser("create", help="copy a volume now (a running guest keeps running)")
    sc.add_argument("name")
    sc.add_argument("--volume", required=True)
    ssub.add_parser("list").add_argument("--volume")
    ssub.add_parser("show").add_argument("name")
    ssub.add_parser("delete").add_argument("name")
    snap.set_defaults(fn=cmd_snapshot)

    mig = sub.add_parser("migration", help="live migrations: list, show, cancel")
    msub = mig.add_subparsers(dest="migration_command", required=True)
    msub.add_parser("list").add_argument("--vm")
    msub.add_parser("show").add_argument("id")
    msub.add_parser("cancel").add_argument("id")
    mig.set_defaults(fn=cmd_migration)

    ex = sub.add_parser("explain", help="where would this VM go, and why (commits nothing)")
    add_spec_flags(ex)
    ex.add_argument("--limit", type=int, default=5)
    ex.set_defaults(fn=cmd_explain)

    pol = sub.add_parser("policy", help="QoS policies")
    psub = pol.add_subparsers(dest="policy_command", required=True)
    psub.add_parser("apply").add_argument("-f", "--file", required=True, help="YAML file, '-' for stdin")
    psub.add_parser("list")
    psub.add_parser("delete").add_argument("name")
    pol.set_defaults(fn=cmd_policy)

    conf = sub.add_parser("config", help="scheduler configuration")
    csub = conf.add_subparsers(dest="config_command", required=True)
    csub.add_parser("show")
    cs = csub.add_parser("set")
    for dim in ("cpu", "memory", "disk", "network", "iops"):
        cs.add_argument(f"--{dim}-overcommit", type=float)
    cs.add_argument("--strategy", choices=["pack", "spread"])
    cs.add_argument("--max-migrations-per-host", type=int, help="live migrations in flight per host")
    cs.add_argument("--max-migrations", type=int, help="live migrations in flight in the cluster")
    cs.add_argument("--rebalance", choices=["manual", "automatic"],
                    help="automatic: the scheduler balances by itself when the load's std. dev. is over the threshold")
    cs.add_argument("--imbalance-threshold", type=float, help="std. dev. of host load tolerated (0..1)")
    cs.add_argument("--rebalance-max-moves", type=int, help="most migrations one automatic round plans")
    cs.add_argument("--rebalance-interval", type=int, metavar="SECONDS", help="between automatic rounds")
    cs.add_argument("--nodes-to-score", type=int, metavar="PERCENT",
                    help="share of the nodes one placement scores, 1-100; 0 = adaptive (5%% on large clusters)")
    conf.set_defaults(fn=cmd_config)

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

    nd = sub.add_parser("node", help="maintenance: drain a node")
    ndsub = nd.add_subparsers(dest="node_command", required=True)
    dr = ndsub.add_parser("drain", help="cordon, then move every VM off by live migration")
    dr.add_argument("node")
    dr.add_argument("--reason", default="")
    dr.add_argument("--dry-run", action="store_true", help="where each VM would go; nothing changes")
    dr.add_argument("--no-wait", action="store_true")
    nd.set_defaults(fn=cmd_node)

    demo = sub.add_parser("demo", help="bring up a datacenter, place a mix of VMs, explain a refusal")
    demo.add_argument("--hosts", type=int, default=3)
    demo.add_argument("--driver", choices=["libvirt", "sim"], default="libvirt",
                      help="libvirt: real QEMU guests (default); sim: in-memory hosts")
    demo.set_defaults(fn=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.home_set = bool(args.home)
    args.home = args.home or str(localdc.home_dir())
    try:
        return int(args.fn(args))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except grpc.RpcError as e:
        print(describe_error(e), file=sys.stderr)
        return 1
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
