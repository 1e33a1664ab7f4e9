"""Names and specs the API accepts must be realizable on a real libvirt host: seeded hostile but
valid VMs (the longest names, names that are prefixes of others or look like devices, many
disks and NICs, the smallest memory the image takes) each reach RUNNING, and the VMs beside
them on the same host keep running and new ones still start."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from tests.conftest import wait_until
from tests.e2e.dc import Datacenter
from vdcos.cli.localdc import down, up
from vdcos.images import CATALOG, counters, ensure
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import volume_service_pb2 as vol_pb

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-"


def hostile_names(rng: random.Random) -> list[str]:
    """Valid per the API's rule, chosen to break paths, prefixes and device names."""
    longest = "".join(rng.choice(ALPHABET[:36]) for _ in range(63))
    return [
        longest,                                 # the longest name: sockets, cgroups, log paths
        longest[:62] + "0",                      # the same but its last character
        "0",                                     # one digit
        "br-int",                                # the host's bridge
        "eth0",                                  # a guest and host device
        "a" + "-" * 61 + "b",                    # dashes only
    ]


def _phase(dc: Datacenter, name: str) -> int:
    return int(dc.client.vms.GetVm(vm_pb.GetVmRequest(name=name)).vm.status.phase)


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Datacenter]:
    ensure()
    home: Path = tmp_path_factory.mktemp("fz")
    up(home, 1, "libvirt", {"vcpus": 8, "memory_mib": 6144, "disk_gib": 100, "network_mbps": 1000})
    d = Datacenter(home)
    yield d
    d.close()
    down(home, purge=True)


def test_hostile_but_valid_vms_all_run_and_their_neighbours_too(dc: Datacenter) -> None:
    rng = random.Random(20261207)
    c = dc.client
    c.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(name="n", cidr="10.40.0.0/24")))
    c.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(name="0", cidr="10.41.0.0/24")))
    c.vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(name="bystander", resources=pb.Resources(vcpus=1, memory_mib=128))))
    wait_until(lambda: len(counters(dc.console("host-1", "bystander"))) >= 3, 180, every=0.5)  # booted
    names = hostile_names(rng)
    small = CATALOG["counter"].min_memory_mib
    for i, name in enumerate(names):
        vols = []
        if i % 2 == 0:  # disks named like the VM, and several of them
            vols = [name[:60] + f"-{k}" if len(name) > 60 else f"{name}-{k}" for k in range(3)]
            for v in vols:
                c.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
                    name=v, pool=vol_pb.POOL_KIND_SHARED, size_gib=1)))
        spec = pb.VmSpec(name=name, volumes=vols, networks=["n", "0"] if i % 3 == 0 else ["n"],
                         node_selector={"rack": "rack-1"},
                         resources=pb.Resources(vcpus=rng.choice([1, 2]), memory_mib=small, disk_gib=1))
        try:
            c.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec), timeout=30)
        except grpc.RpcError as e:
            raise AssertionError(f"{name!r}: a valid VM was refused: {e.code()}: {e.details()}") from e
    # Every one reaches RUNNING on the real host, or says why in its own status.
    def settled() -> bool:
        return all(_phase(dc, n) == pb.VM_PHASE_RUNNING for n in names)
    try:
        wait_until(settled, 300, every=1.0)
    except AssertionError:
        stuck = {n: c.vms.GetVm(vm_pb.GetVmRequest(name=n)).vm.status.message for n in names
                 if _phase(dc, n) != pb.VM_PHASE_RUNNING}
        raise AssertionError(f"valid VMs that did not run: {stuck}") from None
    # The neighbours: the one that was there runs on, a new one starts.
    n = len(counters(dc.console("host-1", "bystander")))
    try:
        # (Six guests booting beside it on two cores under TCG slow it down, they must not stop it.)
        wait_until(lambda: len(counters(dc.console("host-1", "bystander"))) > n + 3, 120, every=0.5)
    except AssertionError:
        vm = c.vms.GetVm(vm_pb.GetVmRequest(name="bystander")).vm
        raise AssertionError(f"the bystander stopped: {vm.status}; console ends "
                             f"{dc.console('host-1', 'bystander')[-600:]!r}") from None
    c.vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(name="after", resources=pb.Resources(vcpus=1, memory_mib=128))))
    wait_until(lambda: _phase(dc, "after") == pb.VM_PHASE_RUNNING, 120)
    for name in names:  # and they go as cleanly as they came
        c.vms.DeleteVm(vm_pb.DeleteVmRequest(name=name), timeout=30)
    wait_until(lambda: set(dc.host("host-1").domains()) == {"bystander", "after"}, 60)
