"""Volumes on real libvirt hosts: files made in the host's libvirt pool from a cached base image,
the guest reads the image's content through its overlay, the QoS policy's IOPS cap holds, a
VM's volumes go with it, and a VM on a shared volume live-migrates with nothing copied."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.conftest import wait_until
from vdcos.cli.client import Client
from vdcos.cli.localdc import LocalDatacenter, down, host_root, up
from vdcos.host.libvirtd import LibvirtHost
from vdcos.images import ensure
from vdcos.model import Allocation, decode
from vdcos.nodeagent.libvirt.domain import read_console
from vdcos.state import keys
from vdcos.state.etcd import EtcdStore
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import qos_policy_service_pb2 as pol_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import volume_service_pb2 as vol_pb

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]


class Dc:
    def __init__(self, home: Path) -> None:
        self.home = home
        state = LocalDatacenter.load(home)
        assert state is not None
        self.client = Client(state.scheduler)
        self.store = EtcdStore(state.etcd)

    def volume(self, name: str) -> vol_pb.Volume:
        return self.client.volumes.GetVolume(vol_pb.GetVolumeRequest(name=name)).volume

    def create_volume(self, name: str, pool: int, size: int, host: str = "", image: str = "") -> vol_pb.Volume:
        self.client.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
            name=name, pool=pool, size_gib=size, host=host, image=image)))
        wait_until(lambda: self.volume(name).state == vol_pb.VOLUME_STATE_AVAILABLE, 30)
        return self.volume(name)

    def create_vm(self, name: str, volumes: list[str], image: str = "", policy: str = "") -> pb.Vm:
        spec = pb.VmSpec(name=name, volumes=volumes, image=image, qos_policy=policy,
                         resources=pb.Resources(vcpus=1, memory_mib=128))
        vm = self.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec)).vm
        node = vm.placement.node
        wait_until(lambda: "DISK vda" in read_console(host_root(self.home, node), name), 120)
        return vm

    def console(self, node: str, vm: str) -> str:
        return read_console(host_root(self.home, node), vm)

    def alloc(self, node: str) -> list[str]:
        kv = self.store.get(keys.alloc(node))
        return [e.vm for e in (decode(Allocation, json.loads(kv.value)) if kv else Allocation(node)).entries]


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dc]:
    ensure()
    home = tmp_path_factory.mktemp("st")
    up(home, 2, "libvirt", {"vcpus": 4, "memory_mib": 4096, "disk_gib": 50, "network_mbps": 1000})
    d = Dc(home)
    yield d
    d.client.channel.close()
    d.store.close()
    down(home)


def read_iops(dc: Dc, node: str, vm: str, seconds: float = 4.0) -> float:
    conn = libvirt.open(LibvirtHost.load(host_root(dc.home, node)).uri)
    try:
        dom = conn.lookupByName(vm)
        r0, t0 = dom.blockStats("vda")[0], time.monotonic()
        time.sleep(seconds)
        r1, t1 = dom.blockStats("vda")[0], time.monotonic()
        return (r1 - r0) / (t1 - t0)
    finally:
        conn.close()


def test_local_volume_from_an_image_with_an_iops_cap(dc: Dc) -> None:
    dc.client.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(policy=pb.QosPolicy(
        name="iops100", qos_class=pb.QOS_CLASS_BURSTABLE, disk_iops_limit=100)))
    v = dc.create_volume("data", vol_pb.POOL_KIND_LOCAL, 2, host="host-2", image="pattern")
    assert Path(v.path).exists() and "host-2" in v.path
    vm = dc.create_vm("reader", ["data"], image="disk-read", policy="iops100")
    assert vm.placement.node == "host-2"  # where its local volume lives
    # The guest reads the base image's first block through its qcow2 overlay.
    assert "DISK vda vdcos pattern v1 block 00000000" in dc.console("host-2", "reader")
    iops = read_iops(dc, "host-2", "reader")
    assert 80 <= iops <= 120, f"an IOPS cap of 100 measured {iops:.1f}"
    assert "volume/data" in dc.alloc("host-2")
    dc.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="reader"))
    wait_until(lambda: not Path(v.path).exists(), 30)
    assert "volume/data" not in dc.alloc("host-2")
    assert not dc.client.volumes.ListVolumes(vol_pb.ListVolumesRequest()).volumes


def test_shared_volume_migrates_without_copy_and_local_ones_say_why_not(dc: Dc) -> None:
    v = dc.create_volume("shared-1", vol_pb.POOL_KIND_SHARED, 1, image="pattern")
    vm = dc.create_vm("sharer", ["shared-1"])
    src = vm.placement.node
    dst = "host-1" if src == "host-2" else "host-2"
    m = dc.client.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm="sharer", target_node=dst)).migration
    last = None
    for ev in dc.client.migrations.WatchMigration(mig_pb.WatchMigrationRequest(id=m.id), timeout=120):
        last = ev.migration
    assert last is not None and last.phase == mig_pb.MIGRATION_PHASE_COMPLETED, last
    assert dc.volume("shared-1").path == v.path and Path(v.path).exists()
    # A VM on a local volume cannot move yet, and says so.
    dc.create_volume("pinned", vol_pb.POOL_KIND_LOCAL, 1, host=src)
    dc.create_vm("stuck", ["pinned"])
    with pytest.raises(Exception) as e:
        dc.client.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm="stuck", target_node=dst))
    assert "local volumes" in str(e.value)
    for name in ("sharer", "stuck"):
        dc.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name=name))
    wait_until(lambda: not Path(v.path).exists(), 30)
