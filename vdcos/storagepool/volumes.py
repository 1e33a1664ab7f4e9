"""Volume records in etcd: create (blank, from an image or from a snapshot), attach, resize, delete. No disk I/O here: the agent
of the volume's host makes and removes the files (pool.py), from these records.

A local volume's space is an entry in its host's allocation record (`volume/<name>`), written in
the same transaction as the volume and compared on that record's revision like every placement,
so volumes and VMs never over-fill a host's disk together. A shared volume is checked against
the shared pool's free space as its hosts report it.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

from vdcos.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from vdcos.model import (AllocEntry, Allocation, Assignment, NodeSpec, PlacementRecord, PoolKind, PoolStatus,
                         QosClass, Resources, SchedulerConfig, Snapshot, VmSpec, Volume, VolumeState, decode, dumps,
                         volume_consumer)
from vdcos.model.fit import Insufficient, fits
from vdcos.state import keys
from vdcos.state.store import KV, Compare, Delete, Op, Put, Store
from vdcos.storagepool import images

ATTEMPTS = 20
MAX_SIZE_GIB = 16384


def get(store: Store, name: str) -> Volume:
    kv = store.get(keys.volume(name))
    if kv is None:
        raise NotFound(f"volume {name!r} not found")
    return decode(Volume, json.loads(kv.value))


def list_volumes(store: Store, vm: str = "", host: str = "") -> list[Volume]:
    return [v for v, _ in records(store, vm, host)]


def records(store: Store, vm: str = "", host: str = "") -> list[tuple[Volume, KV]]:
    """The volumes with their etcd records, for transactions that compare their revisions."""
    kvs, _ = store.get_prefix(keys.VOLUMES)
    vols = ((decode(Volume, json.loads(kv.value)), kv) for kv in kvs)
    return sorted(((v, kv) for v, kv in vols if (not vm or v.vm == vm) and (not host or v.host == host)),
                  key=lambda p: p[0].name)


def pools(store: Store) -> list[PoolStatus]:
    kvs, _ = store.get_prefix(keys.POOLS)
    return [decode(PoolStatus, json.loads(kv.value)) for kv in kvs]


def shared_available_gib(store: Store) -> float:
    """Free space in the shared pool, minus what recorded but not yet written volumes will take."""
    reports = [p for p in pools(store) if p.pool is PoolKind.SHARED]
    if not reports:
        return 0.0
    pending = sum(v.size_gib for v in list_volumes(store) if v.pool is PoolKind.SHARED
                  and v.state is VolumeState.CREATING)
    return min(p.available_gib for p in reports) - pending


def check_size(size_gib: int, field: str = "volume.size_gib") -> None:
    if not 1 <= size_gib <= MAX_SIZE_GIB:
        why = f"must be between 1 and {MAX_SIZE_GIB} GiB, got {size_gib}"
        raise InvalidArgument(f"{field} {why}", details=[(field, why)])


def create(store: Store, name: str, pool: PoolKind, size_gib: int, host: str, image: str = "",
           snapshot: Snapshot | None = None) -> Volume:
    """Record the volume on `host` (the caller picked it) and account its space there. From a
    snapshot (restore_source() checked it): the snapshot must still be there when this commits."""
    check_size(size_gib)
    if image and image not in images.CATALOG:
        why = f"unknown image {image!r}; known: {', '.join(sorted(images.CATALOG))}"
        raise InvalidArgument(f"volume.image: {why}", details=[("volume.image", why)])
    if image and size_gib * 1024 < images.CATALOG[image].size_mib:
        why = f"image {image} needs at least {images.CATALOG[image].size_mib} MiB"
        raise InvalidArgument(f"volume.size_gib: {why}", details=[("volume.size_gib", why)])
    for _ in range(ATTEMPTS):
        if store.get(keys.volume(name)) is not None:
            raise AlreadyExists(f"volume {name!r} already exists")
        node_kv = store.get(keys.node_spec(host))
        if node_kv is None:
            raise NotFound(f"node {host!r} not found")
        vol = Volume(name, pool, size_gib, host, image, created_at=time.time(),
                     snapshot=snapshot.name if snapshot else "")
        compares = [Compare(keys.volume(name), "create", "==", 0)]
        if snapshot is not None:
            compares.append(Compare(keys.snapshot(snapshot.name), "create", "!=", 0))
        ops: list[Op] = [Put(keys.volume(name), dumps(vol))]
        held = reserve(store, pool, host, volume_consumer(name), size_gib, size_gib,
                       f"volume {name} needs {size_gib} GiB")
        if store.txn(compares + held[0], ops + held[1]).succeeded:
            return vol
    raise ResourceExhausted(f"volume {name}: too many concurrent changes on {host}; try again")


def restore_source(store: Store, name: str, size_gib: int) -> Snapshot:
    """The snapshot a new volume starts from: available, and no bigger than the volume (0 = as
    big as the snapshot)."""
    kv = store.get(keys.snapshot(name))
    if kv is None:
        raise NotFound(f"snapshot {name!r} not found")
    snap = decode(Snapshot, json.loads(kv.value))
    if snap.state is not VolumeState.AVAILABLE:
        raise FailedPrecondition(f"snapshot {name} is {snap.state.value}" + (f": {snap.message}" if snap.message else ""))
    if 0 < size_gib < snap.size_gib:
        why = f"snapshot {name} holds {snap.size_gib} GiB; a volume restored from it needs at least that"
        raise InvalidArgument(f"volume.size_gib: {why}", details=[("volume.size_gib", why)])
    return snap


def update(store: Store, name: str, change: Callable[[Volume], Volume | None]) -> Volume:
    """Compare-and-swap on one volume record; `change` returns None to leave it alone."""
    for _ in range(ATTEMPTS):
        kv = store.get(keys.volume(name))
        if kv is None:
            raise NotFound(f"volume {name!r} not found")
        vol = decode(Volume, json.loads(kv.value))
        new = change(vol)
        if new is None:
            return vol
        if store.txn([Compare(keys.volume(name), "mod", "==", kv.mod_revision)],
                     [Put(keys.volume(name), dumps(new))]).succeeded:
            return new
    raise ResourceExhausted(f"volume {name}: too many concurrent updates; try again")


def delete(store: Store, name: str, *, detach_first: bool = False) -> None:
    """Remove the record and give back its space; the host's agent then removes the file."""
    for _ in range(ATTEMPTS):
        kv = store.get(keys.volume(name))
        if kv is None:
            raise NotFound(f"volume {name!r} not found")
        vol = decode(Volume, json.loads(kv.value))
        if vol.vm and not detach_first:
            raise FailedPrecondition(f"volume {name} is attached to VM {vol.vm}; detach it or delete the VM")
        if vol.snapshotting and not detach_first:
            raise FailedPrecondition(f"volume {name} is being snapshotted ({vol.snapshotting}); delete it when "
                                     "the snapshot is taken")
        compares = [Compare(keys.volume(name), "mod", "==", kv.mod_revision)]
        ops: list[Op] = [Delete(keys.volume(name))]
        # A volume deleted while its VM migrates also gives back the space of its copy.
        for host in (vol.host, vol.moving_to) if vol.pool is PoolKind.LOCAL else ():
            if host:
                freed = release(store, host, volume_consumer(name))
                compares += freed[0]
                ops += freed[1]
        if store.txn(compares, ops).succeeded:
            return
    raise ResourceExhausted(f"volume {name}: too many concurrent changes; try again")


