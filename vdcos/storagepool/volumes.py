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
from vdcos.model import (Allocation, AllocEntry, Assignment, NodeSpec, PlacementRecord, PoolKind, PoolStatus,
                         QosClass, Resources, SchedulerConfig, Snapshot, VmSpec, Volume, VolumeState, decode, dumps,
                         volume_consumer)
from vdcos.model.fit import Insufficient, fits
from vdcos.model.project import volume_usage
from vdcos.projects import records as projects
from vdcos.state import keys
from vdcos.state.rmw import Reads, Write, read_modify_write
from vdcos.state.store import KV, Compare, Delete, Op, Put, Store
from vdcos.storagepool import images

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
           snapshot: Snapshot | None = None, project: str = "") -> Volume:
    """Record the volume on `host` (the caller picked it) and account its space there, and to
    its project's quota. From a snapshot (restore_source() checked it): the snapshot must still
    be there when this commits."""
    check_size(size_gib)
    if image and image not in images.CATALOG:
        why = f"unknown image {image!r}; known: {', '.join(sorted(images.CATALOG))}"
        raise InvalidArgument(f"volume.image: {why}", details=[("volume.image", why)])
    if image and size_gib * 1024 < images.CATALOG[image].size_mib:
        why = f"image {image} needs at least {images.CATALOG[image].size_mib} MiB"
        raise InvalidArgument(f"volume.size_gib: {why}", details=[("volume.size_gib", why)])

    def attempt(r: Reads) -> Write[Volume]:
        r.load(keys.volume(name), keys.node_spec(host), keys.alloc(host), keys.CONFIG)
        if r.kv(keys.volume(name)) is not None:
            raise AlreadyExists(f"volume {name!r} already exists")
        if r.kv(keys.node_spec(host)) is None:
            raise NotFound(f"node {host!r} not found")
        vol = Volume(name, pool, size_gib, host, image, created_at=time.time(),
                     snapshot=snapshot.name if snapshot else "", project=project)
        charged = projects.charge(r, project, volume_usage(size_gib))
        held = reserve(r, pool, host, volume_consumer(name), size_gib, size_gib, f"volume {name} needs {size_gib} GiB")
        return Write(vol, [Put(keys.volume(name), dumps(vol)), *held, *charged],
                     [Compare(keys.snapshot(snapshot.name), "create", "!=", 0)] if snapshot is not None else [])
    return read_modify_write(store, attempt, f"volume {name}")


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
    def attempt(r: Reads) -> Write[Volume]:
        vol = _volume(r, name)
        new = change(vol)
        return Write(vol) if new is None else Write(new, [Put(keys.volume(name), dumps(new))])
    return read_modify_write(store, attempt, f"volume {name}")


def _volume(r: Reads, name: str) -> Volume:
    vol = r.get(Volume, keys.volume(name))
    if vol is None:
        raise NotFound(f"volume {name!r} not found")
    return vol


def delete(store: Store, name: str, *, detach_first: bool = False) -> None:
    """Remove the record and give back its space; the host's agent then removes the file."""
    def attempt(r: Reads) -> Write[None]:
        vol = _volume(r, name)
        if vol.vm and not detach_first:
            raise FailedPrecondition(f"volume {name} is attached to VM {vol.vm}; detach it or delete the VM")
        if vol.snapshotting and not detach_first:
            raise FailedPrecondition(f"volume {name} is being snapshotted ({vol.snapshotting}); delete it when "
                                     "the snapshot is taken")
        ops: list[Op] = [Delete(keys.volume(name)), *projects.charge(r, vol.project, -volume_usage(vol.size_gib))]
        # A volume deleted while its VM migrates also gives back the space of its copy.
        for host in (vol.host, vol.moving_to) if vol.pool is PoolKind.LOCAL else ():
            if host:
                ops += release(r, host, volume_consumer(name))
        return Write(None, ops)
    read_modify_write(store, attempt, f"volume {name}")


