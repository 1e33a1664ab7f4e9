"""HA restarts through the normal placement path: a failed host's VMs decided as one batch by
the scheduling core (same filters, fit, affinity and QoS as a create, the failed host ruled
out), and committed as ONE etcd transaction that moves each placement, bumps its epoch (the
fencing token), moves its assignment and takes it off the failed host's allocation.

The transaction compares everything a create's does on the destinations (allocation
generation, node status, cordon, policy, group), and per VM its placement record as it was
read and the absence of a migration in flight: a VM deleted, moved or migrated meanwhile is
never restarted over it. A conflict re-reads those records into the cache and the controller
tries the batch again (vdcos/controllers/ha.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

from vdcos.errors import Aborted
from vdcos.model import (Allocation, AllocEntry, PlacementGroup, PlacementRecord, VmPhase, VmSpec, VmStatus,
                         assignment_bytes, dumps)
from vdcos.scheduler.cache import ClusterCache, with_entry
from vdcos.scheduler.core import SOLO, Lane, PlacementRequest, Rejection, schedule_batch
from vdcos.scheduler.txn import PlacementTxn, commit
from vdcos.state import keys
from vdcos.state.store import Delete, Put, Store


@dataclass(frozen=True, slots=True)
class Restart:
    """A VM of the failed host, as read: its spec and placement, and the placement's revision."""

    spec: VmSpec
    record: PlacementRecord
    revision: int


@dataclass(frozen=True, slots=True)
class Restarted:
    vm: str
    node: str
    epoch: int


def restart_elsewhere(store: Store, cache: ClusterCache, failed: str, items: list[Restart],
                      lane: Lane = SOLO) -> list[Restarted | Rejection]:
    """Place `items` off `failed` and commit them in one transaction; a VM that fits nowhere
    gets its explained refusal and stays where it is. Raises Aborted on a conflict."""
    if not items:
        return []
    names = {i.spec.name for i in items}
    snap = cache.snapshot()
    # The VMs being restarted leave their groups first: where they were must not pull them
    # back (hard affinity to a dead host) nor keep a slot from them.
    groups = dict(snap.groups)
    for spec in (i.spec for i in items if i.spec.placement_group in groups):
        g = groups[spec.placement_group]
        groups[g.name] = PlacementGroup(g.name, g.policy, tuple(m for m in g.members if m[0] not in names))
    snap = replace(snap, groups=groups)
    requests = [PlacementRequest(i.spec, f"ha:{i.spec.name}:{i.record.epoch + 1}", avoid=(failed,)) for i in items]
    decisions = schedule_batch(snap, requests, lane)

    txn = PlacementTxn()
    out: list[Restarted | Rejection] = []
    source, source_rev = cache.allocs.get(failed, (Allocation(failed), 0))
    now = time.time()
    for item, d in zip(items, decisions):
        if isinstance(d, Rejection):
            out.append(d)
            continue
        spec, name = item.spec, item.spec.name
        view = cache.node(d.node)
        _, policy_rev = cache.policy(spec.policy_name)
        assert view is not None  # the core chose it from the same cache
        alloc = txn.allocs.get(d.node, view.allocation)
        entry = AllocEntry(name, d.qos.qos_class, d.reserved, spec.policy_name, ha_admission=spec.ha.admission)
        txn.allocs[d.node] = with_entry(alloc, entry)
        source = source.without(name)
        txn.guard_destination(view, spec.policy_name, policy_rev)
        txn.guard(keys.vm_placement(name), "mod", item.revision)
        txn.guard(keys.vm_migration(name), "create", 0)
        if spec.placement_group:
            cached = cache.groups.get(spec.placement_group)
            if cached is not None:
                g = txn.groups.get(cached[0].name, cached[0])
                txn.groups[g.name] = g.with_member(name, d.node)
                txn.guard(keys.group(g.name), "mod", cached[1])
        epoch = item.record.epoch + 1
        record = replace(item.record, node=d.node, qos=d.qos, reserved=d.reserved, score=d.score, placed_at=now,
                         attempts=1, epoch=epoch)
        status = VmStatus(VmPhase.SCHEDULED, d.node, f"restarted by HA: {failed} failed (epoch {epoch})", now,
                          reboots=spec.power.reboots)  # a new guest: no reboot of the old one is due
        txn.puts += [Put(keys.vm_placement(name), dumps(record)),
                     Delete(keys.assign(failed, name)),
                     Put(keys.assign(d.node, name), assignment_bytes(dumps(spec), d.qos, d.reserved, epoch)),
                     Delete(keys.vm_status(failed, name)),
                     Put(keys.vm_status(d.node, name), dumps(status))]
        out.append(Restarted(name, d.node, epoch))
    if not any(isinstance(r, Restarted) for r in out):
        return out
    txn.guard(keys.alloc(failed), "mod", source_rev)
    txn.allocs[failed] = source
    txn.seal()
    if not commit(store, cache, txn).succeeded:
        raise Aborted(f"restarting {len(items)} VMs of {failed}: the cluster changed under the commit; retrying")
    return out

