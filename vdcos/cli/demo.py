"""`vdcos demo` (what `make demo` runs): a local datacenter, QoS policies, a mix of VMs placed
through the gRPC API, the placement table, and one refusal explained."""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from vdcos.cli import localdc
from vdcos.cli.client import Client, describe_error
from vdcos.cli.common import enum_name
from vdcos.cli.nodes import node_rows
from vdcos.cli.policies import load_policies
from vdcos.cli.report import draw
from vdcos.cli.vms import migrate, vm_rows
from vdcos.host.network import HostNetwork
from vdcos.images import counters
from vdcos.nodeagent.libvirt.domain import read_console
from vdcos.v1 import capacity_service_pb2 as cap_pb
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import qos_policy_service_pb2 as pol_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.vswitch import probe

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ANTI = pb.AFFINITY_POLICY_ANTI_AFFINITY
SOFT = pb.AFFINITY_POLICY_SOFT_AFFINITY

# (name, vcpus, memory MiB, disk GiB, policy, group, group policy, node selector)
DEMO_VMS = [
    ("db-1", 8, 24576, 200, "gold", "db", ANTI, {}),
    ("db-2", 8, 24576, 200, "gold", "db", ANTI, {}),
    *[(f"web-{i}", 2, 4096, 20, "silver", "web", ANTI, {}) for i in range(1, 5)],
    *[(f"app-{i}", 4, 8192, 40, "silver", "app", SOFT, {}) for i in range(1, 4)],
    ("analytics-1", 8, 16384, 100, "silver", "", 0, {"rack": "rack-2"}),
    *[(f"batch-{i}", 4, 2048, 10, "bronze", "", 0, {}) for i in range(1, 5)],
    ("cache-1", 2, 8192, 10, "", "", 0, {}),
]


def spec(name: str, vcpus: int, mem: int, disk: int, policy: str, group: str, gp: int,
         sel: dict[str, str]) -> pb.VmSpec:
    return pb.VmSpec(name=name, resources=pb.Resources(vcpus=vcpus, memory_mib=mem, disk_gib=disk, network_mbps=100),
                     qos_policy=policy, placement_group=group, group_policy=gp, node_selector=sel)


# Real QEMU guests on libvirt hosts of 4 vCPU / 4 GiB: small, so that two cores boot them.
# (name, vcpus, memory MiB, disk GiB, policy, group, group policy, node selector)
LIBVIRT_VMS = [
    ("db-1", 1, 512, 20, "gold", "", 0, {}),
    *[(f"web-{i}", 1, 256, 10, "silver", "web", ANTI, {}) for i in range(1, 4)],
    ("batch-1", 1, 256, 10, "bronze", "", 0, {}),
]


@dataclass(frozen=True)
class Plan:
    """What the demo builds on one kind of host."""

    hosts: str
    capacity: dict[str, int]
    vms: list[tuple[Any, ...]]
    refusals: list[pb.VmSpec]
    refusal_text: str


SIM = Plan("sim hosts (16 vCPU, 48 GiB each)",
           {"vcpus": 16, "memory_mib": 49152, "disk_gib": 1000, "network_mbps": 10000}, DEMO_VMS,
           [spec("web-5", 2, 4096, 20, "silver", "web", ANTI, {}), spec("warehouse-1", 8, 47104, 100, "gold", "", 0, {})],
           "a fifth web VM (hard anti-affinity) and a 46 GiB guaranteed VM")
LIBVIRT = Plan("libvirt hosts (own libvirtd + QEMU each; 4 vCPU, 4 GiB)",
               {"vcpus": 4, "memory_mib": 4096, "disk_gib": 100, "network_mbps": 1000}, LIBVIRT_VMS,
               [spec("web-4", 1, 256, 10, "silver", "web", ANTI, {}), spec("warehouse-1", 2, 3968, 20, "gold", "", 0, {})],
               "a fourth web VM (hard anti-affinity on 3 hosts) and a 3.9 GiB guaranteed VM")


def _wait_booted(c: Client, home: Path, timeout: float = 180.0) -> None:
    """Guests print a counter on their serial console once booted (TCG on two cores: ~15 s)."""
    t0 = time.monotonic()
    pending = {v.spec.name: v.placement.node for v in c.vms.ListVms(vm_pb.ListVmsRequest(), timeout=10).vms}
    while pending and time.monotonic() - t0 < timeout:
        for vm, node in list(pending.items()):
            console = read_console(localdc.host_root(home, node), vm)
            if counters(console):
                print(f"  {vm} booted on {node} after {time.monotonic() - t0:4.1f}s: "
                      f"{console.strip().splitlines()[-1]}")
                del pending[vm]
        time.sleep(0.5)
    for vm in pending:
        print(f"  {vm} has not printed on its console yet")


