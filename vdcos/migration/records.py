"""Live-migration records and the transactions that change them.

The model is OpenStack Placement's: starting a migration reserves the VM's resources on the
destination while the source entry stays, marked as held by the migration; nothing is ever
counted twice against one node, and capacity is never lost. Completing moves the VM (placement,
assignment, group membership) and frees the source; failing or cancelling frees the
destination and the VM keeps running where it was. The source agent only reports the outcome
on the migration's record (`report`); the control plane applies it (`finish`), so no agent
writes a placement. Every transaction compares the revisions of
all the records it rewrites, so it is race-free against schedulers, agents and other migrations.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from typing import Callable, TypeVar

from vdcos import logs
from vdcos.errors import FailedPrecondition, NotFound, ResourceExhausted
from vdcos.model import (ActiveMigrations, Allocation, AllocEntry, Assignment, Migration, MigrationOptions,
                         MigrationPhase, MigrationProgress, NodeSpec, PlacementGroup, PlacementRecord, PowerState, QosClass,
                         Resources, SchedulerConfig, VmPhase, VmSpec, VmStatus, VolumeState, decode, dumps, qos,
                         volume_consumer)
from vdcos.model.fit import fits
from vdcos.state import keys
from vdcos.state.rmw import Reads, Write, read_modify_write
from vdcos.state.store import KV, Compare, Delete, Put, Store
from vdcos.storagepool import volumes

RETRIES = 16
T = TypeVar("T")


def new_id() -> str:
    return "mig-" + uuid.uuid4().hex[:12]


def group_hold(vm: str, mid: str) -> str:
    """The group member that keeps a hard rule true on the destination during the move."""
    return f"{vm}>{mid}"


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

    def attempt(r: Reads) -> Write[Migration]:
        r.load(keys.vm_spec(vm), keys.vm_placement(vm), keys.vm_migration(vm), keys.CONFIG, keys.ACTIVE_MIGRATIONS)
        spec, place = r.get(VmSpec, keys.vm_spec(vm)), r.get(PlacementRecord, keys.vm_placement(vm))
        if spec is None or place is None:
            raise NotFound(f"VM {vm!r} not found or not placed yet")
        source = place.node
        if destination == source:
            raise FailedPrecondition(f"VM {vm} already runs on {source}")
        if spec.power.state is not PowerState.ON:
            raise FailedPrecondition(f"VM {vm} is {spec.power.state.value}: only a running VM live-migrates")
        mig_kv = r.kv(keys.vm_migration(vm))
        if mig_kv is not None:
            raise FailedPrecondition(f"VM {vm} is already migrating ({mig_kv.value.decode()})")
        pairs = volumes.records(store, vm=vm)
        local = [v for v, _ in pairs if v.ties_to_host]
        for _, kv in pairs:  # a snapshot taken meanwhile changes its volume: no race with it
            r.track(kv)
        for v, _ in pairs:
            if v.snapshotting:
                raise FailedPrecondition(f"VM {vm}'s volume {v.name} is being snapshotted ({v.snapshotting}); "
                                         "migrate it when the snapshot is taken")
        for v in local:
            if v.state is not VolumeState.AVAILABLE or v.migration:
                raise FailedPrecondition(f"VM {vm}'s volume {v.name} is {v.state.value}"
                                         + (f" and moving ({v.migration})" if v.migration else ""))
        # The VM's status and the nodes' specs and status change on their own (the agents write
        # them): read, not compared, but the destination's status must be the same lease's.
        status = _decode(VmStatus, r.peek(keys.vm_status(source, vm)))
        if status is None or status.phase is not VmPhase.RUNNING:
            raise FailedPrecondition(f"VM {vm} is not running (only a running VM live-migrates)")
        dest_node = _decode(NodeSpec, r.peek(keys.node_spec(destination)))
        if dest_node is None:
            raise NotFound(f"node {destination!r} not found")
        src_node = _decode(NodeSpec, r.peek(keys.node_spec(source)))
        if src_node is not None and src_node.driver != dest_node.driver:
            raise FailedPrecondition(f"{source} runs {src_node.driver}, {destination} runs {dest_node.driver}")
        status_kv = r.peek(keys.node_status(destination))
        if status_kv is None:
            raise ResourceExhausted(f"node {destination} is NotReady (its agent's lease expired)")
        r.load(keys.node_cordon(destination), keys.alloc(source), keys.alloc(destination))
        if r.kv(keys.node_cordon(destination)) is not None:
            raise ResourceExhausted(f"node {destination} is cordoned")
        config = r.get(SchedulerConfig, keys.CONFIG) or SchedulerConfig()
        active = r.get(ActiveMigrations, keys.ACTIVE_MIGRATIONS) or ActiveMigrations()
        if len(active.entries) >= config.max_migrations:
            raise ResourceExhausted(f"{len(active.entries)} migrations in flight, the cluster limit is "
                                f"{config.max_migrations}")
        for host in (source, destination):
            if active.count(host) >= config.max_migrations_per_host:
                raise ResourceExhausted(f"{host} already has {active.count(host)} migrations in flight "
                                    f"(limit {config.max_migrations_per_host} per host)")
        src = r.get(Allocation, keys.alloc(source)) or Allocation(source)
        dst = r.get(Allocation, keys.alloc(destination)) or Allocation(destination)
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
        ops: list[Put | Delete] = []
        if spec.placement_group:
            group = r.get(PlacementGroup, keys.group(spec.placement_group))
            if group is not None:
                if not group.without(vm).admits(destination):
                    raise ResourceExhausted(f"{destination} would break the {group.policy.value} rule of "
                                            f"group {group.name}")
                ops.append(Put(keys.group(group.name), dumps(group.with_member(group_hold(vm, mid), destination))))
        now = time.time()
        m = Migration(mid, vm, source, destination, MigrationPhase.PENDING, options, now, now, project=spec.project,
                      request_id=logs.REQUEST_ID.get())
        for v in local:
            src_vol = next((e for e in src.entries if e.vm == volume_consumer(v.name)), None)
            if src_vol is not None:
                src = src.with_entry(replace(src_vol, held_by=mid))
            dst = dst.with_entry(AllocEntry(volume_consumer(v.name), QosClass.GUARANTEED, Resources(disk_gib=v.size_gib)))
            ops.append(Put(keys.volume(v.name), dumps(replace(v, migration=mid, moving_to=destination,
                                                              target_path="", message=""))))
        ops += [
            Put(keys.alloc(source), dumps(src.with_entry(replace(entry, held_by=mid)))),
            Put(keys.alloc(destination), dumps(dst.with_entry(replace(entry, held_by="")))),
            Put(keys.ACTIVE_MIGRATIONS, dumps(active.with_(m))),
            Put(keys.vm_migration(vm), mid.encode()),
            Put(keys.migration(mid), dumps(m)),
        ]
        return Write(m, ops, [Compare(keys.node_status(destination), "create", "==", status_kv.create_revision)])
    return read_modify_write(store, attempt, f"migration of {vm}", attempts=RETRIES)


def update(store: Store, mid: str, change: Callable[[Migration], Migration | None]) -> Migration | None:
    """Compare-and-swap on the record; `change` returns None to leave it alone."""
    def attempt(r: Reads) -> Write[Migration | None]:
        m = r.get(Migration, keys.migration(mid))
        new = None if m is None else change(m)
        if new is None:
            return Write(m)
        new = replace(new, updated_at=time.time())
        return Write(new, [Put(keys.migration(mid), dumps(new))])
    return read_modify_write(store, attempt, f"migration {mid}", attempts=RETRIES)


def report(store: Store, mid: str, phase: MigrationPhase, message: str = "",
           downtime_ms: int = -1, total_ms: int = 0, progress: MigrationProgress | None = None,
           only_from: tuple[MigrationPhase, ...] = (MigrationPhase.PENDING, MigrationPhase.RUNNING)) -> Migration:
    """The source agent's word on how its migration ended, written to the migration's record
    alone (an agent writes no placement); the control plane's `finish` applies it. The first
    report stands."""
    assert phase.done

    def attempt(r: Reads) -> Write[Migration]:
        m = r.get(Migration, keys.migration(mid))
        if m is None:
            raise NotFound(f"migration {mid!r} not found")
        if m.phase not in only_from or m.reported:
            return Write(m)
        new = replace(m, reported=phase.value, message=message, downtime_ms=downtime_ms, total_ms=total_ms,
                      progress=progress or m.progress, updated_at=time.time())
        return Write(new, [Put(keys.migration(mid), dumps(new))])
    return read_modify_write(store, attempt, f"the outcome of migration {mid}", attempts=RETRIES)


def apply_reported(store: Store, m: Migration) -> Migration:
    """The control plane's half of `report`."""
    return finish(store, m.id, MigrationPhase(m.reported), m.message, m.downtime_ms, m.total_ms, m.progress)


