"""Tenant networks and their ports in etcd: VNIs, addresses and MACs handed out exactly once.

Every allocation is one transaction that creates the claim key (`/vdcos/vnis/<vni>`,
`/vdcos/network-ips/<net>/<ip>`) only if it does not exist yet, so two concurrent requests can
never get the same VNI or address: the loser re-reads and takes the next free one. A port's MAC
is derived from its network's VNI and its address, so it is as unique as they are.
"""
from __future__ import annotations

import ipaddress
import json
import time
from typing import Sequence

from vdcos import logs
from vdcos.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from vdcos.model import Network, Port, PortKind, decode, dumps
from vdcos.model.project import NETWORK_USAGE
from vdcos.projects import records as projects
from vdcos.state import keys
from vdcos.state.rmw import Reads, Write, read_modify_write
from vdcos.state.store import Compare, Delete, Op, Put, Store

VNI_MIN, VNI_MAX = 1000, (1 << 24) - 1
PREFIX_MIN, PREFIX_MAX = 16, 29
ATTEMPTS = 50


def check_cidr(cidr: str) -> ipaddress.IPv4Network:
    """The one rule for a tenant CIDR, used by validation and allocation alike."""
    try:
        net = ipaddress.IPv4Network(cidr, strict=True)
    except ValueError as e:
        raise InvalidArgument(f"cidr: {e}", details=[("network.cidr", str(e))]) from None
    if not PREFIX_MIN <= net.prefixlen <= PREFIX_MAX:
        why = f"prefix length must be between /{PREFIX_MIN} and /{PREFIX_MAX}, got /{net.prefixlen}"
        raise InvalidArgument(f"cidr: {why}", details=[("network.cidr", why)])
    return net


def mac_for(vni: int, net: ipaddress.IPv4Network, ip: str) -> str:
    """02:<vni, 3 bytes>:<host part, 2 bytes>: locally administered, unique per (VNI, address)."""
    host = int(ipaddress.IPv4Address(ip)) - int(net.network_address)
    b = [0x02, (vni >> 16) & 0xFF, (vni >> 8) & 0xFF, vni & 0xFF, (host >> 8) & 0xFF, host & 0xFF]
    return ":".join(f"{x:02x}" for x in b)


def get(store: Store, name: str) -> Network:
    kv = store.get(keys.network(name))
    if kv is None:
        raise NotFound(f"network {name!r} not found")
    return decode(Network, json.loads(kv.value))


def list_networks(store: Store) -> list[Network]:
    kvs, _ = store.get_prefix(keys.NETWORKS)
    return sorted((decode(Network, json.loads(kv.value)) for kv in kvs), key=lambda n: n.name)


def create(store: Store, name: str, cidr: str, vni: int = 0, project: str = "") -> Network:
    check_cidr(cidr)

    def attempt(r: Reads) -> Write[Network]:
        if r.kv(keys.network(name)) is not None:
            raise AlreadyExists(f"network {name!r} already exists")
        if vni:
            holder = r.kv(keys.vni(vni))
            if holder is not None:
                raise AlreadyExists(f"VNI {vni} is used by network {holder.value.decode()!r}")
            chosen = vni
        else:
            # Any free VNI will do: the commit compares the chosen one alone.
            kvs, _ = store.get_prefix(keys.VNIS)
            used = {int(keys.split(kv.key, keys.VNIS)[0]) for kv in kvs}
            chosen = next((v for v in range(VNI_MIN, VNI_MIN + len(used) + 1) if v not in used), 0)
        if not VNI_MIN <= chosen <= VNI_MAX:
            raise ResourceExhausted("no free VNI")
        network = Network(name, chosen, cidr, time.time(), project)
        charged = projects.charge(r, project, NETWORK_USAGE)
        return Write(network, [Put(keys.network(name), dumps(network)), Put(keys.vni(chosen), name.encode()),
                               *charged],
                     [Compare(keys.vni(chosen), "create", "==", 0)])
    return read_modify_write(store, attempt, f"network {name}", attempts=ATTEMPTS)