def attach_all(store: Store, vm: str, names: tuple[str, ...], project: str = "") -> list[Volume]:
    """Claim free volumes of the VM's project for a VM being created, all or none (another
    project's is not found). Returns them in the VM's order."""
    if not names:
        return []

    def attempt(r: Reads) -> Write[list[Volume]]:
        r.load(*(keys.volume(n) for n in names))
        got = [r.get(Volume, keys.volume(n)) for n in names]
        got = [v if v is not None and v.project == project else None for v in got]
        missing = [n for n, v in zip(names, got) if v is None]
        if missing:
            why = f"volume {missing[0]!r} not found"
            raise InvalidArgument(f"spec.volumes: {why}", details=[("spec.volumes", why)])
        vols = [v for v in got if v is not None]
        for v in vols:
            if v.vm and v.vm != vm:
                raise FailedPrecondition(f"volume {v.name} is attached to VM {v.vm}")
            if v.state is VolumeState.FAILED:
                raise FailedPrecondition(f"volume {v.name} failed: {v.message}")
            if v.open_on:
                raise FailedPrecondition(still_open(v))
        local_hosts = sorted({v.host for v in vols if v.ties_to_host})
        if len(local_hosts) > 1:
            raise FailedPrecondition(f"VM {vm}'s local volumes live on different hosts ({', '.join(local_hosts)}); "
                                     "one VM runs on one host")
        attached = [replace(v, vm=vm) for v in vols]
        return Write(attached, [Put(keys.volume(v.name), dumps(v)) for v in attached])
    return read_modify_write(store, attempt, f"volumes of {vm}")


MAX_DISKS = 16


def resize(store: Store, name: str, size_gib: int) -> Volume:
    """Grow a volume: its new space accounted like a new volume's, in the same transaction. The
    file grows on the host that has it open (the VM's, live) or, if none, the volume's host."""
    check_size(size_gib, "size_gib")

    def attempt(r: Reads) -> Write[Volume]:
        vol = _volume(r, name)
        if size_gib < vol.size_gib:
            raise FailedPrecondition(f"volume {name} has {vol.size_gib} GiB; shrinking would cut off what the "
                                     "guest wrote there, so volumes only grow")
        if size_gib == vol.size_gib:
            return Write(vol)
        if vol.state is not VolumeState.AVAILABLE or vol.migration or vol.snapshotting:
            doing = "moving" if vol.migration else "being snapshotted" if vol.snapshotting else vol.state.value
            raise FailedPrecondition(f"volume {name} is {doing}; resize it when it is available")
        extra = size_gib - vol.size_gib
        new = replace(vol, size_gib=size_gib)
        charged = projects.charge(r, vol.project, volume_usage(extra, count=0))
        held = reserve(r, vol.pool, vol.host, volume_consumer(name), size_gib, extra,
                       f"volume {name} needs {extra} GiB more")
        return Write(new, [Put(keys.volume(name), dumps(new)), *held, *charged])
    return read_modify_write(store, attempt, f"volume {name}")


def reserve(r: Reads, pool: PoolKind, host: str, consumer: str, size_gib: int, needed_gib: int,
            what: str) -> list[Op]:
    """Account `needed_gib` more GiB for a volume or snapshot, or refuse with `what` (the words
    after "N GiB free, "). Local: `consumer`'s entry on `host` becomes `size_gib`, written in the
    caller's transaction, which compares the record read. Shared: checked against the free space
    the hosts report; nothing to write."""
    if pool is PoolKind.SHARED:
        free = shared_available_gib(r.store)
        if free < needed_gib:
            raise ResourceExhausted(f"the shared pool has {free:.1f} GiB free, {what}")
        return []
    alloc, short = local_room(r, host, needed_gib)
    if short:
        raise ResourceExhausted(f"{host}'s local pool has {short[0].free} GiB free, {what}")
    entry = AllocEntry(consumer, QosClass.GUARANTEED, Resources(disk_gib=size_gib))
    return [Put(keys.alloc(host), dumps(alloc.with_entry(entry)))]


def release(r: Reads, host: str, consumer: str) -> list[Op]:
    """Give back `consumer`'s space on `host`, in the caller's transaction."""
    alloc = r.get(Allocation, keys.alloc(host))
    return [] if alloc is None else [Put(keys.alloc(host), dumps(alloc.without(consumer)))]


def local_room(r: Reads, host: str, gib: int) -> tuple[Allocation, list[Insufficient]]:
    """The host's allocation record, and what falls short if `gib` more go there (empty when
    they fit): the same fit function as every placement."""
    r.load(keys.alloc(host), keys.node_spec(host), keys.CONFIG)
    alloc = r.get(Allocation, keys.alloc(host)) or Allocation(host)
    node = r.get(NodeSpec, keys.node_spec(host))
    if node is None:
        raise NotFound(f"node {host!r} not found")
    config = r.get(SchedulerConfig, keys.CONFIG) or SchedulerConfig()
    short = fits(node.capacity, config.overcommit, alloc, Resources(disk_gib=gib), QosClass.GUARANTEED)
    return alloc, short


