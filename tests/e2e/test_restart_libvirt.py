"""`vdcos down` and `vdcos up` on real libvirt hosts: the same datacenter comes back, its network
and ports as they were, its volumes with the bytes a guest wrote, its VMs running again."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.e2e.test_storage import Dc, md5_of_first
from vdcos.cli.localdc import LocalDatacenter, down, up
from vdcos.images import counters, disk_sums, ensure
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import volume_service_pb2 as vol_pb

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]


def _ports(dc: Dc) -> list[tuple[str, str, str, str]]:
    return sorted((p.network, p.name, p.ip, p.mac) for p in dc.client.networks.ListPorts(net_pb.ListPortsRequest()).ports)


def test_down_and_up_bring_back_vms_networks_and_volume_data(tmp_path: Path) -> None:
    ensure()
    home = tmp_path / "dc"
    up(home, 2, "libvirt", {"vcpus": 4, "memory_mib": 4096, "disk_gib": 50, "network_mbps": 1000})
    dc = Dc(home)
    try:
        dc.client.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(
            name="net1", cidr="10.30.0.0/24")))
        # A guest writes the volume, and goes; the volume and its bytes stay.
        dc.create_volume("keep", vol_pb.POOL_KIND_SHARED, 1)
        dc.create_vm("writer", ["keep"], image="disk-fill")
        node = dc.client.vms.GetVm(vm_pb.GetVmRequest(name="writer")).vm.placement.node
        wait_until(lambda: disk_sums(dc.console(node, "writer")), 300)
        dc.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="writer", keep_volumes=True))
        # Free once the guest's QEMU has closed it, as its host's agent reports.
        wait_until(lambda: (v := dc.volume("keep")).state == vol_pb.VOLUME_STATE_AVAILABLE and not v.vm
                   and not v.open_on, 60)
        path = dc.volume("keep").path
        written = md5_of_first(path, 512, tmp_path)
        assert written == disk_sums(dc.console(node, "writer"))[0]
        # A VM with a NIC that keeps running.
        spec = pb.VmSpec(name="steady", networks=["net1"], resources=pb.Resources(vcpus=1, memory_mib=128))
        steady = dc.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec)).vm.placement.node
        wait_until(lambda: len(counters(dc.console(steady, "steady"))) > 3, 120)
        boots = dc.console(steady, "steady").count("GUEST-BOOTED")
        ports, networks = _ports(dc), [n.name for n in dc.client.networks.ListNetworks(net_pb.ListNetworksRequest()).networks]
        dc.close()

        down(home)
        state = LocalDatacenter.load(home)
        assert state is not None and not any(p.running() for p in state.procs)
        assert Path(path).exists()

        up(home, 2, "libvirt", {})
        dc = Dc(home)
        assert all(p.running() for p in dc.state.procs)
        assert [n.name for n in dc.client.networks.ListNetworks(net_pb.ListNetworksRequest()).networks] == networks
        assert _ports(dc) == ports
        vol = dc.volume("keep")
        assert (vol.path, vol.state) == (path, vol_pb.VOLUME_STATE_AVAILABLE)
        assert md5_of_first(path, 512, tmp_path) == written
        # The VM is booted again where it was placed, and runs.
        wait_until(lambda: dc.console(steady, "steady").count("GUEST-BOOTED") > boots, 120)
        wait_until(lambda: dc.client.vms.GetVm(vm_pb.GetVmRequest(name="steady")).vm.status.phase
                   == pb.VM_PHASE_RUNNING, 60)
        # And the volume serves a new guest (it waits for the guest to list the disk).
        dc.create_vm("reader", ["keep"])
    finally:
        dc.close()
        down(home, purge=True)