def attach_all(store: Store, vm: str, names: tuple[str, ...]) -> list[Volume]:
    """Claim free volumes for a VM being created, all or none. Returns them in the VM's order."""
    if not names:
        return []
    for _ in range(ATTEMPTS):
        kvs = [store.get(keys.volume(n)) for n in names]
        missing = [n for n, kv in zip(names, kvs) if kv is None]
        if missing:
            why = f"volume {missing[0]!r} not found"
            raise InvalidArgument(f"spec.volumes: {why}", details=[("spec.volumes", why)])
        vols = [decode(Volume, json.loads(kv.value)) for kv in kvs if kv is not None]
        for v in vols:
            if v.vm and v.vm != vm:
                raise FailedPrecondition(f"volume {v.name} is attached to VM {v.vm}")
            if v.state is VolumeState.FAILED:
                raise FailedPrecondition(f"volume {v.name} failed: {v.message}")
        local_hosts = sorted({v.host for v in vols if v.ties_to_host})
        if len(local_hosts) > 1:
            raise FailedPrecondition(f"VM {vm}'s local volumes live on different hosts ({', '.join(local_hosts)}); "
                                     "one VM runs on one host")
        compares = [Compare(keys.volume(v.name), "mod", "==", kv.mod_revision)
                    for v, kv in zip(vols, kvs) if kv is not None]
        attached = [replace(v, vm=vm) for v in vols]
        if store.txn(compares, [Put(keys.volume(v.name), dumps(v)) for v in attached]).succeeded:
            return attached
    raise ResourceExhausted(f"volumes of {vm}: too many concurrent changes; try again")


