"""The distributed switch end to end: three libvirt hosts (each its own namespace, Open vSwitch
and libvirtd), two tenants (projects red and blue, each with its own token) on the same CIDR,
guests on different hosts, endpoints as probes. The tests run in order on one datacenter, as an
operator would use it."""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from tests.conftest import wait_until
from tests.e2e.dc import Datacenter
from vdcos.cli.client import Client
from vdcos.cli.localdc import down, host_root, up
from vdcos.host.network import HostNetwork, sh
from vdcos.images import ensure
from vdcos.metrics.http import scrape
from vdcos.model import Port, PortKind
from vdcos.nodeagent.libvirt.domain import read_console
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.vswitch import probe
from vdcos.vswitch.controller import device_name
from vdcos.host.ovsdb import Ovsdb

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]
HOSTS = ("host-1", "host-2", "host-3")


class Dc(Datacenter):
    tenants: dict[str, Client]

    def net(self, host: str) -> HostNetwork:
        n = HostNetwork.load(host_root(self.home, host))
        assert n is not None
        return n

    def ns(self, host: str, port: str, network: str = "") -> str:
        """An endpoint's namespace; its network found by its name when that is unique."""
        if not network:
            nets = {p.network for p in self.client.networks.ListPorts(net_pb.ListPortsRequest()).ports if p.name == port}
            assert len(nets) == 1, f"port {port} is on {nets or 'no network'}"
            network = nets.pop()
        return self.net(host).endpoint_netns(network, port)

    def node(self, vm: str) -> str:
        return str(self.client.vms.GetVm(vm_pb.GetVmRequest(name=vm)).vm.placement.node)

    def port(self, network: str, name: str) -> net_pb.Port:
        ports = self.client.networks.ListPorts(net_pb.ListPortsRequest(network=network)).ports
        return next(p for p in ports if p.name == name)

    def tap(self, network: str, name: str) -> str:
        """The host-side device of a port, as the controller names it."""
        kind = PortKind.VM if self.port(network, name).kind == net_pb.PORT_KIND_VM else PortKind.ENDPOINT
        return device_name(Port(name, network, "", "", 0, kind))

    def endpoint(self, network: str, name: str, host: str, ip: str = "", max_mbps: int = 0,
                 by: Client | None = None) -> net_pb.Port:
        p = (by or self.client).networks.CreatePort(net_pb.CreatePortRequest(
            network=network, name=name, host=host, ip=ip, max_mbps=max_mbps)).port
        wait_until(lambda: host in self.port(network, name).bound_hosts, 30)
        return p

    def agent_pid(self, host: str) -> int:
        return next(p.pid for p in self.state.procs if p.name == host)

    def tunnels(self, host: str) -> set[str]:
        db = Ovsdb(self.net(host).db_socket)
        try:
            return {r.external_ids["vdcos-peer"] for r in db.rows("Port") if r.external_ids.get("vdcos-peer")}
        finally:
            db.close()


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dc]:
    ensure()
    home = Path(tmp_path_factory.mktemp("vsw"))
    up(home, 3, "libvirt", {"vcpus": 4, "memory_mib": 4096, "disk_gib": 100, "network_mbps": 10000})
    d = Dc(home)
    try:
        d.tenants = {name: d.tenant(name) for name in ("red", "blue")}
        for name, tenant in d.tenants.items():  # each project makes its own network
            tenant.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(name=name,
                                                                                             cidr="10.0.0.0/24")))
        for vm in ("red-a", "red-b"):
            spec = pb.VmSpec(name=vm, networks=["red"], placement_group="red", resources=pb.Resources(vcpus=1, memory_mib=128),
                             group_policy=pb.AFFINITY_POLICY_ANTI_AFFINITY)
            d.tenants["red"].vms.CreateVm(vm_pb.CreateVmRequest(spec=spec))
        for vm in ("red-a", "red-b"):
            node = d.node(vm)
            wait_until(lambda: "NET-UP" in read_console(host_root(home, node), vm), 180)
        yield d
    finally:
        for tenant in getattr(d, "tenants", {}).values():
            tenant.channel.close()
        d.close()
        dc_id = (home / "datacenter-id").read_text().strip()
        down(home, purge=True)
    assert not [n for n in sh("ip", "netns", "list").split() if n.startswith(f"vdcos-{dc_id}-")]