NETWORK = "tenant-a"


def _network_check(c: Client, home: Path) -> str:
    """A peer (an endpoint namespace) on one host pings the guests on the others; returns its netns."""
    vms = {v.spec.name: v.placement.node for v in c.vms.ListVms(vm_pb.ListVmsRequest(), timeout=10).vms}
    ports = {p.name: p for p in c.networks.ListPorts(net_pb.ListPortsRequest(network=NETWORK)).ports}
    host = "host-1" if vms.get("db-1") != "host-1" else "host-2"
    if "peer" not in ports:
        ports["peer"] = c.networks.CreatePort(net_pb.CreatePortRequest(network=NETWORK, name="peer", host=host)).port
    net = HostNetwork.load(localdc.host_root(home, ports["peer"].host))
    assert net is not None
    ns = net.endpoint_netns(NETWORK, "peer")
    print(f"\n== guests on different hosts reach each other over {NETWORK}: a peer on {ports['peer'].host} "
          f"({ports['peer'].ip}) pings them")
    deadline = time.monotonic() + 30
    for vm, p in sorted(ports.items()):
        if p.kind != net_pb.PORT_KIND_VM:
            continue
        r = probe.ping(ns, p.ip, 3, 0.2)
        while r.received == 0 and time.monotonic() < deadline:
            r = probe.ping(ns, p.ip, 3, 0.2)
        print(f"  {ports['peer'].host} -> {vm} on {vms.get(vm)} ({p.ip}): {r.received}/{r.sent} replies")
    return ns


def _ha_demo(c: Client, home: Path) -> None:
    """A host crashes (every process of it SIGKILLed); its VMs run again elsewhere, by themselves."""
    from vdcos.cli.ha import status_lines
    from vdcos.process import alive
    from vdcos.v1 import ha_service_pb2 as ha_pb

    dc = localdc.LocalDatacenter.load(home)
    assert dc is not None
    victim = c.vms.GetVm(vm_pb.GetVmRequest(name="db-1"), timeout=10).vm.placement.node
    on = [v.spec.name for v in c.vms.ListVms(vm_pb.ListVmsRequest(node=victim), timeout=10).vms]
    print(f"\n== high availability: {victim} crashes (every process of it SIGKILLed) with {', '.join(on)} on it")
    sup = dc.proc("supervisor")
    if sup.running():  # else it would start the host again at once, as a host that reboots
        import os
        import signal
        os.kill(sup.pid, signal.SIGTERM)
        while alive(sup.pid):
            time.sleep(0.05)
    t0 = time.monotonic()
    localdc.crash_host(dc, victim)
    moved: dict[str, str] = {}
    held: set[str] = set()  # waiting for capacity, or lost: the HA record says why
    while len(moved) + len(held) < len(on) and time.monotonic() - t0 < 90:
        for v in c.vms.ListVms(vm_pb.ListVmsRequest(), timeout=10).vms:
            if v.spec.name in on and v.spec.name not in moved and v.placement.node != victim \
                    and v.status.phase == pb.VM_PHASE_RUNNING:
                moved[v.spec.name] = v.placement.node
                print(f"  {v.spec.name} runs again on {v.placement.node} (epoch {v.placement.epoch}) "
                      f"{time.monotonic() - t0:4.1f} s after the crash")
        for h in c.ha.GetHaStatus(ha_pb.GetHaStatusRequest(event_limit=1), timeout=10).hosts:
            if h.node == victim:
                held = {r.vm for r in (*h.pending, *h.lost)}
        time.sleep(0.2)
    print("$ vdcos ha status")
    print(status_lines(c.ha.GetHaStatus(ha_pb.GetHaStatusRequest(event_limit=8), timeout=10)))
    print(f"  {victim} comes back (vdcos up starts what died): it starts nothing that moved, and runs again "
          "what could not move")
    localdc.repair(home)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(
            h.node == victim for h in c.ha.GetHaStatus(ha_pb.GetHaStatusRequest(event_limit=1), timeout=10).hosts):
        time.sleep(0.2)