MAX_DISKS = 16


def resize(store: Store, name: str, size_gib: int) -> Volume:
    """Grow a volume: its new space accounted like a new volume's, in the same transaction. The
    file grows on the host that has it open (the VM's, live) or, if none, the volume's host."""
    check_size(size_gib, "size_gib")
    for _ in range(ATTEMPTS):
        kv = store.get(keys.volume(name))
        if kv is None:
            raise NotFound(f"volume {name!r} not found")
        vol = decode(Volume, json.loads(kv.value))
        if size_gib < vol.size_gib:
            raise FailedPrecondition(f"volume {name} has {vol.size_gib} GiB; shrinking would cut off what the "
                                     "guest wrote there, so volumes only grow")
        if size_gib == vol.size_gib:
            return vol
        if vol.state is not VolumeState.AVAILABLE or vol.migration or vol.snapshotting:
            doing = "moving" if vol.migration else "being snapshotted" if vol.snapshotting else vol.state.value
            raise FailedPrecondition(f"volume {name} is {doing}; resize it when it is available")
        extra = size_gib - vol.size_gib
        compares = [Compare(keys.volume(name), "mod", "==", kv.mod_revision)]
        new = replace(vol, size_gib=size_gib)
        ops: list[Op] = [Put(keys.volume(name), dumps(new))]
        held = reserve(store, vol.pool, vol.host, volume_consumer(name), size_gib, extra,
                       f"volume {name} needs {extra} GiB more")
        if store.txn(compares + held[0], ops + held[1]).succeeded:
            return new
    raise ResourceExhausted(f"volume {name}: too many concurrent changes; try again")


def reserve(store: Store, pool: PoolKind, host: str, consumer: str, size_gib: int, needed_gib: int,
            what: str) -> tuple[list[Compare], list[Op]]:
    """Account `needed_gib` more GiB for a volume or snapshot, or refuse with `what` (the words
    after "N GiB free, "). Local: `consumer`'s entry on `host` becomes `size_gib`, written in the
    caller's transaction and compared on the record's revision. Shared: checked against the
    free space the hosts report; nothing to write."""
    if pool is PoolKind.SHARED:
        free = shared_available_gib(store)
        if free < needed_gib:
            raise ResourceExhausted(f"the shared pool has {free:.1f} GiB free, {what}")
        return [], []
    alloc_kv, alloc, short = local_room(store, host, needed_gib)
    if short:
        raise ResourceExhausted(f"{host}'s local pool has {short[0].free} GiB free, {what}")
    entry = AllocEntry(consumer, QosClass.GUARANTEED, Resources(disk_gib=size_gib))
    return ([Compare(keys.alloc(host), "mod", "==", alloc_kv.mod_revision if alloc_kv else 0)],
            [Put(keys.alloc(host), dumps(alloc.with_entry(entry)))])


def release(store: Store, host: str, consumer: str) -> tuple[list[Compare], list[Op]]:
    """Give back `consumer`'s space on `host`, in the caller's transaction."""
    alloc_kv = store.get(keys.alloc(host))
    if alloc_kv is None:
        return [], []
    alloc = decode(Allocation, json.loads(alloc_kv.value))
    return ([Compare(keys.alloc(host), "mod", "==", alloc_kv.mod_revision)],
            [Put(keys.alloc(host), dumps(alloc.without(consumer)))])


def local_room(store: Store, host: str, gib: int) -> tuple[KV | None, Allocation, list[Insufficient]]:
    """The host's allocation record, and what falls short if `gib` more go there (empty when
    they fit): the same fit function as every placement."""
    alloc_kv = store.get(keys.alloc(host))
    alloc = decode(Allocation, json.loads(alloc_kv.value)) if alloc_kv else Allocation(host)
    node_kv = store.get(keys.node_spec(host))
    if node_kv is None:
        raise NotFound(f"node {host!r} not found")
    config_kv = store.get(keys.CONFIG)
    config = decode(SchedulerConfig, json.loads(config_kv.value)) if config_kv else SchedulerConfig()
    capacity = decode(NodeSpec, json.loads(node_kv.value)).capacity
    short = fits(capacity, config.overcommit, alloc, Resources(disk_gib=gib), QosClass.GUARANTEED)
    return alloc_kv, alloc, short


