"""The control plane under faults: `python -m benchmarks.chaos --duration 300 --json FILE`.

A local datacenter of a 3-member etcd, 2 API/scheduler replicas and 50 sim hosts (`vdcos up`,
its supervisor restarting whatever dies) takes a steady, bounded load of creates, deletes and
live migrations from several clients. The first third of the run is fault-free; in the rest the
benchmark kills with SIGKILL, one at a time: the etcd leader, an etcd follower, each replica,
the replica holding the rebalancer's lease and a node agent. After each kill a probe creates a
VM every 0.1 s until one is accepted: that is the fault's recovery time.

Afterwards, with the load stopped and every process back, it checks from outside (etcdctl, and
each sim host's domain file): no node over its capacity, no broken hard anti-affinity, every
allocation entry belongs to a VM and every VM has one, every accepted create exists exactly
once, every VM runs on exactly one host (its own), no migration left unfinished, no
reservation held by a finished migration.

Then a second phase on 2 real libvirt hosts with their Open vSwitch (a 3-member etcd and 2
replicas again): one client creates, deletes and live-migrates real guests on a tenant network
while a host's libvirtd, then another's ovs-vswitchd, is killed; a fault's recovery is the time
until a guest created after it runs on that host. Its checks read each host with virsh.

Clients do what the CLI does: each create carries a request id and is sent again, with the
same id, after UNAVAILABLE or a deadline; ALREADY_EXISTS for a client's own retry is a defect
and counted as one.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import grpc
import numpy as np

from benchmarks.common import emit
from vdcos.cli.client import Client
from vdcos.cli.localdc import LocalDatacenter, down, host_root, up
from vdcos.host.libvirtd import LibvirtHost
from vdcos.host.network import HostNetwork
from vdcos.images import ensure
from vdcos.model import Allocation, Migration, NodeSpec, PlacementRecord, SchedulerConfig, VmSpec, decode
from vdcos.model.fit import allocatable
from vdcos.state import keys
from vdcos.state.etcd import member_status
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

FAULTS = ("etcd-leader", "etcd-follower", "scheduler-1", "scheduler-2", "rebalancer-leader", "node-agent")
NOT_INJECTED = ("libvirtd", "ovs-vswitchd")  # the real-libvirt phase
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED)


@dataclass
class Ledger:
    """What the clients asked and were told, shared by every thread."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    accepted: dict[str, float] = field(default_factory=dict)   # VM -> when its create was accepted
    deleted: set[str] = field(default_factory=set)
    failed_by_code: Counter[str] = field(default_factory=Counter)
    own_already_exists: list[str] = field(default_factory=list)
    migrations: int = 0
    migrations_accepted: int = 0


def _spec(name: str, group: str = "") -> pb.VmSpec:
    s = pb.VmSpec(name=name, resources=pb.Resources(vcpus=1, memory_mib=512, disk_gib=1))
    if group:
        s.placement_group, s.group_policy = group, pb.AFFINITY_POLICY_ANTI_AFFINITY
    return s


def create(c: Client, ledger: Ledger, spec: pb.VmSpec, attempts: int = 20) -> bool:
    """One create, sent again with the same request id while its fate is unknown."""
    rid = f"chaos-{spec.name}"
    with ledger.lock:
        ledger.requests += 1
    for attempt in range(attempts):
        try:
            c.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec, request_id=rid), timeout=10)
            with ledger.lock:
                ledger.accepted[spec.name] = time.monotonic()
            return True
        except grpc.RpcError as e:
            code = e.code()
            if code in RETRIED and attempt + 1 < attempts:
                time.sleep(0.2)
                continue
            with ledger.lock:
                ledger.failed_by_code[code.name] += 1
                if code == grpc.StatusCode.ALREADY_EXISTS and attempt > 0:
                    ledger.own_already_exists.append(spec.name)
            return False
    return False


