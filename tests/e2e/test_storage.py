"""Volumes on real libvirt hosts: files made in the host's libvirt pool from a cached base image,
the guest reads the image's content through its overlay, the QoS policy's IOPS cap holds, a
VM's volumes go with it, a VM on a shared volume live-migrates with nothing copied, and one on a
local volume takes it along byte for byte (copy-storage), or, when the copy fails midway, stays
where it was with its volume while the destination's copy and its space are given back. A
snapshot of a running guest's volume holds what the guest wrote, and so does a volume restored
from it."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.conftest import wait_until
from tests.e2e.dc import Datacenter
from vdcos.cli.localdc import down, up
from vdcos.images import disk_sums, ensure
from vdcos.model import Allocation, decode
from vdcos.state import keys
from vdcos.storagepool.images import content_digest
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import qos_policy_service_pb2 as pol_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import volume_service_pb2 as vol_pb

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]


class Dc(Datacenter):
    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.digest = ""  # of the copied volume, carried from one test to the next

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
        wait_until(lambda: "DISKS" in self.console(node, name), 120)
        return vm

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
    d.close()
    down(home, purge=True)


def read_iops(dc: Dc, node: str, vm: str, low: float, high: float, seconds: float = 3.0, windows: int = 6) -> list[float]:
    """The guest's read IOPS over consecutive windows, until one lands in [low, high] or `windows`
    have been measured. A stall of this shared machine (TCG guest, other tenants) can only lower a
    window's rate, so one window at the cap shows it is reached and none above it that it holds."""
    rates: list[float] = []
    conn = libvirt.open(dc.host(node).uri)
    try:
        dom = conn.lookupByName(vm)
        r0, t0 = dom.blockStats("vda")[0], time.monotonic()
        while len(rates) < windows and not any(low <= r <= high for r in rates):
            time.sleep(seconds)
            r1, t1 = dom.blockStats("vda")[0], time.monotonic()
            rates.append((r1 - r0) / (t1 - t0))
            r0, t0 = r1, t1
        return rates
    finally:
        conn.close()


def block_iotune(dc: Dc, node: str, vm: str) -> dict[str, int]:
    conn = libvirt.open(dc.host(node).uri)
    try:
        return dict(conn.lookupByName(vm).blockIoTune("vda", 0))
    finally:
        conn.close()


def test_local_volume_from_an_image_with_an_iops_cap(dc: Dc) -> None:
    dc.client.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(policy=pb.QosPolicy(
        name="iops25", qos_class=pb.QOS_CLASS_BURSTABLE, disk_iops_limit=25)))
    v = dc.create_volume("data", vol_pb.POOL_KIND_LOCAL, 2, host="host-2", image="pattern")
    assert Path(v.path).exists() and "host-2" in v.path
    vm = dc.create_vm("reader", ["data"], image="disk-read", policy="iops25")
    assert vm.placement.node == "host-2"  # where its local volume lives
    # The guest reads the base image's first block through its qcow2 overlay.
    assert "DISK vda vdcos pattern v1 block 00000000" in dc.console("host-2", "reader")
    assert block_iotune(dc, "host-2", "reader")["total_iops_sec"] == 25  # what QEMU throttles to
    # Uncapped, this guest reads 2,500-3,000 IOPS here, but under a cap of 100 CI once measured
    # six 3 s windows climbing from 40 to 75 (a slower disk or a starved TCG guest). A cap well
    # under that shows the throttle on both machines; a window at it shows it is not undercut.
    iops = read_iops(dc, "host-2", "reader", 20, 30, windows=12)
    assert max(iops) <= 30 and any(r >= 20 for r in iops), f"an IOPS cap of 25 measured {iops}"
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
    dc.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="sharer"))
    wait_until(lambda: not Path(v.path).exists(), 30)


