"""The metering controller: what every VM reserved and used over time, as Ceilometer meters an
OpenStack cloud, in one record per VM under /vdcos/usage/ (model/usage.py).

A record holds what was charged up to its `metered_to` and the reservation it has held since
(vCPUs, memory and disk, from the allocations the scheduler's cache holds), so what a VM
reserved is exact at any moment (`VmUsage.as_of`) and its record is written only when that
reservation changes, when the VM moves, or every `flush_s` (5 minutes) to add what its guest's
counters (CPU time and NIC bytes, from the status its node's agent reports) added since the
last reading: 20,000 VMs cost etcd ~70 writes a second, not one each per round. Each round
(one leader, every 30 s) looks at every VM. Counted once, never twice, with no gap:

- every interval starts where the last one ended, and the record is written with a
  compare-and-swap on its revision, so a round that races another leader's counts nothing;
- a VM that moves holds two allocations while it moves (the source's marked held by the
  migration): only the other one is charged;
- a guest's counters restart with its QEMU (after a move, an HA restart or a reboot): a
  reading from another node, or lower than the last, counts from zero;
- a deleted VM is charged up to its deletion (the delete stamps it), then its record is kept
  for the project's bills until `keep_s` has passed.

What cannot be had: the CPU time and bytes a guest used between its agent's last status and
the moment its QEMU ended (a move, a crash) are not in any reading; at most one status period's."""
from __future__ import annotations

import json
import time
from dataclasses import replace

from vdcos.model import Amounts, PlacementRecord, VmSpec, VmStatus, VmUsage, decode, dumps
from vdcos.model.usage import opened
from vdcos.scheduler.cache import ClusterCache
from vdcos.state import keys
from vdcos.state.rmw import Reads, Write, read_modify_write
from vdcos.state.store import KV, Compare, Delete, Get, Put, Store, StoreError

PERIOD_S = 30.0
FLUSH_S = 300.0  # a record whose reservation did not change is written at most this often
KEEP_S = 31 * 86400
CHUNK = 50  # records per transaction (each with its compare: etcd allows 128 operations)