def run_demo(args: argparse.Namespace) -> int:
    home = Path(args.home)
    plan = LIBVIRT if args.driver == "libvirt" else SIM
    print(f"== bringing up a local datacenter: {args.hosts} {plan.hosts}, etcd, scheduler")
    # A 5 s lease: a lost host's VMs run elsewhere within ~8 s (the HA step below).
    dc = localdc.up(home, args.hosts, args.driver, plan.capacity, lease_ttl=5)
    with dc.client() as c:
        print(f"\n== applying QoS policies from {EXAMPLES / 'policies.yaml'}")
        for p in load_policies(str(EXAMPLES / "policies.yaml")):
            r = c.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(policy=p, update_existing=True), timeout=10)
            print(f"qospolicy/{r.policy.name} {'created' if r.created else 'configured'}")
        networked = args.driver == "libvirt"
        if networked and not any(n.name == NETWORK for n in c.networks.ListNetworks(net_pb.ListNetworksRequest()).networks):
            n = c.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(
                name=NETWORK, cidr="10.10.0.0/24")), timeout=10).network
            print(f"\n== tenant network {n.name}: {n.cidr}, VNI {n.vni}, over a VXLAN mesh of every host's Open vSwitch")
        print("\n== creating a mix of guaranteed, burstable and best-effort VMs through the gRPC API")
        existing = {v.spec.name for v in c.vms.ListVms(vm_pb.ListVmsRequest(), timeout=10).vms}
        for row in plan.vms:
            if row[0] in existing:
                continue
            s = spec(*row)
            if networked and row[0] != "batch-1":
                s.networks.append(NETWORK)
            try:
                c.vms.CreateVm(vm_pb.CreateVmRequest(spec=s), timeout=30)
            except grpc.RpcError as e:
                print(describe_error(e))
        deadline = time.monotonic() + 30  # let the agents report before showing phases
        while time.monotonic() < deadline and any(
                v.status.phase == pb.VM_PHASE_SCHEDULED for v in c.vms.ListVms(vm_pb.ListVmsRequest(), timeout=10).vms):
            time.sleep(0.2)
        print("\n== placements")
        print(vm_rows(c.vms.ListVms(vm_pb.ListVmsRequest(), timeout=10).vms))
        if args.driver == "libvirt":
            print("\n== real QEMU guests booting (their serial consoles)")
            _wait_booted(c, home)
            peer_ns = _network_check(c, home)
            print("\n== live-migrating db-1 while it runs (the scheduler picks the destination),"
                  " the peer pinging it every 10 ms")
            db_ip = next(p.ip for p in c.networks.ListPorts(net_pb.ListPortsRequest(network=NETWORK)).ports
                         if p.name == "db-1")
            pinger = probe.start_ping(peer_ns, db_ip, 400, 0.01)
            time.sleep(0.5)
            mig = argparse.Namespace(name="db-1", to="", max_downtime_ms=0, bandwidth_mibps=0, postcopy_after=0,
                                     no_wait=False, output="table", timeout=30.0)
            migrate(c, mig)
            r = probe.finish_ping(pinger)
            print(f"the ping kept going: {r.received}/{r.sent} answered, {r.lost} lost, {r.duplicates} duplicates, "
                  f"longest gap between replies (blackout) {r.blackout_ms:.0f} ms")
        _ha_demo(c, home)
        print("\n== nodes")
        print(node_rows(c.nodes.ListNodes(node_pb.ListNodesRequest(), timeout=10).nodes))
        print(f"\n== a refusal, explained: {plan.refusal_text}")
        for bad in plan.refusals:
            try:
                c.vms.CreateVm(vm_pb.CreateVmRequest(spec=bad), timeout=30)
                print(f"{bad.name} was placed (the cluster had room)")
            except grpc.RpcError as e:
                print(f"$ vdcos vm create {bad.name} ...")
                print(describe_error(e))
        print("\n== capacity: how many more VMs of 2 vCPU / 4 GiB fit now, and the report as a picture")
        head = c.capacity.GetHeadroom(cap_pb.GetHeadroomRequest(shape=pb.Resources(vcpus=2, memory_mib=4096)),
                                      timeout=10).headroom
        print("  " + "; ".join(f"{enum_name(pb.QosClass, h.qos_class, 'QOS_CLASS_')}: "
                               f"{'unbounded' if h.unbounded else h.count}" for h in head))
        picture = home / "capacity-report.png"
        draw(c.capacity.GetCapacityReport(cap_pb.GetCapacityReportRequest(), timeout=30), picture)
        print(f"  utilization per host and dimension, stranded capacity, headroom by shape: {picture}")
    home_flag = "" if not args.home_set else f" --home {home}"
    print(f"\nThe datacenter keeps running. Try: vdcos{home_flag} vm list | vdcos{home_flag} nodes | "
          f"vdcos{home_flag} vm migrate web-1 | vdcos{home_flag} migration list | "
          f"vdcos{home_flag} rebalance plan consolidate | vdcos{home_flag} node drain host-1 --dry-run")
    print(f"Stop it with: .venv/bin/vdcos{home_flag} down")
    return 0
