"""Live-migration records and the three transactions that change them.

The model is OpenStack Placement's: starting a migration reserves the VM's resources on the
destination while the source entry stays, marked as held by the migration; nothing is ever
counted twice against one node, and capacity is never lost. Completing moves the VM (placement,
assignment, group membership) and frees the source; failing or cancelling frees the
destination and the VM keeps running where it was. Every transaction compares the revisions of
all the records it rewrites, so it is race-free against schedulers, agents and other migrations.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, replace
from typing import Callable, TypeVar

from vdcos.errors import Aborted, FailedPrecondition, NotFound, ResourceExhausted
from vdcos.model import (ActiveMigrations, AllocEntry, Allocation, Assignment, Migration, MigrationOptions,
                         MigrationPhase, MigrationProgress, NodeSpec, PlacementGroup, PlacementRecord, QosClass,
                         Resources, SchedulerConfig, VmPhase, VmSpec, VmStatus, VolumeState, decode, dumps,
                         volume_consumer)
from vdcos.model import qos
from vdcos.model.fit import fits
from vdcos.state import keys
from vdcos.storagepool import volumes
from vdcos.state.store import KV, Compare, Delete, Put, Store

RETRIES = 16
T = TypeVar("T")


def new_id() -> str:
    return "mig-" + uuid.uuid4().hex[:12]


def group_hold(vm: str, mid: str) -> str:
    """The group member that keeps a hard rule true on the destination during the move."""
    return f"{vm}>{mid}"


@dataclass
class _Txn:
    compares: list[Compare]
    ops: list[Put | Delete]

    def guard(self, key: str, kv: KV | None) -> None:
        self.compares.append(Compare(key, "mod", "==", kv.mod_revision) if kv
                             else Compare(key, "create", "==", 0))


def _decode(cls: type[T], kv: KV | None) -> T | None:
    return decode(cls, json.loads(kv.value)) if kv else None


def get(store: Store, mid: str) -> Migration:
    m = _decode(Migration, store.get(keys.migration(mid)))
    if m is None:
        raise NotFound(f"migration {mid!r} not found")
    return m


def list_all(store: Store) -> list[Migration]:
    kvs, _ = store.get_prefix(keys.MIGRATIONS)
    return sorted((decode(Migration, json.loads(kv.value)) for kv in kvs), key=lambda m: m.created_at)


def start(store: Store, vm: str, destination: str, options: MigrationOptions, mid: str = "") -> Migration:
    """Reserve the destination and record the migration, or say why not. The caller (the
    scheduler) chose the destination; this re-checks everything against the records it commits."""
    mid = mid or new_id()
    for _ in range(RETRIES):
        spec_kv = store.get(keys.vm_spec(vm))
        place_kv = store.get(keys.vm_placement(vm))
        if spec_kv is None or place_kv is None:
            raise NotFound(f"VM {vm!r} not found or not placed yet")
        spec = decode(VmSpec, json.loads(spec_kv.value))
        place = decode(PlacementRecord, json.loads(place_kv.value))
        source = place.node
        if destination == source:
            raise FailedPrecondition(f"VM {vm} already runs on {source}")
        mig_kv = store.get(keys.vm_migration(vm))
        if mig_kv is not None:
            raise FailedPrecondition(f"VM {vm} is already migrating ({mig_kv.value.decode()})")
        pairs = volumes.records(store, vm=vm)
        local, v_kvs = [v for v, _ in pairs if v.ties_to_host], {v.name: kv for v, kv in pairs}
        for v, _ in pairs:
            if v.snapshotting:
                raise FailedPrecondition(f"VM {vm}'s volume {v.name} is being snapshotted ({v.snapshotting}); "
                                         "migrate it when the snapshot is taken")
        for v in local:
            if v.state is not VolumeState.AVAILABLE or v.migration:
                raise FailedPrecondition(f"VM {vm}'s volume {v.name} is {v.state.value}"
                                         + (f" and moving ({v.migration})" if v.migration else ""))
        status = _decode(VmStatus, store.get(keys.vm_status(vm)))
        if status is None or status.phase is not VmPhase.RUNNING:
            raise FailedPrecondition(f"VM {vm} is not running (only a running VM live-migrates)")
        node_kv = store.get(keys.node_spec(destination))
        if node_kv is None:
            raise NotFound(f"node {destination!r} not found")
        dest_node = decode(NodeSpec, json.loads(node_kv.value))
        src_node = _decode(NodeSpec, store.get(keys.node_spec(source)))
        if src_node is not None and src_node.driver != dest_node.driver:
            raise FailedPrecondition(f"{source} runs {src_node.driver}, {destination} runs {dest_node.driver}")
        status_kv = store.get(keys.node_status(destination))
        if status_kv is None:
            raise ResourceExhausted(f"node {destination} is NotReady (its agent's lease expired)")
        if store.get(keys.node_cordon(destination)) is not None:
            raise ResourceExhausted(f"node {destination} is cordoned")
        config_kv = store.get(keys.CONFIG)
        config = _decode(SchedulerConfig, config_kv) or SchedulerConfig()
        active_kv = store.get(keys.ACTIVE_MIGRATIONS)
        active = _decode(ActiveMigrations, active_kv) or ActiveMigrations()
        if len(active.entries) >= config.max_migrations:
            raise ResourceExhausted(f"{len(active.entries)} migrations in flight, the cluster limit is "
                                f"{config.max_migrations}")
        for host in (source, destination):
            if active.count(host) >= config.max_migrations_per_host:
                raise ResourceExhausted(f"{host} already has {active.count(host)} migrations in flight "
                                    f"(limit {config.max_migrations_per_host} per host)")
        src_kv = store.get(keys.alloc(source))
        dst_kv = store.get(keys.alloc(destination))
        src = _decode(Allocation, src_kv) or Allocation(source)
        dst = _decode(Allocation, dst_kv) or Allocation(destination)
        entry = next((e for e in src.entries if e.vm == vm), None)
        if entry is None:
            raise FailedPrecondition(f"VM {vm} holds no allocation on {source}")
        # The same fit function as placement, commit validation and agent admission.
        short = fits(dest_node.capacity, config.overcommit, dst, qos.placed_request(spec, entry.reserved),
                     entry.qos_class)
        # Copy-storage: the destination's pool takes a copy of every local volume; its space is
        # accounted there now, like the VM's, so nothing can take it during the copy.
        copies = Resources(disk_gib=sum(v.size_gib for v in local))
        if not short and local:
            short = fits(dest_node.capacity, config.overcommit, dst.with_entry(entry), copies, QosClass.GUARANTEED)
        if short:
            why = ", ".join(f"{s.dimension} {s.pool}: requested {s.requested}, free {s.free}" for s in short)
            raise ResourceExhausted(f"{destination} cannot take {vm}"
                                    + (f" and its {copies.disk_gib} GiB of local volumes" if local else "")
                                    + f": {why}")
        txn = _Txn([], [])
        group_kv = None
        if spec.placement_group:
            group_kv = store.get(keys.group(spec.placement_group))
            group = _decode(PlacementGroup, group_kv)
            if group is not None:
                if not group.without(vm).admits(destination):
                    raise ResourceExhausted(f"{destination} would break the {group.policy.value} rule of "
                                        f"group {group.name}")
                txn.ops.append(Put(keys.group(group.name), dumps(group.with_member(group_hold(vm, mid), destination))))
            txn.guard(keys.group(spec.placement_group), group_kv)
        now = time.time()
        m = Migration(mid, vm, source, destination, MigrationPhase.PENDING, options, now, now)
        for key, kv in ((keys.vm_spec(vm), spec_kv), (keys.vm_placement(vm), place_kv), (keys.vm_migration(vm), None),
                        (keys.alloc(source), src_kv), (keys.alloc(destination), dst_kv),
                        (keys.ACTIVE_MIGRATIONS, active_kv), (keys.node_cordon(destination), None),
                        (keys.CONFIG, config_kv)):
            txn.guard(key, kv)
        for kv in v_kvs.values():  # a snapshot taken meanwhile changes its volume: no race with it
            txn.guard(kv.key, kv)
        txn.compares.append(Compare(keys.node_status(destination), "create", "==", status_kv.create_revision))
        for v in local:
            src_vol = next((e for e in src.entries if e.vm == volume_consumer(v.name)), None)
            if src_vol is not None:
                src = src.with_entry(replace(src_vol, held_by=mid))
            dst = dst.with_entry(AllocEntry(volume_consumer(v.name), QosClass.GUARANTEED, Resources(disk_gib=v.size_gib)))
            txn.ops.append(Put(keys.volume(v.name), dumps(replace(v, migration=mid, moving_to=destination,
                                                                  target_path="", message=""))))
        txn.ops += [
            Put(keys.alloc(source), dumps(src.with_entry(replace(entry, held_by=mid)))),
            Put(keys.alloc(destination), dumps(dst.with_entry(replace(entry, held_by="")))),
            Put(keys.ACTIVE_MIGRATIONS, dumps(active.with_(m))),
            Put(keys.vm_migration(vm), mid.encode()),
            Put(keys.migration(mid), dumps(m)),
        ]
        if store.txn(txn.compares, txn.ops).succeeded:
            return m
    raise Aborted(f"migration of {vm} lost {RETRIES} races in a row; try again")


def update(store: Store, mid: str, change: Callable[[Migration], Migration | None]) -> Migration | None:
    """Compare-and-swap on the record; `change` returns None to leave it alone."""
    for _ in range(RETRIES):
        kv = store.get(keys.migration(mid))
        if kv is None:
            return None
        m = decode(Migration, json.loads(kv.value))
        new = change(m)
        if new is None:
            return m
        new = replace(new, updated_at=time.time())
        if store.txn([Compare(keys.migration(mid), "mod", "==", kv.mod_revision)],
                     [Put(keys.migration(mid), dumps(new))]).succeeded:
            return new
    raise Aborted(f"migration {mid}: too many concurrent updates")


def finish(store: Store, mid: str, phase: MigrationPhase, message: str = "",
           downtime_ms: int = -1, total_ms: int = 0, progress: MigrationProgress | None = None,
           only_from: tuple[MigrationPhase, ...] = (MigrationPhase.PENDING, MigrationPhase.RUNNING)) -> Migration:
    """COMPLETED moves the VM to the destination; FAILED/CANCELLED leaves it on the source.
    Nothing happens unless the record is still in one of `only_from`."""
    assert phase.done
    for _ in range(RETRIES):
        m_kv = store.get(keys.migration(mid))
        if m_kv is None:
            raise NotFound(f"migration {mid!r} not found")
        m = decode(Migration, json.loads(m_kv.value))
        if m.phase not in only_from:
            return m
        vm = m.vm
        txn = _Txn([], [])
        reads: dict[str, KV | None] = {k: store.get(k) for k in (
            keys.alloc(m.source), keys.alloc(m.destination), keys.vm_placement(vm), keys.vm_spec(vm),
            keys.ACTIVE_MIGRATIONS, keys.assign(m.source, vm))}
        for k, kv in reads.items():
            txn.guard(k, kv)
        txn.guard(keys.migration(mid), m_kv)
        src = _decode(Allocation, reads[keys.alloc(m.source)]) or Allocation(m.source)
        dst = _decode(Allocation, reads[keys.alloc(m.destination)]) or Allocation(m.destination)
        active = _decode(ActiveMigrations, reads[keys.ACTIVE_MIGRATIONS]) or ActiveMigrations()
        spec = _decode(VmSpec, reads[keys.vm_spec(vm)])
        place = _decode(PlacementRecord, reads[keys.vm_placement(vm)])
        assignment = _decode(Assignment, reads[keys.assign(m.source, vm)])
        entry = next((e for e in src.entries if e.vm == vm), None)
        moving = [(v, kv) for v, kv in volumes.records(store) if v.migration == mid]
        for v, kv in moving:
            txn.guard(keys.volume(v.name), kv)
        group_kv = store.get(keys.group(spec.placement_group)) if spec and spec.placement_group else None
        group = _decode(PlacementGroup, group_kv)
        if group is not None:
            txn.guard(keys.group(group.name), group_kv)
            group = group.without(group_hold(vm, mid))
        now = time.time()
        completed = phase is MigrationPhase.COMPLETED and place is not None and assignment is not None
        if completed:
            assert place is not None and assignment is not None
            # The copies are the volumes now; the source agent removes the old files.
            for v, _ in moving:
                src = src.without(volume_consumer(v.name))
                txn.ops.append(Put(keys.volume(v.name), dumps(replace(
                    v, host=m.destination, path=v.target_path, migration="", moving_to="", target_path=""))))
            txn.ops += [
                Put(keys.alloc(m.source), dumps(src.without(vm))),
                Put(keys.vm_placement(vm), dumps(replace(place, node=m.destination, placed_at=now))),
                Delete(keys.assign(m.source, vm)),
                Put(keys.assign(m.destination, vm), dumps(assignment)),
                Put(keys.vm_status(vm), dumps(VmStatus(VmPhase.RUNNING, m.destination,
                                                       f"migrated from {m.source}", now))),
            ]
            if group is not None:
                group = group.with_member(vm, m.destination)
        else:
            if phase is MigrationPhase.COMPLETED:
                phase, message = MigrationPhase.FAILED, "the VM was deleted during its migration"
            # The destination's copies are given up: their space freed here, their files
            # removed by the destination's agent (no record owns them any more).
            for v, _ in moving:
                dst = dst.without(volume_consumer(v.name))
                held = next((e for e in src.entries if e.vm == volume_consumer(v.name)), None)
                if held is not None:
                    src = src.with_entry(replace(held, held_by=""))
                txn.ops.append(Put(keys.volume(v.name), dumps(replace(
                    v, migration="", moving_to="", target_path=""))))
            txn.ops.append(Put(keys.alloc(m.destination), dumps(dst.without(vm))))
            if entry is not None:
                src = src.with_entry(replace(entry, held_by=""))
            txn.ops.append(Put(keys.alloc(m.source), dumps(src)))
        if group is not None:
            txn.ops.append(Put(keys.group(group.name), dumps(group)))
        final = replace(m, phase=phase, message=message, updated_at=now, downtime_ms=downtime_ms,
                        total_ms=total_ms, progress=progress or m.progress)
        txn.ops += [Put(keys.ACTIVE_MIGRATIONS, dumps(active.without(mid))), Delete(keys.vm_migration(vm)),
                    Put(keys.migration(mid), dumps(final))]
        if store.txn(txn.compares, txn.ops).succeeded:
            return final
    raise Aborted(f"migration {mid}: could not record its outcome after {RETRIES} attempts")