def finish(store: Store, mid: str, phase: MigrationPhase, message: str = "",
           downtime_ms: int = -1, total_ms: int = 0, progress: MigrationProgress | None = None,
           only_from: tuple[MigrationPhase, ...] = (MigrationPhase.PENDING, MigrationPhase.RUNNING)) -> Migration:
    """COMPLETED moves the VM to the destination; FAILED/CANCELLED leaves it on the source.
    Nothing happens unless the record is still in one of `only_from`. The control plane's
    (API replicas, their controllers): it writes placements, assignments and allocations."""
    assert phase.done

    def attempt(r: Reads) -> Write[Migration]:
        outcome, why = phase, message
        m = r.get(Migration, keys.migration(mid))
        if m is None:
            raise NotFound(f"migration {mid!r} not found")
        if m.phase not in only_from:
            return Write(m)
        vm = m.vm
        ops: list[Put | Delete] = []
        r.load(keys.alloc(m.source), keys.alloc(m.destination), keys.vm_placement(vm), keys.vm_spec(vm),
               keys.ACTIVE_MIGRATIONS, keys.assign(m.source, vm))
        src = r.get(Allocation, keys.alloc(m.source)) or Allocation(m.source)
        dst = r.get(Allocation, keys.alloc(m.destination)) or Allocation(m.destination)
        active = r.get(ActiveMigrations, keys.ACTIVE_MIGRATIONS) or ActiveMigrations()
        spec = r.get(VmSpec, keys.vm_spec(vm))
        place = r.get(PlacementRecord, keys.vm_placement(vm))
        assignment = r.get(Assignment, keys.assign(m.source, vm))
        entry = next((e for e in src.entries if e.vm == vm), None)
        moving = [(v, kv) for v, kv in volumes.records(store) if v.migration == mid]
        for _, kv in moving:
            r.track(kv)
        group = r.get(PlacementGroup, keys.group(spec.placement_group)) if spec and spec.placement_group else None
        if group is not None:
            group = group.without(group_hold(vm, mid))
        now = time.time()
        completed = outcome is MigrationPhase.COMPLETED and place is not None and assignment is not None
        if completed:
            assert place is not None and assignment is not None
            # The copies are the volumes now; the source agent removes the old files.
            for v, _ in moving:
                src = src.without(volume_consumer(v.name))
                ops.append(Put(keys.volume(v.name), dumps(replace(
                    v, host=m.destination, path=v.target_path, migration="", moving_to="", target_path=""))))
            ops += [
                Put(keys.alloc(m.source), dumps(src.without(vm))),
                Put(keys.vm_placement(vm), dumps(replace(place, node=m.destination, placed_at=now))),
                Delete(keys.assign(m.source, vm)),
                Put(keys.assign(m.destination, vm), dumps(assignment)),
                Delete(keys.vm_status(m.source, vm)),
                Put(keys.vm_status(m.destination, vm), dumps(VmStatus(
                    VmPhase.RUNNING, m.destination, f"migrated from {m.source}", now,
                    reboots=assignment.spec.power.reboots))),
            ]
            if group is not None:
                group = group.with_member(vm, m.destination)
        else:
            if outcome is MigrationPhase.COMPLETED:
                outcome, why = MigrationPhase.FAILED, "the VM was deleted during its migration"
            # The destination's copies are given up: their space freed here, their files
            # removed by the destination's agent (no record owns them any more).
            for v, _ in moving:
                dst = dst.without(volume_consumer(v.name))
                held = next((e for e in src.entries if e.vm == volume_consumer(v.name)), None)
                if held is not None:
                    src = src.with_entry(replace(held, held_by=""))
                ops.append(Put(keys.volume(v.name), dumps(replace(
                    v, migration="", moving_to="", target_path=""))))
            ops.append(Put(keys.alloc(m.destination), dumps(dst.without(vm))))
            if entry is not None:
                src = src.with_entry(replace(entry, held_by=""))
            ops.append(Put(keys.alloc(m.source), dumps(src)))
        if group is not None:
            ops.append(Put(keys.group(group.name), dumps(group)))
        final = replace(m, phase=outcome, message=why, updated_at=now, downtime_ms=downtime_ms,
                        total_ms=total_ms, progress=progress or m.progress)
        ops += [Put(keys.ACTIVE_MIGRATIONS, dumps(active.without(mid))), Delete(keys.vm_migration(vm)),
                Put(keys.migration(mid), dumps(final))]
        return Write(final, ops)
    return read_modify_write(store, attempt, f"the outcome of migration {mid}", attempts=RETRIES)
