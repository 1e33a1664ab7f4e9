"""`vdcos vm create | list | show | delete | migrate`, the power commands (power.py) and `vdcos explain`."""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Sequence


import grpc
from google.protobuf import json_format

from vdcos.apiserver import validate
from vdcos.cli import console, power
from vdcos.cli.client import Client, describe_status, rejection_lines
from vdcos.cli.common import (Subparsers, UsageError, connect, emit, enum_name, kv_list, table, when,
                              yaml_documents)
from vdcos.images import CATALOG
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import placement_service_pb2 as place_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

GROUP_POLICIES = {"affinity": pb.AFFINITY_POLICY_AFFINITY, "anti-affinity": pb.AFFINITY_POLICY_ANTI_AFFINITY,
                  "soft-affinity": pb.AFFINITY_POLICY_SOFT_AFFINITY,
                  "soft-anti-affinity": pb.AFFINITY_POLICY_SOFT_ANTI_AFFINITY}


RESTART_POLICIES = {"always": pb.RESTART_POLICY_ALWAYS, "on-host-failure": pb.RESTART_POLICY_ON_HOST_FAILURE,
                    "never": pb.RESTART_POLICY_NEVER}
PRIORITIES = {"high": pb.RESTART_PRIORITY_HIGH, "medium": pb.RESTART_PRIORITY_MEDIUM, "low": pb.RESTART_PRIORITY_LOW}


def ha_settings(restart_policy: str | None, priority: str | None, admission: bool | None) -> pb.HaSettings:
    ha = pb.HaSettings(restart_policy=RESTART_POLICIES.get(restart_policy or "", 0),
                       priority=PRIORITIES.get(priority or "", 0))
    if admission is not None:
        ha.admission = admission
    return ha


def vm_spec(args: argparse.Namespace) -> pb.VmSpec:
    if getattr(args, "file", None):
        specs = load_vms(args.file)
        if len(specs) != 1:
            raise UsageError(f"-f: {args.file} holds {len(specs)} VMs; create takes one (--count for more)")
        if args.project:
            specs[0].project = args.project
        return specs[0]
    if not args.name:
        raise UsageError("create: a NAME or -f FILE is required")
    return pb.VmSpec(
        name=args.name, qos_policy=args.policy or "",
        resources=pb.Resources(vcpus=args.vcpus, memory_mib=args.memory_mib, disk_gib=args.disk_gib,
                               network_mbps=args.network_mbps, disk_iops=args.disk_iops),
        placement_group=args.group or "",
        group_policy=GROUP_POLICIES[args.group_policy] if args.group_policy else pb.AFFINITY_POLICY_UNSPECIFIED,
        node_selector=kv_list(args.selector, "--selector"), networks=args.network, volumes=args.volume,
        image=args.image or "", project=args.project or "",
        power_state=pb.POWER_STATE_OFF if getattr(args, "stopped", False) else pb.POWER_STATE_UNSPECIFIED,
        ha=ha_settings(args.restart_policy, args.restart_priority, False if args.no_ha_admission else None))


VM_FIELDS = {"name": str, "vcpus": int, "memory_mib": int, "disk_gib": int, "network_mbps": int, "disk_iops": int,
             "policy": str, "group": str, "group_policy": str, "selector": dict, "networks": list, "volumes": list,
             "image": str, "ha": dict}
HA_FIELDS = {"restart_policy": str, "priority": str, "admission": bool}


def load_vms(path: str) -> list[pb.VmSpec]:
    """VMs from YAML documents (kind: Vm): the create flags' names, and `ha:` with
    restart_policy, priority and admission."""
    out = []
    for where, doc in yaml_documents(path, "Vm"):
        for fields, d, prefix in ((VM_FIELDS, doc, ""), (HA_FIELDS, doc.get("ha") or {}, "ha.")):
            if not isinstance(d, dict):
                raise UsageError(f"{where}: ha: expected a mapping")
            for k, v in d.items():
                want = fields.get(k)
                if want is None:
                    raise UsageError(f"{where}: {prefix}{k}: unknown field (known: {', '.join(fields)})")
                if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                    raise UsageError(f"{where}: {prefix}{k}: expected {want.__name__}, got {v!r}")
        ha = doc.get("ha") or {}
        for k, names in (("restart_policy", RESTART_POLICIES), ("priority", PRIORITIES)):
            if k in ha and ha[k] not in names:
                raise UsageError(f"{where}: ha.{k}: must be one of {', '.join(names)}, got {ha[k]!r}")
        if doc.get("group_policy") and doc["group_policy"] not in GROUP_POLICIES:
            raise UsageError(f"{where}: group_policy: must be one of {', '.join(GROUP_POLICIES)}")
        if "name" not in doc:
            raise UsageError(f"{where}: name: is required")
        out.append(pb.VmSpec(
            name=doc["name"], qos_policy=doc.get("policy", ""),
            resources=pb.Resources(vcpus=doc.get("vcpus", 1), memory_mib=doc.get("memory_mib", 1024),
                                   disk_gib=doc.get("disk_gib", 10), network_mbps=doc.get("network_mbps", 100),
                                   disk_iops=doc.get("disk_iops", 0)),
            placement_group=doc.get("group", ""),
            group_policy=GROUP_POLICIES.get(doc.get("group_policy", ""), pb.AFFINITY_POLICY_UNSPECIFIED),
            node_selector={str(k): str(v) for k, v in (doc.get("selector") or {}).items()},
            networks=[str(n) for n in doc.get("networks", [])], volumes=[str(v) for v in doc.get("volumes", [])],
            image=doc.get("image", ""),
            ha=ha_settings(ha.get("restart_policy"), ha.get("priority"), ha.get("admission"))))
    return out