def delete(c: Client, ledger: Ledger, vm: str, attempts: int = 20) -> bool:
    with ledger.lock:
        ledger.requests += 1
    for attempt in range(attempts):
        try:
            c.vms.DeleteVm(vm_pb.DeleteVmRequest(name=vm), timeout=10)
            return True
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND and attempt:
                return True  # an earlier attempt deleted it
            # FAILED_PRECONDITION: it is migrating; deleted once the move ends.
            if e.code() in RETRIED or e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                time.sleep(0.3)
                continue
            with ledger.lock:
                ledger.failed_by_code[f"delete:{e.code().name}"] += 1
            return False
    return False


@dataclass(frozen=True)
class Mix:
    """One client's load: how often it deletes and migrates (else creates), the VMs it keeps
    at most, and the spec of its n-th VM."""
    delete: float
    migrate: float
    cap: int
    spec: Callable[[int, int], pb.VmSpec]  # (client, n) -> spec


def _sim_spec(idx: int, n: int) -> pb.VmSpec:
    group = f"aa-{idx}-{n // 30}" if n % 10 == 0 else ""  # hard anti-affinity, up to 3 members
    return _spec(f"c{idx}-{n}", group)


def client_loop(idx: int, dc: LocalDatacenter, ledger: Ledger, stop: threading.Event, rate: float, mix: Mix) -> None:
    rng = random.Random(idx)
    c = dc.client()
    mine: list[str] = []
    n = 0
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                n = one_op(c, ledger, rng, mine, n, idx, mix)
            except Exception as e:  # a client bug must not silently end this client's load
                with ledger.lock:
                    ledger.failed_by_code[f"client:{type(e).__name__}"] += 1
            stop.wait(max(0.0, 1 / rate - (time.monotonic() - t0)))
    finally:
        c.channel.close()


def one_op(c: Client, ledger: Ledger, rng: random.Random, mine: list[str], n: int, idx: int, mix: Mix) -> int:
    """A delete, a migration or a create, as the roll and the client's VMs say; returns the
    client's create count."""
    roll = rng.random()
    if mine and (len(mine) >= mix.cap or roll < mix.delete):
        vm = mine.pop(rng.randrange(len(mine)))
        if delete(c, ledger, vm):
            with ledger.lock:
                ledger.deleted.add(vm)
        else:
            mine.append(vm)
    elif mine and roll < mix.delete + mix.migrate:
        with ledger.lock:
            ledger.migrations += 1
        try:
            c.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm=rng.choice(mine)), timeout=10)
            with ledger.lock:
                ledger.migrations_accepted += 1
        except grpc.RpcError as e:
            with ledger.lock:
                ledger.failed_by_code[f"migrate:{e.code().name}"] += 1
    else:
        n += 1
        spec = mix.spec(idx, n)
        if create(c, ledger, spec):
            mine.append(spec.name)
    return n


def _kill(dc: LocalDatacenter, name: str) -> int:
    pid = dc.proc(name).pid
    os.kill(pid, signal.SIGKILL)
    return pid


def _victim(dc: LocalDatacenter, kind: str, rng: random.Random) -> str:
    etcd_procs = [p.name for p in dc.procs if p.kind == "etcd"]
    if kind.startswith("etcd-"):
        tls = dc.operator_tls()
        leader_id = next((s.leader for e in dc.etcd if (s := member_status(e, tls=tls)) is not None and s.leader), 0)
        ids = [getattr(member_status(e, tls=tls), "header", None) for e in dc.etcd]
        roles = [h is not None and h.member_id == leader_id for h in ids]
        pool = [n for n, lead in zip(etcd_procs, roles) if lead == (kind == "etcd-leader")]
        return rng.choice(pool)
    if kind == "rebalancer-leader":
        out = _etcdctl(dc, "get", keys.REBALANCER_LOCK, "--print-value-only").strip()
        pid = int(out.rpartition("pid=")[2]) if "pid=" in out else 0
        return next((p.name for p in dc.procs if p.pid == pid), "scheduler-1")
    if kind == "node-agent":
        return rng.choice([p.name for p in dc.procs if p.kind == "agent"])
    return kind