def delete(store: Store, name: str, project: str | None = None) -> None:
    """Delete an empty network (with `project`: only that project's)."""
    def attempt(r: Reads) -> Write[None]:
        network = r.get(Network, keys.network(name))
        if network is None or (project is not None and network.project != project):
            raise NotFound(f"network {name!r} not found")
        ports, rev = store.get_prefix(f"{keys.PORTS}{name}/")
        if ports:
            names = ", ".join(sorted(keys.split(p.key, keys.PORTS)[1] for p in ports)[:10])
            raise FailedPrecondition(f"network {name!r} still has {len(ports)} port(s): {names}")
        return Write(None, [Delete(keys.network(name)), Delete(keys.vni(network.vni)),
                            Delete(keys.network_ips(name), prefix=True),
                            *projects.charge(r, network.project, -NETWORK_USAGE)],
                     [Compare(f"{keys.PORTS}{name}/", "create", "<", rev + 1, prefix=True)])
    read_modify_write(store, attempt, f"network {name}", attempts=ATTEMPTS)


def _free_ip(net: ipaddress.IPv4Network, taken: set[str]) -> str:
    # The first address is the network's gateway, reserved for a router as in Neutron.
    for host in list(net.hosts())[1:]:
        if str(host) not in taken:
            return str(host)
    raise ResourceExhausted(f"network {net} has no free address")


def list_ports(store: Store, network: str = "") -> list[Port]:
    kvs, _ = store.get_prefix(f"{keys.PORTS}{network + '/' if network else ''}")
    return sorted((decode(Port, json.loads(kv.value)) for kv in kvs), key=lambda p: p.key)


def create_ports(store: Store, requests: Sequence[tuple[str, str, PortKind, str, str, int]],
                 project: str | None = None) -> list[Port]:
    """Creates ports in one transaction: (network, name, kind, host, ip or "", mbps_limit) each.
    All or none: a VM's NICs exist together or not at all. With `project`, only on that
    project's networks (another's is not found), compared in the same transaction."""

    def attempt(r: Reads) -> Write[list[Port]]:
        compares: list[Compare] = []
        ops: list[Op] = []
        ports: list[Port] = []
        taken_here: dict[str, set[str]] = {}
        r.load(*(k for net_name, name, *_ in requests for k in (keys.network(net_name), keys.port(net_name, name))))
        for net_name, name, kind, host, ip, mbps in requests:
            network = r.get(Network, keys.network(net_name))
            if network is None or (project is not None and network.project != project):
                raise NotFound(f"network {net_name!r} not found")
            cidr = ipaddress.IPv4Network(network.cidr)
            if r.kv(keys.port(net_name, name)) is not None:
                raise AlreadyExists(f"port {name!r} already exists on network {net_name!r}")
            if net_name not in taken_here:
                ips, _ = store.get_prefix(keys.network_ips(net_name))
                taken_here[net_name] = {keys.split(x.key, keys.network_ips(net_name))[0] for x in ips}
            taken = taken_here[net_name]
            if ip:
                addr = ipaddress.IPv4Address(ip)
                if addr not in cidr or addr in (cidr.network_address, cidr.broadcast_address):
                    raise InvalidArgument(f"ip {ip} is not a host address of {cidr}", details=[("ip", f"not in {cidr}")])
                if ip in taken:
                    raise AlreadyExists(f"address {ip} is taken on network {net_name!r}")
                chosen = ip
            else:
                chosen = _free_ip(cidr, taken)
            taken.add(chosen)
            port = Port(name, net_name, mac_for(network.vni, cidr, chosen), chosen, cidr.prefixlen, kind, host,
                        mbps, time.time(), logs.REQUEST_ID.get())
            ports.append(port)
            # Only the address taken is compared: ports taking others meanwhile do not conflict.
            compares.append(Compare(keys.network_ip(net_name, chosen), "create", "==", 0))
            ops += [Put(keys.port(net_name, name), dumps(port)), Put(keys.network_ip(net_name, chosen), name.encode())]
        return Write(ports, ops, compares)
    return read_modify_write(store, attempt, "ports " + ", ".join(f"{n}/{p}" for n, p, *_ in requests),
                             attempts=ATTEMPTS)


def delete_ports(store: Store, ports: Sequence[Port]) -> None:
    """Releases ports and their addresses; a VM's NICs go with the VM."""
    ops: list[Op] = []
    for p in ports:
        ops += [Delete(keys.port(p.network, p.name)), Delete(keys.network_ip(p.network, p.ip))]
    if ops:
        store.txn([], ops)


def vm_ports(store: Store, vm: str, networks: Sequence[str]) -> list[Port]:
    out = []
    for n in networks:
        kv = store.get(keys.port(n, vm))
        if kv is not None:
            out.append(decode(Port, json.loads(kv.value)))
    return out
