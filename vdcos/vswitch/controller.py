"""One host's switch controller: programs that host's Open vSwitch from cluster state in etcd.

Level-triggered, like ovn-controller: any change under nodes/, networks/, ports/ or bindings/
(or a timer) runs one `sync`, which reads the whole desired state and makes the switch match it:
  - a VXLAN tunnel to every live peer that has a tunnel endpoint (join and leave need no
    restart), with the peer's underlay neighbour pinned so no first packet is dropped;
  - the ports that belong here plugged into br-int: a tap for each VM NIC (the VM runs here or
    is migrating here: the destination is bound BEFORE the guest moves) and a veth into a
    namespace for each endpoint port; each binding published under the agent's lease;
  - a bandwidth cap (linux-htb) from the VM's QoS policy on its port;
  - the OpenFlow tables from vdcos.vswitch.flows, pushed as one bundle (atomic, diff-only).
ovs-vswitchd is supervised: if it died it is started again and the flows are pushed again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from vdcos import logs
from vdcos.host import netlink as nl
from vdcos.host.netlink import NetworkError, netns_exists
from vdcos.host.network import OVERLAY_MTU, HostNetwork, sh
from vdcos.host.ovsdb import Ovsdb, OvsdbError
from vdcos.model import Nic, NodeSpec, Port, PortKind, decode
from vdcos.reconcile import Backoff
from vdcos.state import keys
from vdcos.state.store import KV, Delete, Event, Put, Store, StoreError
from vdcos.vswitch import flows as F

log = logging.getLogger("vdcos.vswitch")
WATCHED = (keys.NODES, keys.NETWORKS, keys.PORTS, keys.BINDINGS)


def device_name(port: Port) -> str:
    """Same on every host (a migrating guest's XML names its tap), at most 15 characters."""
    kind = "vt" if port.kind is PortKind.VM else "ve"
    return kind + hashlib.sha1(port.key.encode()).hexdigest()[:11]


def nic(port: Port) -> Nic:
    return Nic(port.network, port.mac, device_name(port), port.address, OVERLAY_MTU)


@dataclass(frozen=True)
class SyncStats:
    tunnels: int
    local_ports: int
    flows: int
    pushed: bool


@dataclass(frozen=True)
class Counters:
    """What the controller has done since it started: the host's switch metrics."""
    last: SyncStats | None
    syncs: int
    sync_failures: int
    flow_pushes: int
    flow_push_seconds: float


class SwitchController:
    def __init__(self, store: Store, host: str, net: HostNetwork, lease: Callable[[], int],
                 wanted: Callable[[], dict[str, int]], *, resync_s: float = 2.0) -> None:
        """`wanted()`: the VMs whose NICs belong on this host now -> their bandwidth cap in Mbit/s."""
        self.store = store
        self.host = host
        self.net = net
        self.lease = lease
        self.wanted = wanted
        self.resync_s = resync_s
        self.db = Ovsdb(net.db_socket)
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancels: list[Callable[[], None]] = []
        self._resubscribe = False
        self._thread: threading.Thread | None = None
        self._vswitchd_pid = 0
        self._pushed: list[str] = []
        self._qos: dict[str, int] = {}        # device -> applied Mbit/s
        # A port whose device cannot be made fails alone: its error, and when it is tried again.
        self.failing = Backoff(base_s=1.0, max_s=60.0)
        self._pinned: set[str] = set()
        self.counters = Counters(None, 0, 0, 0, 0.0)

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> SwitchController:
        self._subscribe()
        self._thread = threading.Thread(target=self._loop, name=f"vswitch-{self.host}", daemon=True)
        self._thread.start()
        self._wake.set()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for c in self._cancels:
            c()
        if self._thread:
            self._thread.join(5)
        self.db.close()

    def wake(self) -> None:
        self._wake.set()

    def _subscribe(self) -> None:
        for c in self._cancels:
            c()
        self._cancels = []
        for prefix in WATCHED:
            _, rev = self.store.get_prefix(prefix)
            self._cancels.append(self.store.watch_prefix(prefix, rev + 1, self._on_event, self._on_error))

    def _on_event(self, events: list[Event], revision: int) -> None:
        self._wake.set()

    def _on_error(self, e: Exception) -> None:
        log.error("watch failed (%s); resubscribing", e)
        self._resubscribe = True
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.resync_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self._resubscribe or not self._cancels:
                    self._resubscribe = False
                    self._subscribe()  # every watch again: sync reads everything anyway
                self.sync()
                self._count(syncs=1)
            except (StoreError, OvsdbError, NetworkError, subprocess.SubprocessError, OSError) as e:
                self._count(sync_failures=1)
                log.warning("switch sync failed, retrying: %s", e)
            except Exception:
                self._count(sync_failures=1)
                log.exception("switch sync failed, retrying")

    def _count(self, last: SyncStats | None = None, **add: float) -> None:
        with self._lock:
            c = self.counters
            self.counters = replace(c, last=last or c.last, **{k: getattr(c, k) + v for k, v in add.items()})

    # --- what the agent asks --------------------------------------------------------------
    def plug(self, vm: str, networks: tuple[str, ...]) -> list[Nic]:
        """Plugs a VM's NICs now (the tap must exist before QEMU opens it) and returns them."""
        if not networks:
            return []
        self.sync()
        ports = [p for p in self._ports() if p.name == vm and p.network in networks and p.kind is PortKind.VM]
        missing = set(networks) - {p.network for p in ports}
        if missing:
            raise NetworkError(f"{vm} has no port on network(s) {', '.join(sorted(missing))}")
        broken = [f"{p.key}: {self.failing.errors[p.key]}" for p in ports if p.key in self.failing.errors]
        if broken:
            raise NetworkError(f"{vm}'s NIC could not be plugged ({'; '.join(broken)})")
        return [nic(p) for p in sorted(ports, key=lambda p: networks.index(p.network))]

    # --- one round ------------------------------------------------------------------------
    def _ports(self) -> list[Port]:
        kvs, _ = self.store.get_prefix(keys.PORTS)
        return [decode(Port, json.loads(kv.value)) for kv in kvs]

    def sync(self) -> SyncStats:
        with self._lock:
            return self._sync()

    def _sync(self) -> SyncStats:
        pid = self.net.start_vswitchd()
        restarted = pid != self._vswitchd_pid
        if restarted and self._vswitchd_pid:
            log.warning("ovs-vswitchd restarted (pid %d -> %d): pushing tunnels and flows again", self._vswitchd_pid, pid)
            self._pinned.clear()
        self._vswitchd_pid = pid

        peers = self._peers()
        tunnels = self._ensure_tunnels(peers)
        wanted = self.wanted()
        ports = self._ports()
        local = [p for p in ports if (p.kind is PortKind.ENDPOINT and p.host == self.host)
                 or (p.kind is PortKind.VM and p.name in wanted)]
        vnis = self._vnis()
        local_ports = self._ensure_ports(local, wanted, vnis)
        # One read serves both: this host's own bindings to publish, the others' to forward to.
        bkvs, _ = self.store.get_prefix(keys.BINDINGS)
        plugged = {lp.key for lp in local_ports}
        self._publish_bindings([p for p in local if p.key in plugged], bkvs)

        by_key = {p.key: p for p in ports}
        remote = []
        for kv in bkvs:
            net, name, host = keys.split(kv.key, keys.BINDINGS)
            p = by_key.get(f"{net}/{name}")
            if host != self.host and p is not None and net in vnis:
                remote.append(F.RemoteBinding(vnis[net], p.mac, host))
        desired = F.host_flows(self.host, local_ports, remote, tunnels)
        pushed = False
        if restarted or desired != self._pushed:
            self._push(desired)
            pushed = True
        stats = SyncStats(len(tunnels), len(local_ports), len(desired), pushed)
        self._count(last=stats)
        return stats

    def _vnis(self) -> dict[str, int]:
        kvs, _ = self.store.get_prefix(keys.NETWORKS)
        return {keys.split(kv.key, keys.NETWORKS)[0]: int(json.loads(kv.value)["vni"]) for kv in kvs}

    def _peers(self) -> dict[str, NodeSpec]:
        kvs, _ = self.store.get_prefix(keys.NODES)
        specs: dict[str, NodeSpec] = {}
        alive: set[str] = set()
        for kv in kvs:
            node, kind = keys.split(kv.key, keys.NODES)
            if kind == "spec":
                specs[node] = decode(NodeSpec, json.loads(kv.value))
            elif kind == "status":
                alive.add(node)
        return {n: s for n, s in specs.items() if n != self.host and n in alive and s.tunnel_ip}

    # --- tunnels ------------------------------------------------------------------------
    def _ensure_tunnels(self, peers: dict[str, NodeSpec]) -> dict[str, int]:
        want = {("t" + hashlib.sha1(n.encode()).hexdigest()[:11]): s for n, s in peers.items()}
        have = {p.name: p for p in self.db.rows("Port") if p.external_ids.get("vdcos-peer")}
        add = {}
        for name, spec in want.items():
            opts = {"remote_ip": spec.tunnel_ip, "local_ip": self.net.underlay_ip, "key": "flow"}
            cur = have.get(name)
            if cur is None or dict(cur.interfaces[0].options) != opts:
                add[name] = {"type": "vxlan", "options": opts, "external_ids": {"vdcos-peer": spec.name}}
        gone = set(have) - set(want)
        if add:
            self.db.add_ports("br-int", add)
            log.info("tunnels to %s", ", ".join(sorted(str(v["external_ids"]["vdcos-peer"]) for v in add.values())))
        if gone:
            self.db.del_ports("br-int", gone)
            log.info("tunnels removed: %s", ", ".join(sorted(have[g].external_ids["vdcos-peer"] for g in gone)))
        for spec in want.values():
            if spec.tunnel_ip not in self._pinned and spec.tunnel_mac:
                self._appctl("tnl/neigh/set", "br-phy", spec.tunnel_ip, spec.tunnel_mac)
                self._pinned.add(spec.tunnel_ip)
        return {spec.name: self.db.ofport(name) for name, spec in want.items()}

    def _appctl(self, *args: str) -> None:
        import ovs.unixctl.client

        err, client = ovs.unixctl.client.UnixctlClient.create(self.net.vswitchd_ctl)
        if err:
            raise NetworkError(f"cannot reach ovs-vswitchd control socket: {err}")
        try:
            err, failure, _ = client.transact(args[0], list(args[1:]))
            if err or failure:
                raise NetworkError(f"ovs-appctl {' '.join(args)}: {failure or err}")
        finally:
            client.close()

    # --- ports --------------------------------------------------------------------------
    def _ensure_ports(self, local: list[Port], wanted: dict[str, int], vnis: dict[str, int]) -> list[F.LocalPort]:
        have = {p.name: p for p in self.db.rows("Port") if p.external_ids.get("vdcos-port")}
        want = {device_name(p): p for p in local if p.network in vnis}
        add = {}
        failed: set[str] = set()
        for dev, p in want.items():
            if not self._device(p, dev):
                failed.add(dev)
            elif dev not in have:
                add[dev] = {"external_ids": {"vdcos-port": p.key, "attached-mac": p.mac}}
        if add:
            self.db.add_ports("br-int", add)
            for dev in sorted(add):
                with logs.request(want[dev].request_id):  # the call that made the port
                    log.info("plugged %s (%s)", want[dev].key, dev)
        gone = set(have) - set(want)
        if gone:
            self.db.del_ports("br-int", gone)
            for dev in gone:
                self._remove_device(dev, have[dev].external_ids["vdcos-port"])
                self._qos.pop(dev, None)
            log.info("unplugged %s", ", ".join(sorted(have[g].external_ids["vdcos-port"] for g in gone)))
        out = []
        for dev, p in want.items():
            if dev in failed and dev not in have:
                continue  # not on the switch: no flows, no binding
            mbps = wanted.get(p.name, 0) if p.kind is PortKind.VM else p.mbps_limit
            if self._qos.get(dev, 0) != mbps:
                self.db.set_port_qos(dev, mbps * 1_000_000)
                self._qos[dev] = mbps
            out.append(F.LocalPort(p.key, vnis[p.network], p.mac, self.db.ofport(dev)))
        return out

    def _device(self, p: Port, dev: str) -> bool:
        """Make the port's device, unless it waits out the backoff of an earlier failure; a
        failure is the port's alone (the others are plugged and forwarded as usual)."""
        if not self.failing.due(p.key):
            return False
        try:
            self._ensure_device(p, dev)
        except (NetworkError, subprocess.SubprocessError, OSError) as e:
            log.warning("port %s: %s (retry in %.1f s)", p.key, e, self.failing.failed(p.key, e))
            return False
        self.failing.succeeded(p.key)
        return True

    def _ensure_device(self, p: Port, dev: str) -> None:
        ns = self.net.netns
        if nl.link_exists(ns, dev):
            return
        if p.kind is PortKind.VM:
            # Persistent, unmanaged: QEMU opens it by name here and, after a move, on the destination.
            nl.execute(nl.AddTap(ns, dev), nl.SetLink(ns, dev, mtu=OVERLAY_MTU, up=True))
            return
        ep = self.net.endpoint_netns(p.network, p.name)
        if not netns_exists(ep):
            nl.add_namespace(ep)
            sh("ip", "netns", "exec", ep, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")
            nl.execute(nl.SetLink(ep, "lo", up=True))
        nl.execute(nl.AddVeth(ns, dev, "eth0", ep),
                   nl.SetLink(ep, "eth0", address=p.mac, mtu=OVERLAY_MTU),
                   nl.AddAddress(ep, "eth0", p.address),
                   nl.SetLink(ep, "eth0", up=True),
                   nl.SetLink(ns, dev, up=True))
        # The userspace datapath does not complete checksums the kernel left to the NIC.
        sh("ip", "netns", "exec", ep, "ethtool", "-K", "eth0", "tx", "off")

    def _remove_device(self, dev: str, key: str) -> None:
        nl.execute(nl.DelLink(self.net.netns, dev))
        if dev.startswith("ve"):
            network, port = key.split("/", 1)
            nl.del_namespace(self.net.endpoint_netns(network, port))

    def _publish_bindings(self, local: list[Port], bindings: list[KV]) -> None:
        lease = self.lease()
        want = {keys.binding(p.network, p.name, self.host) for p in local}
        mine = {kv.key: kv.lease for kv in bindings if keys.split(kv.key, keys.BINDINGS)[2] == self.host}
        ops: list[Put | Delete] = [Put(k, self.host.encode(), lease) for k in sorted(want) if mine.get(k) != lease]
        ops += [Delete(k) for k in sorted(set(mine) - want)]
        if ops:
            self.store.txn([], ops)

    # --- flows --------------------------------------------------------------------------
    def _push(self, flows: list[str]) -> None:
        t0 = time.monotonic()
        r = subprocess.run(["ovs-ofctl", "-O", "OpenFlow14", "--bundle", "replace-flows",
                            f"unix:{self.net.mgmt_socket()}", "-"],
                           input="\n".join(flows) + "\n", capture_output=True, text=True, timeout=30)
        if r.returncode:
            raise NetworkError(f"replace-flows: {r.stderr.strip()}")
        self._pushed = flows
        took = time.monotonic() - t0
        self._count(flow_pushes=1, flow_push_seconds=took)
        log.debug("pushed %d flows in %.0f ms", len(flows), took * 1000)


def wait_bound(store: Store, ports: list[Port], host: str, timeout: float) -> bool:
    """True once every port has a binding on `host` (its switch has plugged it)."""
    deadline = time.monotonic() + timeout
    want = {keys.binding(p.network, p.name, host) for p in ports}
    while True:
        kvs, _ = store.get_prefix(keys.BINDINGS)
        if want <= {kv.key for kv in kvs}:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