def _etcdctl(dc: LocalDatacenter, *args: str) -> str:
    tls = dc.operator_tls()
    certs = [] if tls is None else [f"--cacert={tls.ca}", f"--cert={tls.cert}", f"--key={tls.key}"]
    return subprocess.run(["etcdctl", f"--endpoints={dc.etcd_endpoint}", "--command-timeout=10s", *certs, *args],
                          env=dict(os.environ, ETCDCTL_API="3"), capture_output=True, text=True, check=True,
                          timeout=60).stdout


def probe_recovery(dc: LocalDatacenter, ledger: Ledger, tag: str, since: float, limit: float = 60.0) -> float | None:
    """Seconds from the kill until a create is accepted again (None: not within `limit`)."""
    c = dc.client()
    try:
        i = 0
        while time.monotonic() - since < limit:
            i += 1
            try:
                c.vms.CreateVm(vm_pb.CreateVmRequest(spec=_spec(f"probe-{tag}-{i}"), request_id=f"probe-{tag}-{i}"),
                               timeout=2)
                with ledger.lock:
                    ledger.requests += 1
                    ledger.accepted[f"probe-{tag}-{i}"] = time.monotonic()
                return round(time.monotonic() - since, 2)
            except grpc.RpcError:
                time.sleep(0.1)
        return None
    finally:
        c.channel.close()


def running_on(dc: LocalDatacenter, nodes: list[str]) -> dict[str, list[str]]:
    """VM -> the hosts where it runs, as each host says: a sim host's domain file, a libvirt
    host's `virsh list`."""
    running: dict[str, list[str]] = defaultdict(list)
    for node in nodes:
        root = host_root(Path(dc.home), node)
        if dc.driver == "libvirt":
            out = subprocess.run(["virsh", "-c", LibvirtHost.load(root).uri, "list", "--name", "--state-running"],
                                 capture_output=True, text=True, check=True, timeout=60).stdout
            names = [n for n in out.split() if n]
        else:
            f = root / "domains.json"
            names = [d["name"] for d in (json.loads(f.read_text()) if f.exists() else []) if d.get("state") == "running"]
        for name in names:
            running[name].append(node)
    return running