def attach(store: Store, name: str, vm: str) -> Volume:
    """Attach a free volume to a placed VM: the volume, the VM's spec and its host's assignment
    change in one transaction; that host's agent then hot-plugs the disk into the guest."""
    return _change_attachment(store, name, vm, attach=True)


def detach_one(store: Store, name: str) -> Volume:
    """Take a volume from its VM (the agent unplugs it from the guest); the volume stays."""
    return _change_attachment(store, name, "", attach=False)


def _change_attachment(store: Store, name: str, vm: str, *, attach: bool) -> Volume:
    for _ in range(ATTEMPTS):
        vol_kv = store.get(keys.volume(name))
        if vol_kv is None:
            raise NotFound(f"volume {name!r} not found")
        vol = decode(Volume, json.loads(vol_kv.value))
        if attach and vol.vm:
            raise FailedPrecondition(f"volume {name} is attached to VM {vol.vm}" + (
                "" if vol.vm == vm else "; detach it first"))
        if not attach and not vol.vm:
            raise FailedPrecondition(f"volume {name} is not attached to any VM")
        if vol.state is not VolumeState.AVAILABLE:
            raise FailedPrecondition(f"volume {name} is {vol.state.value}" + (f": {vol.message}" if vol.message else ""))
        if vol.snapshotting:
            raise FailedPrecondition(f"volume {name} is being snapshotted ({vol.snapshotting}); try when it is taken")
        vm = vm or vol.vm
        spec_kv, place_kv = store.get(keys.vm_spec(vm)), store.get(keys.vm_placement(vm))
        if spec_kv is None or place_kv is None:
            raise NotFound(f"VM {vm!r} not found or not placed yet")
        spec = decode(VmSpec, json.loads(spec_kv.value))
        node = decode(PlacementRecord, json.loads(place_kv.value)).node
        if store.get(keys.vm_migration(vm)) is not None:
            raise FailedPrecondition(f"VM {vm} is migrating; change its volumes when it has arrived")
        if attach and vol.ties_to_host and vol.host != node:
            raise FailedPrecondition(f"volume {name} lives in {vol.host}'s local pool and VM {vm} runs on {node}; "
                                     "only a shared-pool volume attaches across hosts")
        if attach and len(spec.volumes) >= MAX_DISKS:
            raise FailedPrecondition(f"VM {vm} already has {MAX_DISKS} volumes, the most one VM takes")
        new_spec = replace(spec, volumes=(*spec.volumes, name) if attach else
                           tuple(v for v in spec.volumes if v != name))
        assign_kv = store.get(keys.assign(node, vm))
        compares = [Compare(keys.volume(name), "mod", "==", vol_kv.mod_revision),
                    Compare(keys.vm_spec(vm), "mod", "==", spec_kv.mod_revision),
                    Compare(keys.vm_placement(vm), "mod", "==", place_kv.mod_revision),
                    Compare(keys.vm_migration(vm), "create", "==", 0)]
        new_vol = replace(vol, vm=vm if attach else "")
        ops: list[Op] = [Put(keys.volume(name), dumps(new_vol)), Put(keys.vm_spec(vm), dumps(new_spec))]
        if assign_kv is not None:
            a = decode(Assignment, json.loads(assign_kv.value))
            compares.append(Compare(keys.assign(node, vm), "mod", "==", assign_kv.mod_revision))
            ops.append(Put(keys.assign(node, vm), dumps(replace(a, spec=new_spec))))
        if store.txn(compares, ops).succeeded:
            return new_vol
    raise ResourceExhausted(f"volume {name}: too many concurrent changes; try again")


def detach(store: Store, vm: str, vols: list[Volume]) -> None:
    """Free these volumes if they are still `vm`'s (a refused VM gives back what it claimed)."""
    for v in vols:
        update(store, v.name, lambda x: replace(x, vm="") if x.vm == vm else None)


def detach_all(store: Store, vm: str, delete_them: bool) -> None:
    """When a VM goes: its volumes are freed, or deleted with it."""
    vols = list_volumes(store, vm=vm)
    if not delete_them:
        detach(store, vm, vols)
        return
    for v in vols:
        try:
            delete(store, v.name, detach_first=True)
        except NotFound:
            pass


def pinned_host(vols: list[Volume]) -> str:
    """Where a VM with these volumes must run: the host of its local volumes, or anywhere."""
    return next((v.host for v in vols if v.ties_to_host), "")