def test_a_running_guest_gets_a_volume_plugged_grown_and_unplugged(dc: Dc) -> None:
    node = dc.create_vm("hotplug", []).placement.node
    dc.create_volume("hot", vol_pb.POOL_KIND_LOCAL, 1, host=node, image="pattern")
    seen = len(dc.console(node, "hotplug"))
    dc.client.volumes.AttachVolume(vol_pb.AttachVolumeRequest(name="hot", vm="hotplug"))
    wait_until(lambda: "DISKS vda:1024\n" in dc.console(node, "hotplug")[seen:], 60)
    dc.client.volumes.ResizeVolume(vol_pb.ResizeVolumeRequest(name="hot", size_gib=2))
    wait_until(lambda: "DISKS vda:2048\n" in dc.console(node, "hotplug")[seen:], 60)
    dc.client.volumes.DetachVolume(vol_pb.DetachVolumeRequest(name="hot"))
    wait_until(lambda: "DISKS\n" in dc.console(node, "hotplug")[seen:], 60)
    assert "hot.qcow2" not in "".join(dc.host(node).domains().values())
    dc.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="hotplug"))
    dc.client.volumes.DeleteVolume(vol_pb.DeleteVolumeRequest(name="hot"))


def migrate(dc: Dc, vm: str, to: str, **options: int) -> mig_pb.Migration:
    m = dc.client.migrations.MigrateVm(mig_pb.MigrateVmRequest(
        vm=vm, target_node=to, options=mig_pb.MigrationOptions(**options))).migration
    last = m
    for ev in dc.client.migrations.WatchMigration(mig_pb.WatchMigrationRequest(id=m.id), timeout=300):
        last = ev.migration
    return last


def test_a_local_volume_follows_its_vm_byte_for_byte(dc: Dc) -> None:
    v = dc.create_volume("moving", vol_pb.POOL_KIND_LOCAL, 1, host="host-1")
    dc.create_vm("filler", ["moving"], image="disk-fill")
    wait_until(lambda: disk_sums(dc.console("host-1", "filler")), 300)
    before = disk_sums(dc.console("host-1", "filler"))[0]
    digest = content_digest(v.path)  # the guest flushed after writing: the file is complete
    last = migrate(dc, "filler", "host-2")
    assert last.phase == mig_pb.MIGRATION_PHASE_COMPLETED, last.message
    moved = dc.volume("moving")
    assert moved.host == "host-2" and moved.path != v.path and Path(moved.path).exists()
    wait_until(lambda: not Path(v.path).exists(), 30)  # the source's file goes
    assert "volume/moving" in dc.alloc("host-2") and "volume/moving" not in dc.alloc("host-1")
    # The same guest reads its 512 MiB of random data back on the destination, unchanged.
    seen = len(dc.console("host-2", "filler"))
    # The same read as the first sum's, so the same time allowed: a loaded CI machine took over 120 s.
    wait_until(lambda: disk_sums(dc.console("host-2", "filler")[seen:]), 300)
    assert disk_sums(dc.console("host-2", "filler")[seen:])[0] == before
    dc.digest = digest


def test_a_copy_that_fails_midway_leaves_vm_and_volume_where_they_were(dc: Dc) -> None:
    """The destination's QEMU dies during the copy (its host's crash, in small)."""
    v = dc.volume("moving")
    dest = dc.host("host-1")
    pid_file = dest.path("run", "qemu", "filler.pid")
    box: dict[str, mig_pb.Migration] = {}
    # 8 MiB/s: the 512 MiB copy takes about a minute, time enough to break it.
    t = threading.Thread(target=lambda: box.update(m=migrate(dc, "filler", "host-1", max_bandwidth_mibps=8)))
    t.start()
    wait_until(lambda: pid_file.exists() and dc.volume("moving").target_path, 60)
    target = dc.volume("moving").target_path
    time.sleep(3)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    t.join(120)
    assert box["m"].phase == mig_pb.MIGRATION_PHASE_FAILED, box["m"]
    after = dc.volume("moving")
    assert (after.host, after.path, after.target_path, after.moving_to) == ("host-2", v.path, "", "")
    wait_until(lambda: not Path(target).exists(), 30)  # the destination's copy is deleted
    assert dc.alloc("host-1") == []                     # and its space given back
    assert "volume/moving" in dc.alloc("host-2")
    vm = dc.client.vms.GetVm(vm_pb.GetVmRequest(name="filler")).vm
    assert vm.placement.node == "host-2" and vm.status.phase == pb.VM_PHASE_RUNNING
    seen = len(dc.console("host-2", "filler"))
    wait_until(lambda: "CNT" in dc.console("host-2", "filler")[seen:], 30)
    # Once its QEMU has closed it, the file holds every byte the first host's had.
    dc.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="filler", keep_volumes=True))
    wait_until(lambda: "filler" not in dc.alloc("host-2"), 30)
    assert "volume/moving" in dc.alloc("host-2")  # a kept volume keeps its space
    wait_until(lambda: "filler" not in dc.host("host-2").domains(), 30)
    assert content_digest(after.path) == dc.digest
    dc.client.volumes.DeleteVolume(vol_pb.DeleteVolumeRequest(name="moving"))
    wait_until(lambda: not Path(v.path).exists(), 30)


