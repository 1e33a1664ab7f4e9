"""Starting a shelved VM: it holds no host (lifecycle/power.py's shelve released it), so it is
placed again through the scheduling core, as a create would be (same filters, fit, affinity,
QoS and HA admission), and committed in one transaction that compares what a create's commit
compares on the destination, plus the VM's spec as read and the absence of a placement. Its
project was charged when it was created and stays charged while shelved: nothing is charged
again. A VM on a local volume goes back to that volume's host or nowhere."""
from __future__ import annotations

import json
import time
from dataclasses import replace

from vdcos.errors import Aborted, FailedPrecondition, NotFound, Unschedulable
from vdcos.lifecycle.power import Action, decide
from vdcos.model import (AllocEntry, PlacementRecord, PowerState, VmPhase, VmSpec, VmStatus,
                         assignment_bytes, decode, dumps)
from vdcos.scheduler.cache import ClusterCache, with_entry
from vdcos.scheduler.core import SOLO, Lane, PlacementRequest, Rejection, schedule
from vdcos.scheduler.txn import PlacementTxn, commit
from vdcos.state import keys
from vdcos.state.store import Put, Store
from vdcos.storagepool import volumes

ATTEMPTS = 8


def unshelve(store: Store, cache: ClusterCache, name: str, project: str | None = None,
             lane: Lane = SOLO) -> PlacementRecord:
    """Place the shelved VM `name` and start it there; its new placement, or Unschedulable
    with the core's reasons. A VM that is not shelved is FAILED_PRECONDITION."""
    for attempt in range(1, ATTEMPTS + 1):
        spec_kv, place_kv = store.get(keys.vm_spec(name)), store.get(keys.vm_placement(name))
        spec = decode(VmSpec, json.loads(spec_kv.value)) if spec_kv else None
        if spec is None or spec_kv is None or (project is not None and spec.project != project):
            raise NotFound(f"vm {name!r} not found")
        if spec.power.state is not PowerState.SHELVED or place_kv is not None:
            raise FailedPrecondition(f"vm {name!r} is not shelved")
        local = [v for v in volumes.list_volumes(store, vm=name) if v.ties_to_host]
        host = volumes.pinned_host(local)
        got = schedule(cache.snapshot(), PlacementRequest(
            spec, f"unshelve:{name}:{spec_kv.mod_revision}", pinned=host,
            pinned_because=f"local volume {local[0].name} lives on {host}" if host else ""), lane)
        if isinstance(got, Rejection):
            raise Unschedulable(got)
        new = replace(spec, power=decide(name, spec.power, Action.START))
        view = cache.node(got.node)
        assert view is not None  # the core chose it from the same cache
        _, policy_rev = cache.policy(spec.policy_name)
        txn = PlacementTxn()
        txn.allocs[got.node] = with_entry(view.allocation, AllocEntry(
            name, got.qos.qos_class, got.reserved, spec.policy_name, ha_admission=spec.ha.admission))
        txn.guard_destination(view, spec.policy_name, policy_rev)
        txn.guard(keys.vm_spec(name), "mod", spec_kv.mod_revision)
        txn.guard(keys.vm_placement(name), "create", 0)
        if spec.placement_group and not txn.join_group(cache, spec, got.node):
            continue  # its group changed since the snapshot the core decided from
        now = time.time()
        record = PlacementRecord(got.node, got.qos, got.reserved, got.score, now, attempt)
        spec_bytes = dumps(new)
        txn.puts += [Put(keys.vm_spec(name), spec_bytes), Put(keys.vm_placement(name), dumps(record)),
                     Put(keys.assign(got.node, name), assignment_bytes(spec_bytes, got.qos, got.reserved)),
                     Put(keys.vm_status(got.node, name),
                         dumps(VmStatus(VmPhase.SCHEDULED, got.node, "unshelved: placed again", now,
                                        reboots=new.power.reboots)))]
        txn.seal()
        if commit(store, cache, txn).succeeded:
            return record
    raise Aborted(f"unshelve vm {name}: the cluster kept changing under the commit; try again")