def test_guests_on_different_hosts_reach_each_other_and_tenants_are_isolated(dc: Dc) -> None:
    a, b = dc.node("red-a"), dc.node("red-b")
    assert a != b
    third = next(h for h in HOSTS if h not in (a, b))
    red, blue = dc.tenants["red"], dc.tenants["blue"]
    dc.endpoint("red", "probe", third, by=red)
    ip_a, ip_b = dc.port("red", "red-a").ip, dc.port("red", "red-b").ip
    for ip in (ip_a, ip_b):
        assert wait_until(lambda: probe.ping(dc.ns(third, "probe"), ip, 2, 0.2).received > 0, 30)
    # Blue's members cannot plug into red's network, nor see it or its guests.
    with pytest.raises(grpc.RpcError) as refused:
        dc.endpoint("red", "spy", a, by=blue)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert [n.name for n in blue.networks.ListNetworks(net_pb.ListNetworksRequest()).networks] == ["blue"]
    assert blue.vms.ListVms(vm_pb.ListVmsRequest()).vms == []
    # Blue reuses red's addresses on the same hosts and never reaches or sees red.
    dc.endpoint("blue", "b1", a, ip=ip_b, by=blue)
    dc.endpoint("blue", "b2", third, ip=ip_a, by=blue)
    assert probe.ping(dc.ns(a, "b1"), ip_a, 3, 0.2).received == 3        # blue to blue, across hosts
    assert probe.ping(dc.ns(third, "b2"), ip_b, 3, 0.2).received == 3
    # ... and the address resolved to blue's holder of it, not to the red guest that has it too.
    assert dc.port("blue", "b2").mac in sh("ip", "-n", dc.ns(a, "b1"), "neigh", "show", ip_a)
    blue_macs = {dc.port("blue", "b1").mac, dc.port("blue", "b2").mac}
    cap = probe.start_ping(dc.ns(third, "probe"), "10.0.0.250", 30, 0.1)  # ARP broadcasts on red
    seen = probe.capture(dc.ns(a, "b1"), "eth0", 3, "-e")
    probe.finish_ping(cap)
    red_macs = {dc.port("red", n).mac for n in ("probe", "red-a", "red-b")}
    assert not any(m in seen for m in red_macs), seen[:2000]
    seen_red = probe.capture(dc.ns(third, "probe"), "eth0", 2, "-e")
    assert not any(m in seen_red for m in blue_macs)
    # The guests' NIC counters, on their hosts' /metrics, labelled with the owning project: each
    # answered at least the two pings above that waited for it.
    for vm, node in (("red-a", a), ("red-b", b)):
        def packets(vm: str = vm, node: str = node) -> dict[str, float]:
            text = scrape(dc.state.metrics[node], dc.state.operator_tls())
            return {m.group(1): float(m.group(2)) for m in re.finditer(
                rf'^vdcos_vm_network_(\w+)_total{{interface="[^"]+",node="{node}",project="red",vm="{vm}"}} (\S+)$',
                text, re.M)}
        # NIC counters are read once a minute (vdcos/metrics/agent.py).
        got = wait_until(lambda: (p := packets()).get("receive_packets", 0) >= 2 and p, 75, 1)
        assert got["transmit_packets"] >= 2 and got["receive_bytes"] > 0 and got["transmit_bytes"] > 0, got
        # Its host's switch logged the plugging under the request id of the call that made the VM.
        plugged = [line for line in Path(dc.state.proc(node).log).read_text().splitlines()
                   if f"plugged red/{vm} " in line]
        assert plugged and re.search(r"\[req-[0-9a-f]{16}\]$", plugged[0]), plugged
        # Its switch's own metrics: a tunnel to each other host, its ports, the flows it pushed.
        text = scrape(dc.state.metrics[node], dc.state.operator_tls())
        sw = {m.group(1): float(m.group(2)) for m in re.finditer(
            rf'^vdcos_switch_(\w+){{node="{node}"}} (\S+)$', text, re.M)}
        assert sw["tunnels"] == 2 and sw["ports"] >= 1 and sw["flows"] > 0, sw
        assert sw["flow_pushes_total"] >= 1 and sw["syncs_total"] >= 1 and sw["flow_push_seconds_total"] > 0, sw


def test_a_guest_that_stops_answering_is_told_from_a_switch_that_does_not_deliver(dc: Dc) -> None:
    """probe.silent_guest, on which the migration test tells a guest's dead NIC from a fault of ours."""
    host = dc.node("red-a")
    ip = dc.endpoint("red", "mute", host).ip
    peer = dc.ns(dc.port("red", "probe").bound_hosts[0], "probe")
    tap = dc.tap("red", "mute")
    assert wait_until(lambda: probe.ping(peer, ip, 2, 0.2).received > 0, 30)
    assert probe.silent_guest(dc.net(host).netns, tap, peer, ip) == ""
    ns = dc.ns(host, "mute")
    sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1")
    sh("ip", "-n", ns, "link", "set", "eth0", "arp", "off")
    assert probe.silent_guest(dc.net(host).netns, tap, peer, ip).startswith("guest silent")
    # Requests that never reach the tap (here: to an address nobody has) are not the guest's.
    assert probe.silent_guest(dc.net(host).netns, tap, peer, "10.0.0.251") == ""
    dc.client.networks.DeletePort(net_pb.DeletePortRequest(network="red", name="mute"))


