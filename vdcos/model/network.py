"""Tenant networks, their ports, and a guest NIC as a hypervisor driver sees it."""
from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Network:
    """A tenant network: one L2 segment over every host, isolated by its VNI."""

    name: str
    vni: int
    cidr: str
    created_at: float = 0.0
    project: str = ""  # its ports, and the VMs and endpoints on it, are that project's too


class PortKind(enum.Enum):
    VM = "vm"                # a VM's NIC: bound wherever the VM runs
    ENDPOINT = "endpoint"    # a network namespace on one host (probes, peers, load generators)


@dataclass(frozen=True, slots=True)
class Port:
    name: str                # a VM's NIC is named after its VM (one NIC per network)
    network: str
    mac: str
    ip: str
    prefix: int
    kind: PortKind = PortKind.VM
    host: str = ""           # endpoint ports only
    mbps_limit: int = 0      # endpoint ports only; a VM's NIC follows the VM's QoS policy
    created_at: float = 0.0
    request_id: str = ""     # the call that made it: the switch logs its plugging under it

    @property
    def key(self) -> str:
        return f"{self.network}/{self.name}"

    @property
    def address(self) -> str:
        return f"{self.ip}/{self.prefix}"


@dataclass(frozen=True, slots=True)
class Nic:
    """What a hypervisor driver needs to give a guest one NIC on a host's switch."""

    network: str
    mac: str
    device: str              # the tap on the host's br-int
    address: str             # ip/prefix the guest configures
    mtu: int = 1450
