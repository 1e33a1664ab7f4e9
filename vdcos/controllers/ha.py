"""The HA controller: a host whose lease is gone gets its VMs restarted on the others, exactly
once, in priority order, at a bounded rate.

Signals, in the order they are read (README.md beside this file has the whole argument):
  1. The host's lease (its agent's status key). Present: the host is alive, whatever else
     is wrong. Gone: the agent has not renewed it for a whole TTL.
  2. The host's fencer. An agent pets it only after renewals that succeeded, with the moment
     the lease could first expire; the fencer kills the host's QEMUs and libvirtd at that
     moment. So once the lease is seen gone, the guests of a host that self-fences are dead,
     whether the host crashed, froze or was cut off. The controller still waits `margin_s`
     after it sees the lease gone (the fencer polls every 0.1 s, and a kill takes time).
  3. The host's hypervisor, asked by a peer (the controller, over its management socket):
     a domain it reports running is provably alive and is never restarted; the host is
     "agent-down" (its agent is dead and its fencer too, or its fence failed). A hypervisor
     that does not answer proves nothing, and a host without a fencer whose hypervisor does
     not answer gets no restart: nothing would stop the old copy.
  4. Epochs and disk locks (vdcos/nodeagent/vms.py, virtlockd) guard what slips past these:
     an agent that wakes up starts nothing whose placement moved, and QEMU cannot open a
     shared disk another host holds.

Each restart batch goes through the scheduling core and one transaction
(vdcos/scheduler/failover.py) that moves the placement and bumps its epoch. What cannot be
restarted is recorded with why: a `never` VM stays down with its host, a VM on a local volume
is lost with it, a VM that fits nowhere waits (its refusal recorded) and is tried again at
every resync, so it starts when capacity appears.
"""
from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import replace
from typing import Callable

from vdcos.events import Emit, nothing
from vdcos.errors import VdcosError
from vdcos.model import (HaEvent, HostFailure, HostFailurePhase, PlacementRecord, PowerState, RestartPolicy, VmSpec,
                         decode, dumps, restart_order)
from vdcos.scheduler.cache import ClusterCache
from vdcos.scheduler.core import SOLO, Lane, Rejection
from vdcos.scheduler.failover import Restart, Restarted, restart_elsewhere
from vdcos.state import keys
from vdcos.state.store import Compare, Delete, Get, Put, Store
from vdcos.storagepool import volumes

log = logging.getLogger(__name__)

MARGIN_S = 1.5      # after the lease is seen gone, before a restart
BATCH = 32          # VMs of one host per commit, and per resync (1 s): the restart rate per failed host
EVENTS_KEPT = 2000  # HA events kept in etcd, newest
PROBE_TIMEOUT_S = 3.0

Probe = Callable[[str], "set[str] | None"]