def check(dc: LocalDatacenter, ledger: Ledger) -> dict[str, Any]:
    """The invariants, read from outside: etcd through etcdctl, each host as it says itself."""
    raw = json.loads(_etcdctl(dc, "get", "/vdcos/", "--prefix", "-w", "json"))
    kv: dict[str, Any] = {}
    for x in raw.get("kvs", []):
        value = base64.b64decode(x.get("value", ""))
        try:
            kv[base64.b64decode(x["key"]).decode()] = json.loads(value)
        except ValueError:
            continue  # not a record (a lock's holder, a VM's migration id)
    config = decode(SchedulerConfig, kv[keys.CONFIG]) if keys.CONFIG in kv else SchedulerConfig()
    specs = {k.split("/")[3]: decode(VmSpec, v) for k, v in kv.items() if k.startswith(keys.VMS) and k.endswith("/spec")}
    places = {k.split("/")[3]: decode(PlacementRecord, v) for k, v in kv.items()
              if k.startswith(keys.VMS) and k.endswith("/placement")}
    allocs = {k[len(keys.ALLOC):]: decode(Allocation, v) for k, v in kv.items() if k.startswith(keys.ALLOC)}
    nodes = {k.split("/")[3]: decode(NodeSpec, v) for k, v in kv.items() if k.startswith(keys.NODES) and k.endswith("/spec")}
    migrations = {k[len(keys.MIGRATIONS):]: decode(Migration, v) for k, v in kv.items() if k.startswith(keys.MIGRATIONS)}
    violations: list[str] = []
    entries: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for node, a in allocs.items():
        spec = nodes.get(node)
        if spec is None:
            violations.append(f"allocation on unknown node {node}")
            continue
        g, com = a.sums()
        cap = spec.capacity.as_tuple()
        alloc_cap = tuple(allocatable(np.asarray(cap, dtype=np.float64)[:, None], config.overcommit)[:, 0])
        if any(x > y + 1e-6 for x, y in zip(g, cap)) or any(x > y + 1e-6 for x, y in zip(com, alloc_cap)):
            violations.append(f"{node} over capacity: guaranteed {g}, committed {com}, capacity {cap}")
        for e in a.entries:
            entries[e.vm].append((node, e.held_by))
            if e.held_by and migrations.get(e.held_by) is not None and migrations[e.held_by].phase.done:
                violations.append(f"{e.vm} on {node} held by finished migration {e.held_by}")
    for vm, where in entries.items():
        if vm not in specs:
            violations.append(f"allocation entry of {vm} (on {[n for n, _ in where]}) has no VM")
    for vm, p in places.items():
        held = [n for n, _ in entries.get(vm, [])]
        if p.node not in held:
            violations.append(f"{vm} placed on {p.node} has no allocation there")
        if len(held) > 1 and not any(h for _, h in entries[vm]):
            violations.append(f"{vm} allocated on {held} with no migration")
    groups: dict[str, list[str]] = defaultdict(list)
    for vm, s in specs.items():
        if s.placement_group and s.group_policy.value == "anti-affinity" and vm in places:
            groups[s.placement_group].append(places[vm].node)
    for g, on in groups.items():
        if len(on) != len(set(on)):
            violations.append(f"hard anti-affinity group {g} shares a node: {sorted(on)}")
    stuck = [m.id for m in migrations.values() if not m.phase.done]
    violations += [f"migration {mid} unfinished" for mid in stuck]
    running = running_on(dc, list(nodes))
    not_once = [vm for vm, p in places.items() if running.get(vm) != [p.node]]
    violations += [f"{vm} runs on {running.get(vm, [])}, placed on {places[vm].node}" for vm in not_once]
    strays = [vm for vm in running if vm not in places]
    violations += [f"{vm} runs on {running[vm]} with no placement" for vm in strays]
    lost = sorted(vm for vm in ledger.accepted if vm not in ledger.deleted and vm not in specs)
    duplicates = sorted({vm for vm, on in running.items() if len(on) > 1} | set(ledger.own_already_exists))
    return {"lost": len(lost), "lost_names": lost[:20], "duplicates": len(duplicates),
            "duplicate_names": duplicates[:20], "invariant_violations": len(violations),
            "violations": violations[:30], "vms_checked": len(specs), "migrations_unfinished": len(stuck)}