def md5_of_first(disk: str, mib: int, scratch: Path) -> str:
    """md5 of a closed qcow2 disk's first `mib` MiB as a guest reads them (its whole chain)."""
    raw = scratch / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", disk, str(raw)], check=True, timeout=300)
    h = hashlib.md5()
    with open(raw, "rb") as f:
        for _ in range(mib):
            h.update(f.read(1 << 20))
    raw.unlink()
    return h.hexdigest()


def test_a_live_snapshot_restores_what_the_guest_had_written(dc: Dc, tmp_path: Path) -> None:
    dc.create_volume("journal", vol_pb.POOL_KIND_LOCAL, 1, host="host-1")
    dc.create_vm("writer", ["journal"], image="disk-fill")
    wait_until(lambda: disk_sums(dc.console("host-1", "writer")), 300)
    written = disk_sums(dc.console("host-1", "writer"))[0]
    dc.client.volumes.CreateSnapshot(vol_pb.CreateSnapshotRequest(
        snapshot=vol_pb.Snapshot(name="journal-1", volume="journal")))
    wait_until(lambda: dc.client.volumes.GetSnapshot(vol_pb.GetSnapshotRequest(name="journal-1")).snapshot.state
               != vol_pb.VOLUME_STATE_CREATING, 120)
    snap = dc.client.volumes.GetSnapshot(vol_pb.GetSnapshotRequest(name="journal-1")).snapshot
    assert snap.state == vol_pb.VOLUME_STATE_AVAILABLE, snap.message
    assert snap.live and Path(snap.path).exists() and "snapshot/journal-1" in dc.alloc("host-1")
    # The guest ran on through the copy.
    seen = len(dc.console("host-1", "writer"))
    wait_until(lambda: "CNT" in dc.console("host-1", "writer")[seen:], 30)
    dc.client.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
        name="journal-restored", snapshot="journal-1")))
    wait_until(lambda: dc.volume("journal-restored").state == vol_pb.VOLUME_STATE_AVAILABLE, 120)
    restored = dc.volume("journal-restored")
    assert (restored.host, restored.size_gib) == ("host-1", 1)
    # What the guest wrote and read back is what the snapshot and the restored volume hold.
    assert md5_of_first(snap.path, 512, tmp_path) == written
    assert md5_of_first(restored.path, 512, tmp_path) == written
    # The volume goes with its VM; the snapshot stays until deleted, then its file goes too.
    dc.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="writer"))
    wait_until(lambda: "volume/journal" not in dc.alloc("host-1"), 30)
    assert dc.client.volumes.GetSnapshot(vol_pb.GetSnapshotRequest(name="journal-1")).snapshot.path == snap.path
    dc.client.volumes.DeleteSnapshot(vol_pb.DeleteSnapshotRequest(name="journal-1"))
    dc.client.volumes.DeleteVolume(vol_pb.DeleteVolumeRequest(name="journal-restored"))
    wait_until(lambda: not Path(snap.path).exists() and not Path(restored.path).exists(), 30)
    assert dc.alloc("host-1") == []