def probe_hypervisor(uri: str) -> set[str] | None:
    """The domains a host's hypervisor runs, asked from outside the host; None if it does not
    answer in time (dead, frozen, or cut off). A subprocess, so that a hung daemon costs a
    timeout, not a thread."""
    if not uri.startswith("qemu"):
        return None
    try:
        r = subprocess.run(["virsh", "-c", uri, "list", "--name", "--state-running"], capture_output=True,
                           text=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return {line.strip() for line in r.stdout.splitlines() if line.strip()}


# HA decisions as the datacenter's events name them.
_EVENT_KINDS = {"host-failed": "node.not_ready", "host-fenced": "node.fenced", "vm-restarted": "vm.restarted",
                "vm-lost": "vm.failed", "vm-pending": "vm.refused"}


class HaController:
    name = "ha"

    def __init__(self, store: Store, cache: ClusterCache, *, lane: Callable[[], Lane] = lambda: SOLO,
                 margin_s: float = MARGIN_S, batch: int = BATCH, probe: Probe = probe_hypervisor,
                 emit: Emit = nothing) -> None:
        self.store = store
        self.emit = emit
        self.cache = cache
        self.lane = lane
        self.margin_s = margin_s
        self.batch = batch
        self.probe = probe

    # --- the items ----------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Hosts without a lease that hold VMs, and hosts with a failure record (until back)."""
        recorded, _ = self.store.get_prefix(keys.HA_HOSTS)
        return sorted(set(self.cache.lost_nodes()) | {keys.split(kv.key, keys.HA_HOSTS)[0] for kv in recorded})

    def reconcile(self, node: str) -> None:
        kv = self.store.get(keys.ha_host(node))
        rec = decode(HostFailure, json.loads(kv.value)) if kv else None
        if self.store.get(keys.node_status(node)) is not None:
            if rec is not None and kv is not None:
                self._write(node, None, kv.mod_revision, [HaEvent(time.time(), "host-back", node, message=(
                    f"{node} renewed its lease again; {len(rec.restarted)} of its VMs run elsewhere now"))])
            return
        now = time.time()
        view = self.cache.node(node)
        if rec is None:
            fenced = view is not None and view.spec.fence_timeout_s > 0
            rec = HostFailure(node, HostFailurePhase.FENCING, now, now + self.margin_s, (
                "lease gone; its fencer has killed its guests by now, restart after a margin" if fenced else
                "lease gone; the host has no fencer: only VMs its hypervisor shows stopped are restarted"))
            self._write(node, rec, 0, [HaEvent(now, "host-failed", node, message=rec.message)])
            kv = self.store.get(keys.ha_host(node))
        if now < rec.restart_after:
            return
        assert kv is not None
        self._restart(node, rec, kv.mod_revision, view.spec.fence_timeout_s > 0 if view else False,
                      view.spec.hypervisor_uri if view else "", view.spec.driver if view else "")

    # --- a failed host ------------------------------------------------------------------
    def _restart(self, node: str, rec: HostFailure, rec_rev: int, fenced: bool, uri: str, driver: str) -> None:
        candidates, lost, pending = self._candidates(node)
        running = self.probe(uri) if (candidates or lost) and driver != "sim" else None
        if running:
            lost = [(vm, why) for vm, why in lost if vm not in running]  # not lost: it runs
        events: list[HaEvent] = []
        now = time.time()
        known_lost = dict(rec.lost)
        for vm, why in lost:
            if vm not in known_lost:
                events.append(HaEvent(now, "vm-lost", node, vm, message=why))
        all_lost = tuple(sorted({**known_lost, **dict(lost)}.items()))
        if fenced or driver == "sim":
            # Its guests are dead, so are the files they held open.
            for v in volumes.list_volumes(self.store):
                if v.open_on == node:
                    volumes.let_go(self.store, v.name, node)
        still: list[str] = []
        if candidates and driver != "sim":
            if running is None and not fenced:
                rec = replace(rec, phase=HostFailurePhase.AGENT_DOWN, lost=all_lost, message=(
                    "no fencer and its hypervisor does not answer: its VMs cannot be proven stopped, none is restarted"))
                self._write(node, rec, rec_rev, events)
                return
            if running:
                still = sorted(running & {c.spec.name for c in candidates})
                candidates = [c for c in candidates if c.spec.name not in running]
                if still and set(still) != set(rec.still_running):
                    events.append(HaEvent(now, "agent-down", node, message=(
                        f"its hypervisor still runs {', '.join(still[:10])}: not restarted")))
        candidates.sort(key=lambda c: restart_order(c.spec.ha.priority, c.record.qos.qos_class, c.spec.name))
        restarted = list(rec.restarted)
        batch = candidates[:self.batch]
        results = restart_elsewhere(self.store, self.cache, node, batch, self.lane()) if batch else []
        waiting = dict(pending)
        for c, r in zip(batch, results):
            if isinstance(r, Restarted):
                restarted.append(r.vm)
                # A stopped VM keeps its reservation, so it moves too, and its power state
                # (in its spec) keeps it stopped there.
                off = c.spec.power.state is not PowerState.ON
                events.append(HaEvent(time.time(), "vm-restarted", node, r.vm, r.epoch,
                                      f"moved to {r.node} at epoch {r.epoch}, stays {c.spec.power.state.value}"
                                      if off else f"restarted on {r.node} at epoch {r.epoch}"))
            else:
                assert isinstance(r, Rejection)
                waiting[c.spec.name] = f"no host can take it: {r.summary}"
                if c.spec.name not in dict(rec.pending):
                    events.append(HaEvent(time.time(), "vm-pending", node, c.spec.name, message=waiting[c.spec.name]))
        left = len(candidates) - len(batch)
        if still:
            phase = HostFailurePhase.AGENT_DOWN
            message = f"agent down, hypervisor answering: {len(still)} VMs still run there and are left alone"
        elif waiting or left:
            phase = HostFailurePhase.RESTARTING
            message = f"{len(waiting)} VMs wait for capacity, {left} wait for the next batch"
        else:
            phase = HostFailurePhase.FAILED_OVER
            message = f"{len(restarted)} VMs restarted elsewhere, {len(all_lost)} lost"
        if rec.phase is HostFailurePhase.FENCING:
            events.insert(0, HaEvent(now, "host-fenced", node, message=(
                "its lease expired and its fencer's deadline passed" if fenced else
                "a sim host: no guest process to fence" if driver == "sim" else
                "no fencer: restarting only what its hypervisor shows stopped")))
        new = replace(rec, phase=phase, message=message, restarted=tuple(restarted),
                      lost=all_lost, pending=tuple(sorted(waiting.items())),
                      still_running=tuple(still))
        if new != rec or events:
            self._write(node, new, rec_rev, events)

    def _candidates(self, node: str) -> tuple[list[Restart], list[tuple[str, str]], list[tuple[str, str]]]:
        """The VMs still placed on `node`: those to restart, those lost (with why), those that
        must wait (with why)."""
        view = self.cache.node(node)
        names = [e.vm for e in view.allocation.entries if not e.is_storage] if view else []
        restart: list[Restart] = []
        lost: list[tuple[str, str]] = []
        pending: list[tuple[str, str]] = []
        if not names:
            return restart, lost, pending
        gets = [Get(k) for vm in names for k in (keys.vm_spec(vm), keys.vm_placement(vm), keys.vm_migration(vm))]
        res = self.store.txn([], gets)
        local = {v.vm: v for v in volumes.list_volumes(self.store, host=node) if v.ties_to_host and v.vm}
        for i, vm in enumerate(names):
            spec_kvs, place_kvs, mig_kvs = res.gets[3 * i:3 * i + 3]
            if not spec_kvs or not place_kvs:
                continue
            record = decode(PlacementRecord, json.loads(place_kvs[0].value))
            if record.node != node:
                continue
            spec = decode(VmSpec, json.loads(spec_kvs[0].value))
            if spec.ha.restart_policy is RestartPolicy.NEVER:
                lost.append((vm, "restart policy never: it stays down with its host"))
            elif vm in local:
                lost.append((vm, f"its local volume {local[vm].name} died with {node}; not restarted blank"))
            elif mig_kvs:
                pending.append((vm, f"live migration {mig_kvs[0].value.decode()} in flight: waits for it to end"))
            else:
                restart.append(Restart(spec, record, place_kvs[0].mod_revision))
        return restart, lost, pending

    # --- records ------------------------------------------------------------------------
    def _write(self, node: str, rec: HostFailure | None, rev: int, events: list[HaEvent]) -> None:
        """The host's record (compared: one writer at a time, the leader) and its new events."""
        ops = [Put(keys.ha_host(node), dumps(rec)) if rec is not None else Delete(keys.ha_host(node))]
        ops += [Put(keys.ha_event(e.at + i * 1e-6, e.node, e.vm), dumps(e)) for i, e in enumerate(events)]
        for e in events:
            log.info("ha: %s %s %s %s", e.kind, e.node, e.vm, e.message)
        if not self.store.txn([Compare(keys.ha_host(node), "mod", "==", rev)], ops).succeeded:
            raise VdcosError(f"HA record of {node} changed meanwhile; reconciling again")
        for e in events:  # the datacenter's event stream says it too (vdcos/events/)
            kind = _EVENT_KINDS.get(e.kind)
            if kind is not None:
                self.emit(kind, e.vm or e.node, node=e.node, project=self._project_of(e.vm), message=e.message,
                          **({"epoch": e.epoch} if e.epoch else {}))
        if events:
            self._trim_events()

    def _project_of(self, vm: str) -> str:
        kv = self.store.get(keys.vm_spec(vm)) if vm else None
        return decode(VmSpec, json.loads(kv.value)).project if kv else ""

    def _trim_events(self) -> None:
        """After events were added (not at every resync: the events are read whole)."""
        kvs, _ = self.store.get_prefix(keys.HA_EVENTS)
        if len(kvs) > EVENTS_KEPT * 1.1:
            self.store.txn([], [Delete(kv.key) for kv in kvs[:len(kvs) - EVENTS_KEPT]])


def status(store: Store, event_limit: int = 50) -> tuple[list[HostFailure], list[HaEvent], str]:
    """Failed hosts, the newest events (oldest first), and the replica leading the controller."""
    hosts, _ = store.get_prefix(keys.HA_HOSTS)
    events, _ = store.get_prefix(keys.HA_EVENTS)
    leader = store.get(keys.HA_LOCK)
    return ([decode(HostFailure, json.loads(kv.value)) for kv in hosts],
            [decode(HaEvent, json.loads(kv.value)) for kv in events[-event_limit:]],
            leader.value.decode() if leader else "")