def settle_and_check(home: Path, dc: LocalDatacenter, ledger: Ledger, settle: float) -> dict[str, Any]:
    """With the load stopped: every process back (the supervisor's work), then `settle` seconds
    for moves to finish and agents to catch up, then the invariants."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        dc = LocalDatacenter.load(home) or dc
        if all(p.running() for p in dc.procs):
            break
        time.sleep(0.5)
    time.sleep(settle)
    return check(dc, ledger)


def _creates_since(ledger: Ledger, since: float) -> int:
    """The load's accepted creates since then (the recovery probes' are not load)."""
    with ledger.lock:
        return sum(1 for vm, at in ledger.accepted.items() if at >= since and not vm.startswith("probe-"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="vdcos-chaos-")) / "dc"
    rng = random.Random(7)
    capacity = {"vcpus": 16, "memory_mib": 65536, "disk_gib": 1000, "network_mbps": 10000, "disk_iops": 20000}
    t0 = time.monotonic()
    dc = up(home, args.hosts, "sim", capacity, lease_ttl=5, timeout=180, etcd_members=3, replicas=2)
    setup_s = time.monotonic() - t0
    ledger = Ledger()
    stop = threading.Event()
    per_client = args.rate / args.clients
    mix = Mix(delete=0.15, migrate=0.15, cap=args.cap, spec=_sim_spec)
    threads = [threading.Thread(target=client_loop, args=(i, dc, ledger, stop, per_client, mix),
                                daemon=True) for i in range(args.clients)]
    injected: list[dict[str, Any]] = []
    try:
        start = time.monotonic()
        for t in threads:
            t.start()
        calm_s = args.duration / 3
        time.sleep(calm_s)
        calm_accepted = _creates_since(ledger, start)
        fault_start = time.monotonic()
        every = (args.duration - calm_s) / len(FAULTS)
        for k, kind in enumerate(FAULTS):
            at = fault_start + k * every
            time.sleep(max(0.0, at - time.monotonic()))
            dc = LocalDatacenter.load(home) or dc
            name = _victim(dc, kind, rng)
            killed_at = time.monotonic()
            pid = _kill(dc, name)
            rec = probe_recovery(dc, ledger, str(k), killed_at)
            injected.append({"kind": kind, "process": name, "pid": pid, "recovery_s": rec})
            print(json.dumps(injected[-1]), flush=True)
        time.sleep(max(0.0, fault_start + args.duration - calm_s - time.monotonic()))
        fault_s = time.monotonic() - fault_start
        fault_accepted = _creates_since(ledger, fault_start)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    try:
        result = settle_and_check(home, dc, ledger, args.settle)
        recovery = {f["kind"]: f["recovery_s"] for f in injected}
        calm_rate = calm_accepted / calm_s
        fault_rate = fault_accepted / fault_s if fault_s else None
        result = {
            "benchmark": "chaos", "duration_s": args.duration, "hosts": args.hosts, "etcd_members": 3,
            "replicas": 2, "clients": args.clients, "offered_ops_per_s": args.rate,
            "faults": [f["kind"] for f in injected], "faults_not_injected": list(NOT_INJECTED),
            "injected": injected, "requests": ledger.requests, "accepted": len(ledger.accepted),
            "deleted": len(ledger.deleted), "migrations_requested": ledger.migrations,
            "migrations_accepted": ledger.migrations_accepted, "failed_by_code": dict(ledger.failed_by_code),
            **result, "recovery_s": recovery,
            "creates_per_s_fault_free": round(calm_rate, 2),
            "creates_per_s_under_faults": round(fault_rate, 2) if fault_rate is not None else None,
            "throughput_under_faults_ratio": round(fault_rate / calm_rate, 2) if fault_rate and calm_rate else None,
            "datacenter_setup_s": round(setup_s, 1),
        }
        worst = [r for r in recovery.values()]
        result["targets_met"] = (result["lost"] == 0 and result["duplicates"] == 0
                                 and result["invariant_violations"] == 0
                                 and all(r is not None and r < 10 for r in worst)
                                 and (result["throughput_under_faults_ratio"] or 0) >= 0.5)
        return result
    finally:
        down(home, purge=True, keep_logs=not args.remove_logs)
        print(f"logs kept in {home / 'logs'}" if not args.remove_logs else "", flush=True)


LV_CAPACITY = {"vcpus": 4, "memory_mib": 4096, "disk_gib": 50, "network_mbps": 1000, "disk_iops": 20000}


def _lv_spec(name: str, rack: str = "") -> pb.VmSpec:
    s = pb.VmSpec(name=name, networks=["chaos"], resources=pb.Resources(vcpus=1, memory_mib=128))
    if rack:
        s.node_selector["rack"] = rack
    return s


def _running(c: Client, vm: str) -> bool:
    try:
        return c.vms.GetVm(vm_pb.GetVmRequest(name=vm), timeout=5).vm.status.phase == pb.VM_PHASE_RUNNING
    except grpc.RpcError:
        return False


def probe_guest(dc: LocalDatacenter, ledger: Ledger, tag: str, rack: str, since: float, limit: float = 180.0) -> float | None:
    """Seconds from the fault until a guest created after it runs on the faulted host."""
    c = dc.client()
    name = f"probe-{tag}"
    try:
        if not create(c, ledger, _lv_spec(name, rack)):
            return None
        while time.monotonic() - since < limit:
            if _running(c, name):
                return round(time.monotonic() - since, 2)
            time.sleep(0.2)
        return None
    finally:
        c.channel.close()


def libvirt_phase(args: argparse.Namespace) -> dict[str, Any]:
    """2 real libvirt hosts with their Open vSwitch: a libvirtd and an ovs-vswitchd are killed
    under a load of real guests."""
    ensure()
    home = Path(tempfile.mkdtemp(prefix="vdcos-chaos-lv-")) / "dc"
    dc = up(home, 2, "libvirt", LV_CAPACITY, lease_ttl=5, timeout=300, etcd_members=3, replicas=2)
    ledger = Ledger()
    stop = threading.Event()
    injected: list[dict[str, Any]] = []
    try:
        with dc.client() as c:
            c.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(name="chaos",
                                                                                        cidr="10.50.0.0/24")))
        # One client (TCG guests are slow), moving its guests more often than the sim clients do.
        mix = Mix(delete=0.2, migrate=0.25, cap=3, spec=lambda _, n: _lv_spec(f"lv-{n}"))
        t = threading.Thread(target=client_loop, args=(11, dc, ledger, stop, args.lv_rate, mix), daemon=True)
        t.start()
        time.sleep(args.lv_duration / 3)
        faults = (("libvirtd", "host-1", "rack-1"), ("ovs-vswitchd", "host-2", "rack-2"))
        every = (args.lv_duration * 2 / 3) / len(faults)
        for k, (kind, node, rack) in enumerate(faults):
            at = time.monotonic()
            root = host_root(home, node)
            if kind == "libvirtd":
                host = LibvirtHost.load(root)
                pid = int(host.path("run", "libvirtd.pid").read_text().strip() or 0)
                host.kill_daemon()  # its guests run on; the supervisor restarts it
            else:
                net = HostNetwork.load(root)
                assert net is not None
                pid = net.vswitchd_pid()
                net.kill_vswitchd()  # the host's switch controller starts it again
            rec = probe_guest(dc, ledger, f"lv{k}", rack, at)
            injected.append({"kind": kind, "process": f"{kind} of {node}", "pid": pid, "recovery_s": rec})
            print(json.dumps(injected[-1]), flush=True)
            time.sleep(max(0.0, at + every - time.monotonic()))
        stop.set()
        t.join(120)
        result = settle_and_check(home, dc, ledger, args.settle)
        return {"hosts": 2, "driver": "libvirt", "duration_s": args.lv_duration, "injected": injected,
                "requests": ledger.requests, "accepted": len(ledger.accepted), "deleted": len(ledger.deleted),
                "migrations_requested": ledger.migrations, "migrations_accepted": ledger.migrations_accepted,
                "failed_by_code": dict(ledger.failed_by_code), **result}
    finally:
        stop.set()
        down(home, purge=True, keep_logs=not args.remove_logs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.chaos")
    ap.add_argument("--duration", type=float, default=300, help="seconds of load; faults in the last two thirds")
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rate", type=float, default=12.0, help="operations per second, all clients together")
    ap.add_argument("--cap", type=int, default=60, help="VMs each client keeps at most")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds to let agents catch up before checking")
    ap.add_argument("--remove-logs", action="store_true")
    ap.add_argument("--lv-duration", type=float, default=150,
                    help="seconds of the real-libvirt phase (0: skip it)")
    ap.add_argument("--lv-rate", type=float, default=0.5, help="operations per second in the libvirt phase")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.duration < 30:
        ap.error("--duration: at least 30 s (a third fault-free, then one fault at a time)")
    result = run(args)
    if args.lv_duration:
        lv = libvirt_phase(args)
        result["libvirt_phase"] = lv
        result["faults"] += [f["kind"] for f in lv["injected"]]
        result["faults_not_injected"] = []
        result["injected"] += lv["injected"]
        result["recovery_s"].update({f["kind"]: f["recovery_s"] for f in lv["injected"]})
        for key in ("requests", "accepted", "lost", "duplicates", "invariant_violations"):
            result[key] += lv[key]
        result["targets_met"] = bool(result["targets_met"] and lv["lost"] == 0 and lv["duplicates"] == 0
                                     and lv["invariant_violations"] == 0
                                     and all(f["recovery_s"] is not None and f["recovery_s"] < 10
                                             for f in lv["injected"]))
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