def test_network_api_refuses_bad_input_and_changes_nothing(dc: Dc) -> None:
    before = dc.client.networks.ListNetworks(net_pb.ListNetworksRequest())
    for bad in (net_pb.Network(name="x", cidr="10.0.0.0/33"), net_pb.Network(name="Bad!", cidr="10.1.0.0/24"),
                net_pb.Network(name="x", cidr="10.1.0.0/24", vni=5)):
        with pytest.raises(grpc.RpcError) as e:
            dc.client.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=bad))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        dc.client.networks.DeleteNetwork(net_pb.DeleteNetworkRequest(name="red"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        dc.client.networks.CreatePort(net_pb.CreatePortRequest(network="red", name="dup", host="host-1",
                                                          ip=dc.port("red", "red-a").ip))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert dc.client.networks.ListNetworks(net_pb.ListNetworksRequest()) == before


def test_bandwidth_limit_is_enforced_on_the_wire(dc: Dc) -> None:
    dc.endpoint("red", "slow", "host-1", max_mbps=50)
    dc.endpoint("red", "fast", "host-2")
    net = dc.net("host-1")
    db = Ovsdb(net.db_socket)
    try:
        capped = [r.name for r in db.rows("Port") if r.qos]
    finally:
        db.close()
    assert len(capped) == 1, capped
    # The kernel shapes with the queue's class; the root class must not cap too (its bucket is
    # one packet: a CI run through it measured 21-26 Mbit/s).
    classes = net.exec("tc", "class", "show", "dev", capped[0])
    assert "ceil 50Mbit burst 312499b" in classes and "root rate 50Mbit" not in classes, classes
    # A stall of this shared machine (the userspace datapath forwards on its CPU) only lowers a
    # run. Up to four runs; one at the cap, none above it.
    runs: list[float] = []
    while len(runs) < 4 and not any(42.5 <= r for r in runs):
        runs.append(probe.iperf3(dc.ns("host-1", "slow"), dc.ns("host-2", "fast"), dc.port("red", "slow").ip,
                                 seconds=4))
    print(f"50 Mbit/s limit measured {', '.join(f'{r:.1f}' for r in runs)} Mbit/s")
    assert max(runs) <= 57.5 and any(r >= 42.5 for r in runs), runs


def test_a_port_whose_device_cannot_be_made_fails_alone_and_is_plugged_once_it_can(dc: Dc) -> None:
    """A leftover file where the endpoint's namespace belongs (not a namespace: entering it
    fails): that port is not plugged nor bound, the host's other ports are, and once the file
    is gone its next retry plugs it."""
    host = "host-2"
    stale = Path("/run/netns") / dc.ns(host, "stale", "red")
    stale.touch()
    try:
        dc.client.networks.CreatePort(net_pb.CreatePortRequest(network="red", name="stale", host=host))
        dc.endpoint("red", "beside", host)  # bound while the other is failing
        time.sleep(3)  # more than one switch sync (2 s)
        assert host not in dc.port("red", "stale").bound_hosts
        db = Ovsdb(dc.net(host).db_socket)
        try:
            plugged = {r.external_ids.get("vdcos-port") for r in db.rows("Port")}
        finally:
            db.close()
        assert "red/beside" in plugged and "red/stale" not in plugged
    finally:
        stale.unlink()
    assert wait_until(lambda: host in dc.port("red", "stale").bound_hosts, 90)
    ip = dc.port("red", "beside").ip
    assert wait_until(lambda: probe.ping(dc.ns(host, "stale"), ip, 2, 0.2).received > 0, 30)


def test_two_endpoints_of_one_name_on_two_networks_of_one_host_are_two(dc: Dc) -> None:
    # Names are per network: both are plugged, each in its own namespace with its own address.
    host = "host-1"
    red, blue = dc.endpoint("red", "twin", host), dc.endpoint("blue", "twin", host)
    for net, port in (("red", red), ("blue", blue)):
        ns = dc.ns(host, "twin", net)
        assert port.ip in sh("ip", "-n", ns, "-4", "addr", "show", "eth0"), (net, ns)
    assert dc.ns(host, "twin", "red") != dc.ns(host, "twin", "blue")
    for net in ("red", "blue"):
        dc.client.networks.DeletePort(net_pb.DeletePortRequest(network=net, name="twin"))


def test_forwarding_comes_back_after_vswitchd_is_killed(dc: Dc) -> None:
    a = dc.node("red-a")
    third = next(h for h in HOSTS if h not in (a, dc.node("red-b")))
    net = dc.net(a)
    old = net.vswitchd_pid()
    net.kill_vswitchd()
    ip = dc.port("red", "red-a").ip
    assert wait_until(lambda: net.vswitchd_pid() not in (0, old), 30)
    assert wait_until(lambda: probe.ping(dc.ns(third, "probe"), ip, 2, 0.2).received > 0, 30)


def guest_fault(dc: Dc, vm: str) -> str:
    return next((line for h in HOSTS for line in probe.guest_faults(dc.console(h, vm))), "")


def test_live_migration_keeps_the_network(dc: Dc) -> None:
    b = dc.node("red-b")
    dc.endpoint("red", "watcher", b)
    vm = "red-a"
    # Fresh guests for the measurements a dead NIC spoiled: a CI run saw two in a row (the
    # kernel's "output.0:id 2 is not a head!", then a page fault), so three tries, not two.
    spares = iter(("red-c", "red-d"))
    for attempt in (1, 2, 3):
        a = dc.node(vm)
        third = next(h for h in HOSTS if h not in (a, b))
        ip = dc.port("red", vm).ip
        # The guest moves to the third host (red-b's is ruled out by the anti-affinity group)
        # while a peer on red-b's host pings it every 10 ms, from before the move until after it
        # completed: on a loaded machine a move can outlast any fixed count, and a ping that ended
        # before the switch-over would call a guest that died in it one that answered.
        ping = probe.start_ping(dc.ns(b, "watcher"), ip, 6000, 0.01)  # bounded: 60 s at most
        time.sleep(0.5)
        m = dc.client.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm=vm, target_node=third)).migration
        assert wait_until(lambda: dc.client.migrations.GetMigration(mig_pb.GetMigrationRequest(id=m.id)).migration.phase
                          == mig_pb.MIGRATION_PHASE_COMPLETED, 55)
        time.sleep(0.5)  # replies from its new host
        r = probe.finish_ping(ping, timeout=0)
        fault = guest_fault(dc, vm)
        # A broken ring is reported when the guest next sends, and its console reaches the file
        # a little later.
        deadline = time.monotonic() + 10
        while r.lost > 3 and not fault and time.monotonic() < deadline:
            time.sleep(0.5)
            fault = guest_fault(dc, vm)
        tap = dc.tap("red", vm)
        # Without a message too (3 times in ~30 runs): the switch delivers, the guest is mute.
        silent = probe.silent_guest(dc.net(third).netns, tap, dc.ns(b, "watcher"), ip)
        assert r.lost > 3 or not silent, silent  # a guest that answered is not called mute
        fault = fault or silent
        print(f"{vm} during the move: {r.lost} lost, {r.duplicates} duplicates, blackout {r.blackout_ms} ms {fault}")
        if r.lost <= 3 or not fault or attempt == 3:
            break
        # QEMU's TCG (no KVM here) now and then hands a guest that moves while it sends a
        # corrupted virtio ring: its NIC is dead from then on, wherever it runs, and the guest's
        # kernel mostly says so (vdcos/vswitch/README.md: about one move in 13 with traffic on a loaded
        # machine, none in 45 without, also with the duplication to both hosts off). The switch
        # is measured again with a fresh guest.
        dc.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name=vm))
        vm = next(spares)
        dc.tenants["red"].vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(  # red's network, red's group
            name=vm, networks=["red"], placement_group="red", resources=pb.Resources(vcpus=1, memory_mib=128),
            group_policy=pb.AFFINITY_POLICY_ANTI_AFFINITY)))
        assert wait_until(lambda: "NET-UP" in dc.console(dc.node(vm), vm), 180)
    assert r.lost <= 3, fault
    assert wait_until(lambda: dc.port("red", vm).bound_hosts == [third], 30)
    # From the destination's own host (the first test put the probe there), else across hosts.
    peer = dc.ns(third, "probe") if attempt == 1 else dc.ns(b, "watcher")
    assert probe.ping(peer, ip, 3, 0.2).received == 3
    assert wait_until(lambda: tap not in sh("ip", "-n", dc.net(a).netns, "-o", "link"), 10)  # unplugged at the source


def test_host_leave_and_join_update_every_peers_tunnels(dc: Dc) -> None:
    leaving = "host-3"
    others = [h for h in HOSTS if h != leaving]
    assert all(leaving in dc.tunnels(h) for h in others)
    pid = dc.agent_pid(leaving)
    os.kill(pid, signal.SIGSTOP)  # the agent stops heartbeating: its lease expires
    try:
        assert wait_until(lambda: all(leaving not in dc.tunnels(h) for h in others), 40)
    finally:
        os.kill(pid, signal.SIGCONT)  # it registers again: a join
    assert wait_until(lambda: all(leaving in dc.tunnels(h) for h in others), 40)