def add_spec_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?")
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
    p.add_argument("--restart-policy", choices=list(RESTART_POLICIES),
                   help="HA: always (default: after a host failure, and when the guest stops), on-host-failure, never")
    p.add_argument("--restart-priority", choices=list(PRIORITIES),
                   help="HA restart order after a host failure (default medium; within one, guaranteed "
                        "before burstable)")
    p.add_argument("--no-ha-admission", action="store_true",
                   help="HA admission control keeps no room to restart it")
    p.add_argument("--project", help="the project that owns it (a project's token: its own)")


def vm_rows(vms: Sequence[pb.Vm]) -> str:
    rows = []
    for v in vms:
        r, p = v.spec.resources, v.placement
        rows.append([v.spec.name, p.node or "-", enum_name(pb.QosClass, p.qos_class, "QOS_CLASS_"),
                     v.spec.qos_policy or "default", r.vcpus, r.memory_mib, r.disk_gib, p.cpu_shares,
                     enum_name(pb.VmPhase, v.status.phase, "VM_PHASE_"), v.spec.placement_group or "-"])
    return table(["NAME", "NODE", "QOS", "POLICY", "VCPU", "MEM_MIB", "DISK_GIB", "SHARES", "PHASE", "GROUP"], rows)


def ha_history(c: Client, args: argparse.Namespace) -> str:
    """The HA controller's decisions about this VM (restarted where, at which epoch; lost, waiting)."""
    from vdcos.v1 import ha_service_pb2 as ha_pb
    events = [e for e in c.ha.GetHaStatus(ha_pb.GetHaStatusRequest(event_limit=10_000), timeout=args.timeout).events
              if e.vm == args.name]
    return "".join(f"\nHA {when(e.at)} {e.kind} (host {e.node} failed): {e.message}" for e in events)


def new_request_id() -> str:
    return uuid.uuid4().hex


def cmd_vm(args: argparse.Namespace) -> int:
    with connect(args) as c:
        if args.vm_command == "create" and args.count != 1:
            return create_many(c, args)
        if args.vm_command == "create":
            # An id of its own: the channel's retries after a replica's failure get this VM back.
            r = c.vms.CreateVm(vm_pb.CreateVmRequest(spec=vm_spec(args), request_id=args.request_id or new_request_id()),
                               timeout=args.timeout)
            emit(args, r.vm, lambda: vm_rows([r.vm]))
        elif args.vm_command == "list":
            lr = c.vms.ListVms(vm_pb.ListVmsRequest(node=args.node or "", project=args.project or ""),
                               timeout=args.timeout)
            emit(args, lr, lambda: vm_rows(lr.vms))
        elif args.vm_command == "show":
            vm = c.vms.GetVm(vm_pb.GetVmRequest(name=args.name), timeout=args.timeout).vm
            emit(args, vm, lambda: json.dumps(json_format.MessageToDict(vm, preserving_proto_field_name=True),
                                              indent=2) + ha_history(c, args))
        elif args.vm_command == "migrate":
            return migrate(c, args)
        elif args.vm_command in power.COMMANDS:
            return power.run(c, args)
        elif args.vm_command == "console":
            return console.run(c, args)
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
    base = vm_spec(args)
    longest = f"{base.name}-{args.count}"
    bad: validate.Violations = []
    validate.name(longest, "NAME", bad)
    if bad:
        raise UsageError(f"NAME with --count {args.count}: {bad[0][1]}")
    request_id = args.request_id or new_request_id()
    reqs = []
    for i in range(1, args.count + 1):
        s = pb.VmSpec()
        s.CopyFrom(base)
        s.name = f"{base.name}-{i}"
        reqs.append(vm_pb.CreateVmRequest(spec=s, request_id=f"{request_id}-{i}"))
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


