"""Snapshot records in etcd: take, finish, delete. No disk I/O here: the agent of the snapshot's
host makes the file (pool.py), from a running guest's disk or from the closed file.

Taking a snapshot marks its volume (`snapshotting`) in the same transaction, which every move,
resize, attach and detach of the volume compares, so none of them races the copy. A local
snapshot's space is an entry `snapshot/<name>` in its host's allocation record, like a volume's,
and is charged to its volume's project's quota (disk and snapshots) in the same transaction.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace

from vdcos.errors import AlreadyExists, FailedPrecondition, NotFound
from vdcos.model import PlacementRecord, PoolKind, Snapshot, Volume, VolumeState, decode, dumps, snapshot_consumer
from vdcos.model.project import snapshot_usage
from vdcos.projects import records as projects
from vdcos.state import keys
from vdcos.state.rmw import Reads, Write, read_modify_write
from vdcos.state.store import Delete, Op, Put, Store
from vdcos.storagepool import volumes


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
    def attempt(r: Reads) -> Write[Snapshot]:
        r.load(keys.snapshot(name), keys.volume(volume))
        if r.kv(keys.snapshot(name)) is not None:
            raise AlreadyExists(f"snapshot {name!r} already exists")
        vol = r.get(Volume, keys.volume(volume))
        if vol is None:
            raise NotFound(f"volume {volume!r} not found")
        if vol.state is not VolumeState.AVAILABLE:
            raise FailedPrecondition(f"volume {volume} is {vol.state.value}; snapshot it once it is available")
        if vol.snapshotting:
            raise FailedPrecondition(f"volume {volume} is being snapshotted ({vol.snapshotting}); one at a time")
        if vol.migration:
            raise FailedPrecondition(f"volume {volume} moves with its VM ({vol.migration}); "
                                     "snapshot it when the VM has arrived")
        if vol.open_on:
            raise FailedPrecondition(volumes.still_open(vol))
        host = vol.host
        if vol.vm:
            # The guest's disk is open in its QEMU: only that host can copy it consistently.
            r.load(keys.vm_placement(vol.vm), keys.vm_migration(vol.vm))
            if r.kv(keys.vm_migration(vol.vm)) is not None:
                raise FailedPrecondition(f"VM {vol.vm} is migrating; snapshot its volumes when it has arrived")
            place = r.get(PlacementRecord, keys.vm_placement(vol.vm))
            if place is not None and vol.pool is PoolKind.SHARED:
                host = place.node
        snap = Snapshot(name, volume, vol.pool, host, vol.size_gib, vol.image, created_at=time.time(),
                        project=vol.project)
        charged = projects.charge(r, vol.project, snapshot_usage(vol.size_gib))
        held = volumes.reserve(r, vol.pool, host, snapshot_consumer(name), vol.size_gib, vol.size_gib,
                               f"snapshot {name} of volume {volume} needs {vol.size_gib} GiB")
        return Write(snap, [Put(keys.snapshot(name), dumps(snap)),
                            Put(keys.volume(volume), dumps(replace(vol, snapshotting=name))), *held, *charged])
    return read_modify_write(store, attempt, f"snapshot {name}")


def finish(store: Store, name: str, path: str = "", error: str = "", live: bool = False) -> None:
    """The agent made the file (or could not): the snapshot becomes available (or failed) and its
    volume is free to change again, in one transaction."""
    def attempt(r: Reads) -> Write[None]:
        snap = r.get(Snapshot, keys.snapshot(name))
        if snap is None or snap.state is not VolumeState.CREATING:
            return Write(None)
        done = (replace(snap, state=VolumeState.FAILED, message=error[:300]) if error
                else replace(snap, state=VolumeState.AVAILABLE, path=path, live=live))
        ops: list[Op] = [Put(keys.snapshot(name), dumps(done))]
        vol = r.get(Volume, keys.volume(snap.volume))
        if vol is not None and vol.snapshotting == name:
            ops.append(Put(keys.volume(vol.name), dumps(replace(vol, snapshotting=""))))
        return Write(None, ops)
    read_modify_write(store, attempt, f"snapshot {name}")


def delete(store: Store, name: str) -> None:
    """Remove the record and give back its space; the host's agent then removes the file."""
    def attempt(r: Reads) -> Write[None]:
        snap = r.get(Snapshot, keys.snapshot(name))
        if snap is None:
            raise NotFound(f"snapshot {name!r} not found")
        if snap.state is VolumeState.CREATING:
            raise FailedPrecondition(f"snapshot {name} is being taken; delete it when it is available or failed")
        restoring = [v.name for v in volumes.list_volumes(store) if v.snapshot == name
                     and v.state is VolumeState.CREATING]
        if restoring:
            raise FailedPrecondition(f"volume {restoring[0]} is being restored from snapshot {name}")
        ops: list[Op] = [Delete(keys.snapshot(name)), *projects.charge(r, snap.project, -snapshot_usage(snap.size_gib))]
        if snap.pool is PoolKind.LOCAL:
            ops += volumes.release(r, snap.host, snapshot_consumer(name))
        return Write(None, ops)
    read_modify_write(store, attempt, f"snapshot {name}")