def attach(store: Store, name: str, vm: str) -> Volume:
    """Attach a free volume to a placed VM: the volume, the VM's spec and its host's assignment
    change in one transaction; that host's agent then hot-plugs the disk into the guest."""
    return _change_attachment(store, name, vm, attach=True)


def detach_one(store: Store, name: str) -> Volume:
    """Take a volume from its VM (the agent unplugs it from the guest); the volume stays."""
    return _change_attachment(store, name, "", attach=False)


def _change_attachment(store: Store, name: str, vm: str, *, attach: bool) -> Volume:
    def attempt(r: Reads) -> Write[Volume]:
        vol = _volume(r, name)
        if attach and vol.vm:
            raise FailedPrecondition(f"volume {name} is attached to VM {vol.vm}" + (
                "" if vol.vm == vm else "; detach it first"))
        if not attach and not vol.vm:
            raise FailedPrecondition(f"volume {name} is not attached to any VM")
        if attach and vol.open_on:
            raise FailedPrecondition(still_open(vol))
        if vol.state is not VolumeState.AVAILABLE:
            raise FailedPrecondition(f"volume {name} is {vol.state.value}" + (f": {vol.message}" if vol.message else ""))
        if vol.snapshotting:
            raise FailedPrecondition(f"volume {name} is being snapshotted ({vol.snapshotting}); try when it is taken")
        owner = vm or vol.vm
        r.load(keys.vm_spec(owner), keys.vm_placement(owner), keys.vm_migration(owner))
        spec, place = r.get(VmSpec, keys.vm_spec(owner)), r.get(PlacementRecord, keys.vm_placement(owner))
        if spec is None or place is None:
            raise NotFound(f"VM {owner!r} not found or not placed yet")
        node = place.node
        if r.kv(keys.vm_migration(owner)) is not None:
            raise FailedPrecondition(f"VM {owner} is migrating; change its volumes when it has arrived")
        if attach and vol.ties_to_host and vol.host != node:
            raise FailedPrecondition(f"volume {name} lives in {vol.host}'s local pool and VM {owner} runs on {node}; "
                                     "only a shared-pool volume attaches across hosts")
        if attach and len(spec.volumes) >= MAX_DISKS:
            raise FailedPrecondition(f"VM {owner} already has {MAX_DISKS} volumes, the most one VM takes")
        new_spec = replace(spec, volumes=(*spec.volumes, name) if attach else
                           tuple(v for v in spec.volumes if v != name))
        new_vol = replace(vol, vm=owner) if attach else replace(vol, vm="", open_on=node)
        ops: list[Op] = [Put(keys.volume(name), dumps(new_vol)), Put(keys.vm_spec(owner), dumps(new_spec))]
        a = r.get(Assignment, keys.assign(node, owner))
        if a is not None:
            ops.append(Put(keys.assign(node, owner), dumps(replace(a, spec=new_spec))))
        return Write(new_vol, ops)
    return read_modify_write(store, attempt, f"volume {name}")


def detach(store: Store, vm: str, vols: list[Volume], open_on: str = "") -> None:
    """Free these volumes if they are still `vm`'s (a refused VM gives back what it claimed);
    `open_on` names the host whose guest may still have them open."""
    for v in vols:
        update(store, v.name, lambda x: replace(x, vm="", open_on=open_on) if x.vm == vm else None)


def detach_all(store: Store, vm: str, delete_them: bool, open_on: str = "") -> None:
    """When a VM goes (it ran on `open_on`): its volumes are freed, or deleted with it."""
    vols = list_volumes(store, vm=vm)
    if not delete_them:
        detach(store, vm, vols, open_on)
        return
    for v in vols:
        try:
            delete(store, v.name, detach_first=True)
        except NotFound:
            pass


def still_open(vol: Volume) -> str:
    return (f"volume {vol.name} is still open in the guest it left, on {vol.open_on}; it is free once that "
            "host's agent has closed it")


def let_go(store: Store, name: str, host: str) -> None:
    """`host`'s guests no longer have the volume's file open: it is free for another."""
    update(store, name, lambda x: replace(x, open_on="") if x.open_on == host else None)


def pinned_host(vols: list[Volume]) -> str:
    """Where a VM with these volumes must run: the host of its local volumes, or anywhere."""
    return next((v.host for v in vols if v.ties_to_host), "")
