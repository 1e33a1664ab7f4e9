"""Volumes through the gRPC API on sim hosts and a real etcd: a local volume's space counts on its
host, a VM with it runs there, a VM's volumes go with it, a live migration takes a copy of them
(accounted on the destination first, given back if the move does not happen), and bad requests
change nothing."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tests.conftest import Cluster, details, wait_until
from vdcos.model import Allocation, PoolKind, Resources, Snapshot, Volume, decode
from vdcos.state import keys
from vdcos.storagepool.pool import SimPools
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import qos_policy_service_pb2 as pol_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import volume_service_pb2 as vol_pb

pytestmark = pytest.mark.etcd
HOST = Resources(16, 65536, 100, 10000)


def vol(name: str, size: int, pool: int = vol_pb.POOL_KIND_LOCAL, host: str = "", image: str = "") -> vol_pb.Volume:
    return vol_pb.Volume(name=name, pool=pool, size_gib=size, host=host, image=image)


def create(c: Cluster, v: vol_pb.Volume) -> vol_pb.Volume:
    return c.client.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=v)).volume


def state(c: Cluster, name: str) -> int:
    return c.client.volumes.GetVolume(vol_pb.GetVolumeRequest(name=name)).volume.state


def vm(name: str, volumes: list[str]) -> pb.VmSpec:
    return pb.VmSpec(name=name, volumes=volumes, resources=pb.Resources(vcpus=1, memory_mib=128))


def test_a_vm_runs_where_its_local_volume_lives_and_takes_it_along(cluster: Cluster) -> None:
    for h in ("h1", "h2", "h3"):
        cluster.add_node(h, HOST)
    create(cluster, vol("data", 10, host="h2", image="pattern"))
    wait_until(lambda: state(cluster, "data") == vol_pb.VOLUME_STATE_AVAILABLE)
    placed = cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=vm("db", ["data"]))).vm
    assert placed.placement.node == "h2"
    v = cluster.client.volumes.GetVolume(vol_pb.GetVolumeRequest(name="data")).volume
    assert v.vm == "db" and v.path
    node = cluster.client.nodes.GetNode(node_pb.GetNodeRequest(name="h2")).node
    assert node.committed.disk_gib == 10 and node.vm_count == 1
    cluster.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="db"))
    assert not cluster.client.volumes.ListVolumes(vol_pb.ListVolumesRequest()).volumes
    storage = cluster.agents["h2"].storage
    assert storage is not None
    wait_until(lambda: not storage.pools.files(PoolKind.LOCAL))


def entries(c: Cluster, node: str) -> list[tuple[str, str]]:
    kv = c.store.get(keys.alloc(node))
    return [(e.vm, e.held_by) for e in (decode(Allocation, json.loads(kv.value)) if kv else Allocation(node)).entries]


def get_vol(c: Cluster, name: str) -> vol_pb.Volume:
    return c.client.volumes.GetVolume(vol_pb.GetVolumeRequest(name=name)).volume


def test_migrating_a_vm_copies_its_local_volume_accounted_first(cluster: Cluster) -> None:
    for h in ("h1", "h2"):
        cluster.add_node(h, HOST)
    create(cluster, vol("data", 30, host="h1"))
    wait_until(lambda: state(cluster, "data") == vol_pb.VOLUME_STATE_AVAILABLE)
    cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=vm("db", ["data"])))
    wait_until(lambda: cluster.client.vms.GetVm(vm_pb.GetVmRequest(name="db")).vm.status.phase == pb.VM_PHASE_RUNNING)
    cluster.agents["h1"].stop()  # the source agent never starts it: the migration stays pending
    m = cluster.client.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm="db")).migration
    assert m.target_node == "h2"
    # The copy's space is taken on the destination before any byte moves, the source's held.
    assert entries(cluster, "h2") == [("db", ""), ("volume/data", "")]
    assert entries(cluster, "h1") == [("db", m.id), ("volume/data", m.id)]
    storage = cluster.agents["h2"].storage
    assert storage is not None
    wait_until(lambda: "data" in storage.pools.files(PoolKind.LOCAL))  # the copy's file
    assert get_vol(cluster, "data").host == "h1"
    # Cancelled: the destination's copy is deleted and its space released; nothing else moved.
    cluster.client.migrations.CancelMigration(mig_pb.CancelMigrationRequest(id=m.id))
    assert entries(cluster, "h2") == []
    assert entries(cluster, "h1") == [("db", ""), ("volume/data", "")]
    wait_until(lambda: "data" not in storage.pools.files(PoolKind.LOCAL))
    # Now for real: the volume lives on h2 afterwards, and h1's file is gone.
    cluster.agents["h1"] = cluster.add_node("h1", HOST)
    m = cluster.client.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm="db", target_node="h2")).migration
    last = [e.migration for e in cluster.client.migrations.WatchMigration(
        mig_pb.WatchMigrationRequest(id=m.id), timeout=20)][-1]
    assert last.phase == mig_pb.MIGRATION_PHASE_COMPLETED, last.message
    v = get_vol(cluster, "data")
    assert v.host == "h2" and v.vm == "db" and v.path
    assert entries(cluster, "h1") == [] and entries(cluster, "h2") == [("db", ""), ("volume/data", "")]
    src = cluster.agents["h1"].storage
    assert src is not None
    wait_until(lambda: "data" not in src.pools.files(PoolKind.LOCAL))
    assert "data" in storage.pools.files(PoolKind.LOCAL)


def test_no_room_for_the_copy_refuses_the_migration_naming_disk(cluster: Cluster) -> None:
    cluster.add_node("h1", HOST)
    cluster.add_node("h2", Resources(16, 65536, 20, 10000))
    create(cluster, vol("big", 30, host="h1"))
    wait_until(lambda: state(cluster, "big") == vol_pb.VOLUME_STATE_AVAILABLE)
    cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=vm("db", ["big"])))
    wait_until(lambda: cluster.client.vms.GetVm(vm_pb.GetVmRequest(name="db")).vm.status.phase == pb.VM_PHASE_RUNNING)
    for target in ("h2", ""):
        with pytest.raises(grpc.RpcError) as e:
            cluster.client.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm="db", target_node=target))
        # h2 could never hold it: the scheduler says so; the chosen target's check says "no room".
        assert e.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION)
        assert "disk_gib" in (e.value.details() or "")
    assert entries(cluster, "h2") == [] and get_vol(cluster, "big").host == "h1"


def test_shared_volumes_do_not_tie_and_keep_volumes_detaches(cluster: Cluster) -> None:
    cluster.add_node("h1", HOST)
    cluster.add_node("h2", HOST)
    create(cluster, vol("s1", 5, vol_pb.POOL_KIND_SHARED))
    wait_until(lambda: state(cluster, "s1") == vol_pb.VOLUME_STATE_AVAILABLE)
    cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=vm("app", ["s1"])))
    with pytest.raises(grpc.RpcError) as e:  # one VM per volume
        cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=vm("app2", ["s1"])))
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.volumes.DeleteVolume(vol_pb.DeleteVolumeRequest(name="s1"))
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    cluster.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="app", keep_volumes=True))
    left = cluster.client.volumes.ListVolumes(vol_pb.ListVolumesRequest()).volumes
    assert [(v.name, v.vm) for v in left] == [("s1", "")]


def test_a_kept_volume_waits_for_its_last_guest_to_close_it(cluster: Cluster) -> None:
    """The record is free when its VM goes, the file only once that guest's QEMU closed it
    (QEMU holds a write lock on an open image): until its host's agent says so, no other guest
    opens it and no offline snapshot copies it."""
    cluster.add_node("h1", HOST)
    create(cluster, vol("kept", 5, vol_pb.POOL_KIND_SHARED))
    wait_until(lambda: state(cluster, "kept") == vol_pb.VOLUME_STATE_AVAILABLE)
    cluster.create_on("h1", vm("app", ["kept"]))
    cluster.agents["h1"].stop()  # its guest runs on, with the file open, and nobody closes it
    cluster.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="app", keep_volumes=True))
    left = get_vol(cluster, "kept")
    assert (left.vm, left.open_on) == ("", "h1")
    for call in (lambda: cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=vm("app2", ["kept"]))),
                 lambda: take(cluster, "snap", "kept")):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "still open in the guest it left, on h1" in (e.value.details() or "")
    assert cluster.store.get(keys.vm_spec("app2")) is None and cluster.store.get(keys.snapshot("snap")) is None
    assert sim_disks(cluster, "h1", "app") == (left.path,)
    cluster.add_node("h1", HOST)  # its agent back: the guest goes, then the volume is free
    wait_until(lambda: get_vol(cluster, "kept").open_on == "")
    assert "app" not in [d.name for d in cluster.agents["h1"].driver.list_domains()]
    cluster.create_on("h1", vm("app2", ["kept"]))
    assert get_vol(cluster, "kept").vm == "app2"


def test_local_volumes_never_overfill_a_host_under_concurrency(cluster: Cluster) -> None:
    cluster.add_node("h1", HOST)  # 100 GiB
    def one(i: int) -> bool:
        try:
            create(cluster, vol(f"v{i}", 30, host="h1"))
            return True
        except grpc.RpcError as e:
            assert e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            return False
    with ThreadPoolExecutor(8) as ex:
        ok = sum(ex.map(one, range(8)))
    assert ok == 3
    # And a VM asking for more disk than is left is refused, naming disk.
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(
            name="big", resources=pb.Resources(vcpus=1, memory_mib=128, disk_gib=20))))
    assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "disk_gib" in (e.value.details() or "")


def test_a_vm_whose_local_volumes_live_on_a_full_host_is_refused_and_releases_them(cluster: Cluster) -> None:
    cluster.add_node("h1", Resources(1, 65536, 100, 10000))
    cluster.add_node("h2", HOST)
    create(cluster, vol("d", 5, host="h1"))
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(
            name="needs-d", volumes=["d"], resources=pb.Resources(vcpus=8, memory_mib=128))))
    assert "local volume d lives on h1" in (e.value.details() or "")
    assert cluster.client.volumes.GetVolume(vol_pb.GetVolumeRequest(name="d")).volume.vm == ""


@pytest.mark.parametrize("v, field", [
    (vol("", 1), "volume.name"),
    (vol("x", 0), "volume.size_gib"),
    (vol("x", 1, pool=vol_pb.POOL_KIND_UNSPECIFIED), "volume.pool"),
    (vol("x", 1, image="windows"), "volume.image"),
    (vol("Bad_Name", 1), "volume.name"),
])
def test_bad_volume_requests_name_the_field_and_write_nothing(cluster: Cluster, v: vol_pb.Volume, field: str) -> None:
    cluster.add_node("h1", HOST)
    with pytest.raises(grpc.RpcError) as e:
        create(cluster, v)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert any(field in str(d) for d in details(e.value))
    assert not cluster.client.volumes.ListVolumes(vol_pb.ListVolumesRequest()).volumes


def test_volumes_bigger_than_any_pool_or_unknown_are_refused(cluster: Cluster) -> None:
    cluster.add_node("h1", HOST)
    with pytest.raises(grpc.RpcError) as e:
        create(cluster, vol("huge", 500))
    assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=vm("ghost", ["nope"])))
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert not cluster.client.vms.ListVms(vm_pb.ListVmsRequest()).vms
    assert not cluster.client.volumes.ListVolumes(vol_pb.ListVolumesRequest()).volumes


def sim_disks(c: Cluster, node: str, vm: str) -> tuple[str, ...]:
    return next((d.disks for d in c.agents[node].driver.list_domains() if d.name == vm), ())


def test_attach_detach_and_grow_on_a_running_vm(cluster: Cluster) -> None:
    cluster.add_node("h1", HOST)
    cluster.add_node("h2", HOST)
    cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(
        name="app", node_selector={}, resources=pb.Resources(vcpus=1, memory_mib=128))))
    wait_until(lambda: cluster.client.vms.GetVm(vm_pb.GetVmRequest(name="app")).vm.status.phase == pb.VM_PHASE_RUNNING)
    node = cluster.client.vms.GetVm(vm_pb.GetVmRequest(name="app")).vm.placement.node
    other = "h2" if node == "h1" else "h1"
    for v in (vol("far", 5, host=other), vol("near", 5, host=node), vol("sh", 5, vol_pb.POOL_KIND_SHARED)):
        create(cluster, v)
        wait_until(lambda n=v.name: state(cluster, n) == vol_pb.VOLUME_STATE_AVAILABLE)
    # A local volume on another host cannot reach the VM; the refusal names both hosts.
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.volumes.AttachVolume(vol_pb.AttachVolumeRequest(name="far", vm="app"))
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert other in (e.value.details() or "") and node in (e.value.details() or "")
    assert get_vol(cluster, "far").vm == ""
    for name in ("near", "sh"):
        assert cluster.client.volumes.AttachVolume(vol_pb.AttachVolumeRequest(name=name, vm="app")).volume.vm == "app"
    assert list(cluster.client.vms.GetVm(vm_pb.GetVmRequest(name="app")).vm.spec.volumes) == ["near", "sh"]
    wait_until(lambda: sim_disks(cluster, node, "app") == (get_vol(cluster, "near").path, get_vol(cluster, "sh").path))
    unattached = cluster.client.volumes.ListVolumes(vol_pb.ListVolumesRequest(unattached=True)).volumes
    assert [v.name for v in unattached] == ["far"]
    # Grow: the local one's space counts on its host at once; shrinking and too much are refused.
    cluster.client.volumes.ResizeVolume(vol_pb.ResizeVolumeRequest(name="near", size_gib=20))
    assert ("volume/near", "") in entries(cluster, node)
    n = cluster.client.nodes.GetNode(node_pb.GetNodeRequest(name=node)).node
    assert n.committed.disk_gib == 20
    for size, code in ((10, grpc.StatusCode.FAILED_PRECONDITION), (500, grpc.StatusCode.RESOURCE_EXHAUSTED),
                       (0, grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as e:
            cluster.client.volumes.ResizeVolume(vol_pb.ResizeVolumeRequest(name="near", size_gib=size))
        assert e.value.code() is code
    assert get_vol(cluster, "near").size_gib == 20
    cluster.client.volumes.DetachVolume(vol_pb.DetachVolumeRequest(name="near"))
    wait_until(lambda: sim_disks(cluster, node, "app") == (get_vol(cluster, "sh").path,))
    assert get_vol(cluster, "near").vm == ""
    storage = cluster.agents[node].storage
    assert storage is not None
    cluster.client.volumes.ResizeVolume(vol_pb.ResizeVolumeRequest(name="near", size_gib=25))
    wait_until(lambda: storage.pools.grown.get("near") == 25)  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.volumes.DetachVolume(vol_pb.DetachVolumeRequest(name="near"))
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    # What the agent remembers of a disk's size goes with the disk: unplugged, then deleted.
    near_path = get_vol(cluster, "near").path
    wait_until(lambda: near_path not in cluster.agents[node]._grown)
    cluster.client.volumes.DeleteVolume(vol_pb.DeleteVolumeRequest(name="near"))
    wait_until(lambda: "near" not in storage._sizes)


def test_iops_reservations_from_the_policy_bound_a_host(cluster: Cluster) -> None:
    def policy(**kw: object) -> pb.QosPolicy:
        return cluster.client.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(
            policy=pb.QosPolicy(**kw)), timeout=10).policy

    for bad, field in ((dict(name="x", qos_class=pb.QOS_CLASS_BURSTABLE, disk_iops_reservation=500,
                             disk_iops_limit=100), "policy.disk_iops_reservation"),
                       (dict(name="x", qos_class=pb.QOS_CLASS_BEST_EFFORT, disk_iops_reservation=1),
                        "policy.disk_iops_reservation"),
                       (dict(name="x", qos_class=pb.QOS_CLASS_GUARANTEED, disk_iops_reservation=-1),
                        "policy.disk_iops_reservation")):
        with pytest.raises(grpc.RpcError) as e:
            policy(**bad)
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field in str(details(e.value)[0])
    assert not cluster.client.policies.ListQosPolicies(pol_pb.ListQosPoliciesRequest()).policies
    cluster.add_node("h0", Resources(16, 65536, 100, 10000, 1000))
    cluster.add_node("h1", Resources(16, 65536, 100, 10000, 300))
    policy(name="db", qos_class=pb.QOS_CLASS_GUARANTEED, disk_iops_reservation=400)

    def db(name: str) -> pb.Vm:
        return cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(
            name=name, qos_policy="db", resources=pb.Resources(vcpus=1, memory_mib=128))), timeout=10).vm

    for name in ("db-1", "db-2"):
        vm = db(name)
        # Only h0 sustains 400 IOPS; a guaranteed VM is capped at what it reserved.
        assert (vm.placement.node, vm.placement.reserved.disk_iops, vm.placement.disk_iops_limit) == ("h0", 400, 400)
    node = cluster.client.nodes.GetNode(node_pb.GetNodeRequest(name="h0")).node
    assert (node.capacity.disk_iops, node.guaranteed.disk_iops) == (1000, 800)
    with pytest.raises(grpc.RpcError) as e:
        db("db-3")
    assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    rej = pb.PlacementRejection()
    assert any(d.Unpack(rej) for d in details(e.value))
    assert {(d.dimension, d.requested, d.largest_free) for d in rej.dimensions} == {("disk_iops", 400, 300)}
    # A live migration checks the destination's IOPS with the same fit, and the same answer a
    # create pinned there gets: h1 (300 IOPS in all) can never hold 400.
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm="db-1", target_node="h1"), timeout=10)
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION and "disk_iops" in e.value.details()
    cluster.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="db-2"), timeout=10)
    assert db("db-3").placement.node == "h0"


def snap_state(c: Cluster, name: str) -> vol_pb.Snapshot:
    return c.client.volumes.GetSnapshot(vol_pb.GetSnapshotRequest(name=name)).snapshot


def take(c: Cluster, name: str, volume: str) -> vol_pb.Snapshot:
    return c.client.volumes.CreateSnapshot(vol_pb.CreateSnapshotRequest(
        snapshot=vol_pb.Snapshot(name=name, volume=volume))).snapshot


def test_snapshots_are_accounted_outlive_their_volume_and_restore(cluster: Cluster) -> None:
    cluster.add_node("h1", HOST)
    cluster.add_node("h2", HOST)
    create(cluster, vol("data", 30, host="h1", image="pattern"))
    wait_until(lambda: state(cluster, "data") == vol_pb.VOLUME_STATE_AVAILABLE)
    s = take(cluster, "data-monday", "data")
    assert (s.volume, s.host, s.size_gib, s.image, s.state) == ("data", "h1", 30, "pattern", vol_pb.VOLUME_STATE_CREATING)
    done = wait_until(lambda: (x := snap_state(cluster, "data-monday")).state == vol_pb.VOLUME_STATE_AVAILABLE and x)
    assert isinstance(done, vol_pb.Snapshot) and not done.live and done.path  # no guest had it open
    assert get_vol(cluster, "data").snapshotting == ""
    # Its space counts on its host like a volume's.
    assert ("snapshot/data-monday", "") in entries(cluster, "h1")
    assert cluster.client.nodes.GetNode(node_pb.GetNodeRequest(name="h1")).node.committed.disk_gib == 60
    # A running guest's volume is copied live (the driver's backup job).
    cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=vm("db", ["data"])))
    wait_until(lambda: sim_disks(cluster, "h1", "db") == (get_vol(cluster, "data").path,))
    take(cluster, "data-tuesday", "data")
    assert wait_until(lambda: snap_state(cluster, "data-tuesday").live)
    # The volume goes with its VM; its snapshots stay, and a new volume starts from one.
    cluster.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="db"))
    assert [x.name for x in cluster.client.volumes.ListSnapshots(vol_pb.ListSnapshotsRequest(volume="data")).snapshots
            ] == ["data-monday", "data-tuesday"]
    r = create(cluster, vol_pb.Volume(name="restored", snapshot="data-monday"))
    assert (r.pool, r.host, r.size_gib, r.image, r.snapshot) == (vol_pb.POOL_KIND_LOCAL, "h1", 30, "pattern",
                                                               "data-monday")
    wait_until(lambda: state(cluster, "restored") == vol_pb.VOLUME_STATE_AVAILABLE)
    cluster.client.volumes.DeleteSnapshot(vol_pb.DeleteSnapshotRequest(name="data-tuesday"))
    assert ("snapshot/data-tuesday", "") not in entries(cluster, "h1")
    storage = cluster.agents["h1"].storage
    assert storage is not None
    wait_until(lambda: set(storage.pools.snapshot_files(PoolKind.LOCAL)) == {"data-monday"}, timeout=15)


class SlowPools(SimPools):
    """Sim pools whose offline snapshot copies last until the test lets them finish."""

    def __init__(self, host: str, capacity_gib: int) -> None:
        super().__init__(host, capacity_gib)
        self.release = threading.Event()

    def snapshot(self, vol: Volume, snap: Snapshot) -> str:
        self.release.wait(20)
        return super().snapshot(vol, snap)


def test_a_long_snapshot_copy_holds_up_nothing_else_on_its_host(cluster: Cluster) -> None:
    pools = SlowPools("h1", HOST.disk_gib)
    cluster.add_node("h1", HOST, pools=pools)
    create(cluster, vol("data", 10, host="h1"))
    wait_until(lambda: state(cluster, "data") == vol_pb.VOLUME_STATE_AVAILABLE)
    take(cluster, "slow", "data")
    # While it copies, the host makes another volume and starts a VM.
    create(cluster, vol("other", 5, host="h1"))
    wait_until(lambda: state(cluster, "other") == vol_pb.VOLUME_STATE_AVAILABLE)
    cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=vm("app", [])))
    wait_until(lambda: cluster.client.vms.GetVm(vm_pb.GetVmRequest(name="app")).vm.status.phase
               == pb.VM_PHASE_RUNNING)
    assert snap_state(cluster, "slow").state == vol_pb.VOLUME_STATE_CREATING
    pools.release.set()
    wait_until(lambda: snap_state(cluster, "slow").state == vol_pb.VOLUME_STATE_AVAILABLE)


def test_a_snapshot_in_progress_holds_its_volume_still(cluster: Cluster) -> None:
    cluster.add_node("h1", HOST)
    cluster.add_node("h2", HOST)
    create(cluster, vol("data", 10, host="h1"))
    wait_until(lambda: state(cluster, "data") == vol_pb.VOLUME_STATE_AVAILABLE)
    cluster.agents["h1"].stop()  # nobody takes it: it stays in progress
    take(cluster, "slow", "data")
    assert get_vol(cluster, "data").snapshotting == "slow"
    for call in (lambda: cluster.client.volumes.ResizeVolume(vol_pb.ResizeVolumeRequest(name="data", size_gib=20)),
                 lambda: cluster.client.volumes.DeleteVolume(vol_pb.DeleteVolumeRequest(name="data")),
                 lambda: take(cluster, "another", "data"),
                 lambda: cluster.client.volumes.DeleteSnapshot(vol_pb.DeleteSnapshotRequest(name="slow"))):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
    assert get_vol(cluster, "data").size_gib == 10
    assert [x.name for x in cluster.client.volumes.ListSnapshots(vol_pb.ListSnapshotsRequest()).snapshots] == ["slow"]


def test_bad_snapshot_requests_change_nothing(cluster: Cluster) -> None:
    cluster.add_node("h1", HOST)
    cluster.add_node("h2", HOST)
    create(cluster, vol("big", 60, host="h1"))
    wait_until(lambda: state(cluster, "big") == vol_pb.VOLUME_STATE_AVAILABLE)

    def refused(call: object, code: grpc.StatusCode, field: str = "") -> None:
        with pytest.raises(grpc.RpcError) as e:
            call()  # type: ignore[operator]
        assert e.value.code() is code, e.value.details()
        if field:
            assert any(field in str(d) for d in details(e.value)), details(e.value)

    refused(lambda: take(cluster, "Bad_Name", "big"), grpc.StatusCode.INVALID_ARGUMENT, "snapshot.name")
    refused(lambda: take(cluster, "s", ""), grpc.StatusCode.INVALID_ARGUMENT, "snapshot.volume")
    refused(lambda: take(cluster, "s", "nope"), grpc.StatusCode.NOT_FOUND)
    refused(lambda: take(cluster, "s", "big"), grpc.StatusCode.RESOURCE_EXHAUSTED)  # 60 + 60 > 100 GiB
    assert not cluster.client.volumes.ListSnapshots(vol_pb.ListSnapshotsRequest()).snapshots
    assert get_vol(cluster, "big").snapshotting == ""
    cluster.client.volumes.ResizeVolume(vol_pb.ResizeVolumeRequest(name="big", size_gib=70))  # still free to change
    refused(lambda: cluster.client.volumes.ResizeVolume(vol_pb.ResizeVolumeRequest(name="big", size_gib=10)),
            grpc.StatusCode.FAILED_PRECONDITION)
    create(cluster, vol("small", 5, host="h1"))
    wait_until(lambda: state(cluster, "small") == vol_pb.VOLUME_STATE_AVAILABLE)
    take(cluster, "s", "small")
    wait_until(lambda: snap_state(cluster, "s").state == vol_pb.VOLUME_STATE_AVAILABLE)
    refused(lambda: take(cluster, "s", "small"), grpc.StatusCode.ALREADY_EXISTS)
    refused(lambda: create(cluster, vol_pb.Volume(name="r", snapshot="s", size_gib=2)),
            grpc.StatusCode.INVALID_ARGUMENT, "volume.size_gib")
    refused(lambda: create(cluster, vol_pb.Volume(name="r", snapshot="s", image="pattern")),
            grpc.StatusCode.INVALID_ARGUMENT, "volume.image")
    refused(lambda: create(cluster, vol_pb.Volume(name="r", snapshot="s", host="h2")),
            grpc.StatusCode.FAILED_PRECONDITION)
    refused(lambda: create(cluster, vol_pb.Volume(name="r", snapshot="s", pool=vol_pb.POOL_KIND_SHARED)),
            grpc.StatusCode.FAILED_PRECONDITION)
    refused(lambda: create(cluster, vol_pb.Volume(name="r", snapshot="gone")), grpc.StatusCode.NOT_FOUND)
    assert sorted(v.name for v in cluster.client.volumes.ListVolumes(vol_pb.ListVolumesRequest()).volumes) == [
        "big", "small"]


def test_node_admission_counts_the_space_local_volumes_hold(cluster: Cluster) -> None:
    """An assignment the scheduler's commit would never have made (a rogue or outdated writer):
    the agent's own fit check counts the host's volumes too, and refuses it."""
    from vdcos.model import Assignment, DEFAULT_POLICY, VmSpec, dumps
    from vdcos.model.qos import reservation, resolve

    cluster.add_node("h1", HOST)
    create(cluster, vol("big", 70, host="h1"))
    wait_until(lambda: state(cluster, "big") == vol_pb.VOLUME_STATE_AVAILABLE)
    spec = VmSpec("rogue", Resources(1, 128, 50))
    cluster.store.put(keys.vm_spec("rogue"), dumps(spec))
    cluster.store.put(keys.assign("h1", "rogue"), dumps(Assignment(
        spec, resolve(spec, DEFAULT_POLICY), reservation(spec, DEFAULT_POLICY))))
    wait_until(lambda: cluster.store.get(keys.vm_status("h1", "rogue")) is not None)
    status = json.loads(cluster.store.get(keys.vm_status("h1", "rogue")).value)  # type: ignore[union-attr]
    assert status["phase"] == "failed" and "refused by node admission: disk_gib" in status["message"]
    assert not cluster.agents["h1"].driver.list_domains()
