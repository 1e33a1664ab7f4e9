"""Snapshot records in etcd: take, finish, delete. No disk I/O here: the agent of the snapshot's
host makes the file (pool.py), from a running guest's disk or from the closed file.

Taking a snapshot marks its volume (`snapshotting`) in the same transaction, which every move,
resize, attach and detach of the volume compares, so none of them races the copy. A local
snapshot's space is an entry `snapshot/<name>` in its host's allocation record, like a volume's.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace

from vdcos.errors import AlreadyExists, FailedPrecondition, NotFound, ResourceExhausted
from vdcos.model import PlacementRecord, PoolKind, Snapshot, Volume, VolumeState, decode, dumps, snapshot_consumer
from vdcos.state import keys
from vdcos.state.store import Compare, Delete, Op, Put, Store
from vdcos.storagepool import volumes

ATTEMPTS = volumes.ATTEMPTS


def get(store: Store, name: str) -> Snapshot:
    kv = store.get(keys.snapshot(name))
    if kv is None:
        raise NotFound(f"snapshot {name!r} not found")
    return decode(Snapshot, json.loads(kv.value))


def list_snapshots(store: Store, volume: str = "", host: str = "") -> list[Snapshot]:
    kvs, _ = store.get_prefix(keys.SNAPSHOTS)
    snaps = (decode(Snapshot, json.loads(kv.value)) for kv in kvs)
    return sorted((s for s in snaps if (not volume or s.volume == volume) and (not host or s.host == host)),
                  key=lambda s: s.name)


def create(store: Store, name: str, volume: str) -> Snapshot:
    """Record the snapshot, its space and the volume's mark in one transaction; the agent of the
    host that has the volume's disk (its VM's, when attached) then makes the file."""
    for _ in range(ATTEMPTS):
        if store.get(keys.snapshot(name)) is not None:
            raise AlreadyExists(f"snapshot {name!r} already exists")
        vol_kv = store.get(keys.volume(volume))
        if vol_kv is None:
            raise NotFound(f"volume {volume!r} not found")
        vol = decode(Volume, json.loads(vol_kv.value))
        if vol.state is not VolumeState.AVAILABLE:
            raise FailedPrecondition(f"volume {volume} is {vol.state.value}; snapshot it once it is available")
        if vol.snapshotting:
            raise FailedPrecondition(f"volume {volume} is being snapshotted ({vol.snapshotting}); one at a time")
        if vol.migration:
            raise FailedPrecondition(f"volume {volume} moves with its VM ({vol.migration}); "
                                     "snapshot it when the VM has arrived")
        compares = [Compare(keys.snapshot(name), "create", "==", 0),
                    Compare(keys.volume(volume), "mod", "==", vol_kv.mod_revision)]
        host = vol.host
        if vol.vm:
            # The guest's disk is open in its QEMU: only that host can copy it consistently.
            place_kv = store.get(keys.vm_placement(vol.vm))
            if store.get(keys.vm_migration(vol.vm)) is not None:
                raise FailedPrecondition(f"VM {vol.vm} is migrating; snapshot its volumes when it has arrived")
            compares.append(Compare(keys.vm_migration(vol.vm), "create", "==", 0))
            if place_kv is not None and vol.pool is PoolKind.SHARED:
                host = decode(PlacementRecord, json.loads(place_kv.value)).node
        snap = Snapshot(name, volume, vol.pool, host, vol.size_gib, vol.image, created_at=time.time())
        ops: list[Op] = [Put(keys.snapshot(name), dumps(snap)),
                         Put(keys.volume(volume), dumps(replace(vol, snapshotting=name)))]
        held = volumes.reserve(store, vol.pool, host, snapshot_consumer(name), vol.size_gib, vol.size_gib,
                               f"snapshot {name} of volume {volume} needs {vol.size_gib} GiB")
        if store.txn(compares + held[0], ops + held[1]).succeeded:
            return snap
    raise ResourceExhausted(f"snapshot {name}: too many concurrent changes; try again")


def finish(store: Store, name: str, path: str = "", error: str = "", live: bool = False) -> None:
    """The agent made the file (or could not): the snapshot becomes available (or failed) and its
    volume is free to change again, in one transaction."""
    for _ in range(ATTEMPTS):
        kv = store.get(keys.snapshot(name))
        if kv is None:
            return
        snap = decode(Snapshot, json.loads(kv.value))
        if snap.state is not VolumeState.CREATING:
            return
        done = (replace(snap, state=VolumeState.FAILED, message=error[:300]) if error
                else replace(snap, state=VolumeState.AVAILABLE, path=path, live=live))
        compares = [Compare(keys.snapshot(name), "mod", "==", kv.mod_revision)]
        ops: list[Op] = [Put(keys.snapshot(name), dumps(done))]
        vol_kv = store.get(keys.volume(snap.volume))
        if vol_kv is not None:
            vol = decode(Volume, json.loads(vol_kv.value))
            if vol.snapshotting == name:
                compares.append(Compare(keys.volume(vol.name), "mod", "==", vol_kv.mod_revision))
                ops.append(Put(keys.volume(vol.name), dumps(replace(vol, snapshotting=""))))
        if store.txn(compares, ops).succeeded:
            return
    raise ResourceExhausted(f"snapshot {name}: too many concurrent changes")


def delete(store: Store, name: str) -> None:
    """Remove the record and give back its space; the host's agent then removes the file."""
    for _ in range(ATTEMPTS):
        kv = store.get(keys.snapshot(name))
        if kv is None:
            raise NotFound(f"snapshot {name!r} not found")
        snap = decode(Snapshot, json.loads(kv.value))
        if snap.state is VolumeState.CREATING:
            raise FailedPrecondition(f"snapshot {name} is being taken; delete it when it is available or failed")
        restoring = [v.name for v in volumes.list_volumes(store) if v.snapshot == name
                     and v.state is VolumeState.CREATING]
        if restoring:
            raise FailedPrecondition(f"volume {restoring[0]} is being restored from snapshot {name}")
        compares = [Compare(keys.snapshot(name), "mod", "==", kv.mod_revision)]
        ops: list[Op] = [Delete(keys.snapshot(name))]
        if snap.pool is PoolKind.LOCAL:
            freed = volumes.release(store, snap.host, snapshot_consumer(name))
            compares += freed[0]
            ops += freed[1]
        if store.txn(compares, ops).succeeded:
            return
    raise ResourceExhausted(f"snapshot {name}: too many concurrent changes; try again")