class MeteringController:
    name = "metering"

    def __init__(self, store: Store, cache: ClusterCache, keep_s: float = KEEP_S,
                 flush_s: float = FLUSH_S) -> None:
        self.store = store
        self.cache = cache
        self.keep_s = keep_s
        self.flush_s = flush_s
        # VMs without a record, and when this leader first saw them: a record is made only once
        # there is something to keep that its placement does not say (`usage_records` reads a
        # young VM's from its placement), so a burst of creates costs etcd no burst of writes.
        self._young: dict[str, float] = {}

    def keys(self) -> list[str]:
        return ["all"]  # one round over every VM: its reads are two prefixes, not one per VM

    def reconcile(self, item: str) -> None:
        now = time.time()
        reserved = {e.vm: (a.node, e) for a, _ in list(self.cache.allocs.values()) for e in a.entries
                    if not e.is_storage and not e.held_by}
        status_kvs, _rev = self.store.get_prefix(keys.VM_STATUSES)
        statuses: dict[tuple[str, str], VmStatus] = {}
        for kv in status_kvs:
            node, vm = keys.split(kv.key, keys.VM_STATUSES)[:2]
            statuses[(node, vm)] = decode(VmStatus, json.loads(kv.value))
        usage_kvs, _rev = self.store.get_prefix(keys.USAGE)
        records = {keys.split(kv.key, keys.USAGE)[0]: (decode(VmUsage, json.loads(kv.value)), kv) for kv in usage_kvs}
        for vm in reserved:
            if vm not in records:
                self._young.setdefault(vm, now)
        self._young = {vm: t for vm, t in self._young.items() if vm in reserved and vm not in records}
        firsts = self._firsts([vm for vm, t in self._young.items() if now - t >= self.flush_s])
        writes: list[tuple[str, VmUsage | None, KV | None]] = []
        for vm, (node, entry) in reserved.items():
            got = records.get(vm)
            u = got[0] if got else firsts.get(vm)
            if u is None or u.deleted_at:
                continue  # young, not placed yet, or deleted meanwhile (the cache has not seen it yet)
            rate = (entry.reserved.vcpus, entry.reserved.memory_mib, entry.reserved.disk_gib)
            new = self._charge(u, now, rate, statuses.get((node, vm)), node)
            if got is None or new.reserved != u.reserved or new.last_node != u.last_node \
                    or (now - u.metered_to >= self.flush_s and new != u):
                writes.append((vm, new, got[1] if got else None))
        for vm, (u, kv) in records.items():
            if vm in reserved:
                continue
            if u.deleted_at and u.metered_to < u.deleted_at:
                writes.append((vm, u.as_of(u.deleted_at), kv))  # its last interval, to its deletion
            elif u.deleted_at and now - u.deleted_at > self.keep_s:
                writes.append((vm, None, kv))
        for i in range(0, len(writes), CHUNK):
            chunk = writes[i:i + CHUNK]
            compares = [Compare(keys.usage(vm), "mod", "==", kv.mod_revision) if kv is not None
                        else Compare(keys.usage(vm), "create", "==", 0) for vm, _, kv in chunk]
            ops: list[Put | Delete] = [Put(keys.usage(vm), dumps(u)) if u is not None else Delete(keys.usage(vm))
                                       for vm, u, _ in chunk]
            if not self.store.txn(compares, ops).succeeded:
                raise StoreError("usage records changed meanwhile (another leader?); metering again")

    def _firsts(self, vms: list[str]) -> dict[str, VmUsage]:
        """VMs metered for the first time, from their placement (read CHUNK at a time)."""
        out = {}
        for i in range(0, len(vms), CHUNK):
            part = vms[i:i + CHUNK]
            gets = self.store.txn([], [g for vm in part for g in (Get(keys.vm_spec(vm)), Get(keys.vm_placement(vm)))]).gets
            for j, vm in enumerate(part):
                spec_kv, place_kv = gets[2 * j], gets[2 * j + 1]
                if not spec_kv or not place_kv:
                    continue
                out[vm] = opened(decode(VmSpec, json.loads(spec_kv[0].value)),
                                decode(PlacementRecord, json.loads(place_kv[0].value)))
        return out

    def _charge(self, u: VmUsage, now: float, rate: tuple[int, int, int], st: VmStatus | None, node: str) -> VmUsage:
        """Its reservation up to now at the rate it had (a new rate counts from now on), and
        what its guest's counters added since the last reading."""
        u = u.as_of(now)
        if st is None or st.updated_at <= u.last_counter_at:
            return replace(u, reserved=rate)
        same = st.node == u.last_node
        cpu_s = ((st.cpu_time_ns - u.last_cpu_ns) if same and st.cpu_time_ns >= u.last_cpu_ns else st.cpu_time_ns) / 1e9
        net = ((st.network_bytes - u.last_network_bytes) if same and st.network_bytes >= u.last_network_bytes
               else st.network_bytes)
        u = u.charged(now, now, Amounts(0.0, cpu_s, 0.0, 0.0, net)) if cpu_s or net else u
        return replace(u, reserved=rate, last_node=node, last_cpu_ns=st.cpu_time_ns,
                       last_network_bytes=st.network_bytes, last_counter_at=st.updated_at)


def deleted(store: Store, vm: str, at: float, spec: VmSpec | None = None,
            placed: PlacementRecord | None = None) -> None:
    """Stamp a deleted VM's record: metering charges it up to `at` and no further. A VM deleted
    before metering first saw it gets its record here, from its spec and placement."""
    def attempt(r: Reads) -> Write[None]:
        u = r.get(VmUsage, keys.usage(vm))
        if u is None and spec is not None and placed is not None:
            u = opened(spec, placed)
        if u is None or u.deleted_at:
            return Write(None)
        return Write(None, [Put(keys.usage(vm), dumps(replace(u, deleted_at=max(at, u.metered_to))))])
    read_modify_write(store, attempt, f"usage of {vm}")


def usage_records(store: Store, now: float | None = None) -> list[VmUsage]:
    """Every VM's, as of `now` (default: now): a reservation is exact at any moment; the guests'
    counters are as of the last time their records were written. A VM too young for a record
    has its reservation read from its placement."""
    at = time.time() if now is None else now
    usage_kvs, vm_kvs = (r for r in store.txn([], [Get(keys.USAGE, prefix=True), Get(keys.VMS, prefix=True)]).gets)
    out = {u.vm: u for u in (decode(VmUsage, json.loads(kv.value)) for kv in usage_kvs)}
    specs: dict[str, VmSpec] = {}
    placements: dict[str, PlacementRecord] = {}
    for kv in vm_kvs:
        vm, _, part = kv.key[len(keys.VMS):].partition("/")
        if vm in out:
            continue
        if part == "spec":
            specs[vm] = decode(VmSpec, json.loads(kv.value))
        elif part == "placement":
            placements[vm] = decode(PlacementRecord, json.loads(kv.value))
    for vm, placed in placements.items():
        if vm in specs:
            out[vm] = opened(specs[vm], placed)
    return [u.as_of(at) for u in out.values()]