def phase_name(m: mig_pb.Migration) -> str:
    return enum_name(mig_pb.MigrationPhase, m.phase, PHASE_PREFIX)


def progress_bar(m: mig_pb.Migration, width: int = 30) -> str:
    p = m.progress
    total = p.memory_total_bytes or 1
    done = min(1.0, p.memory_processed_bytes / total) if p.memory_total_bytes else 0.0
    if m.phase == mig_pb.MIGRATION_PHASE_COMPLETED:
        done = 1.0
    fill = int(done * width)
    mib = 1 << 20
    return (f"[{'#' * fill}{'.' * (width - fill)}] {done * 100:5.1f}%  {phase_name(m):9} "
            f"pass {p.iteration}  {p.memory_processed_bytes // mib}/{p.memory_total_bytes // mib} MiB "
            f"remaining {p.memory_remaining_bytes // mib} MiB  {p.elapsed_ms / 1000:5.1f}s")


def done(m: mig_pb.Migration) -> bool:
    return m.phase in (mig_pb.MIGRATION_PHASE_COMPLETED, mig_pb.MIGRATION_PHASE_FAILED,
                       mig_pb.MIGRATION_PHASE_CANCELLED)


def migrate(c: Client, args: argparse.Namespace) -> int:
    opts = mig_pb.MigrationOptions(max_downtime_ms=args.max_downtime_ms, max_bandwidth_mibps=args.bandwidth_mibps,
                                   postcopy_after_iterations=args.postcopy_after)
    m = c.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm=args.name, target_node=args.to or "", options=opts),
                               timeout=args.timeout).migration
    if args.no_wait:
        emit(args, m, lambda: f"{m.id}: {m.vm} {m.source_node} -> {m.target_node} ({phase_name(m)})")
        return 0
    tty = sys.stdout.isatty() and args.output != "json"
    if args.output != "json":
        print(f"{m.id}: migrating {m.vm} from {m.source_node} to {m.target_node}")
    last = m
    deadline = time.monotonic() + args.timeout + 600
    while not done(last) and time.monotonic() < deadline:
        try:
            # Each watch starts with the record as it is: nothing is missed between two.
            for ev in c.migrations.WatchMigration(mig_pb.WatchMigrationRequest(id=m.id),
                                                  timeout=deadline - time.monotonic()):
                last = ev.migration
                if args.output != "json":
                    print(("\r" if tty else "") + progress_bar(last), end="" if tty else "\n", flush=True)
        except grpc.RpcError as e:
            # The watch ended (its replica or etcd member died, or it fell behind): watch again.
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED):
                raise
            time.sleep(0.2)
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
        print(f"migration {phase_name(last)}: {last.message}", file=sys.stderr)
    return 0 if ok else 1


def cmd_explain(args: argparse.Namespace) -> int:
    with connect(args) as c:
        r = c.placement.ExplainPlacement(place_pb.ExplainPlacementRequest(spec=vm_spec(args), limit=args.limit),
                                         timeout=args.timeout)

    def human() -> str:
        cls = enum_name(pb.QosClass, r.qos_class, "QOS_CLASS_")
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


def register(sub: Subparsers) -> None:
    vm = sub.add_parser("vm", help="create, list, show, delete, migrate, start, stop, reboot, suspend, resume, "
                                   "shelve VMs")
    vsub = vm.add_subparsers(dest="vm_command", required=True)
    create = vsub.add_parser("create")
    add_spec_flags(create)
    create.add_argument("-f", "--file", help="a YAML file of kind Vm (the flags' fields, and ha: with "
                                             "restart_policy, priority, admission); '-' for stdin")
    create.add_argument("--request-id")
    create.add_argument("--stopped", action="store_true", help="place it and hold its reservation, not started")
    create.add_argument("--count", type=int, default=1,
                        help="create NAME-1 .. NAME-COUNT, each placed on its own (BatchCreateVms calls of 1000)")
    vl = vsub.add_parser("list")
    vl.add_argument("--node")
    vl.add_argument("--project", help="only this project's")
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
    power.register(vsub)
    console.register(vsub)
    vm.set_defaults(fn=cmd_vm)



def register_explain(sub: Subparsers) -> None:
    ex = sub.add_parser("explain", help="where would this VM go, and why (commits nothing)")
    add_spec_flags(ex)
    ex.add_argument("--limit", type=int, default=5)
    ex.set_defaults(fn=cmd_explain)

