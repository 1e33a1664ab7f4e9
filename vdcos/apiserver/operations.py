"""What the API can do to the cluster, in domain terms. The gRPC servicers only convert to and
from protobuf around these calls; validation has already happened at the edge."""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vdcos.apiserver.planner_pool import PlannerPool
from vdcos.apiserver.planning import Planning
from vdcos.controllers import metering
from vdcos.controllers.rebalancer import Rebalancer
from vdcos.events import Emit, nothing
from vdcos.errors import AlreadyExists, FailedPrecondition, NotFound, ResourceExhausted
from vdcos.lifecycle import power, resize
from vdcos.migration import records
from vdcos.model import (DIMENSIONS, Migration, MigrationOptions, Network, NodeSpec, PlacementRecord, PoolKind,
                         PoolStatus, Port, PortKind, PowerState, QosClass, QosPolicy, Resources, SchedulerConfig,
                         Snapshot, VmPhase, VmSpec, VmStatus, Volume, decode, dumps)
from vdcos.model.fit import demand_vector, fit_matrix
from vdcos.scheduler.cache import ClusterCache, NodeView
from vdcos.scheduler.core import Explanation
from vdcos.scheduler.core.ha import failover_headroom
from vdcos.scheduler.placer import Placed, Placer
from vdcos.security.pki import Authority
from vdcos.state import keys
from vdcos.state.rmw import Reads, Write, read_modify_write
from vdcos.state.store import KV, Compare, Delete, Get, Put, Store
from vdcos.storagepool import snapshots, volumes
from vdcos.vswitch import networks


log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VmRecord:
    spec: VmSpec
    placement: PlacementRecord | None
    status: VmStatus


def _scheduled(placed: Placed) -> VmRecord:
    return VmRecord(placed.spec, placed.record, VmStatus(VmPhase.SCHEDULED, placed.record.node))


@dataclass(frozen=True, slots=True)
class CapacitySummary:
    nodes_total: int
    nodes_ready: int
    nodes_cordoned: int
    capacity: Resources
    allocatable: Resources
    guaranteed: Resources
    committed: Resources
    vms_by_class: dict[str, int]


@dataclass(frozen=True)
class FailoverCapacity:
    failures: int
    protected_vms: int
    ok: bool
    message: str


class Operations:
    def __init__(self, store: Store, cache: ClusterCache, scheduler: Placer, authority: Authority | None = None,
                 emit: Emit = nothing) -> None:
        self.store = store
        self.emit = emit  # the replica's event recorder (vdcos/events/)
        # The datacenter's CA, to certify hosts that join (None: this replica cannot).
        self.authority = authority
        self.cache = cache
        self.scheduler = scheduler
        self.planner_pool = PlannerPool()
        self.rebalancer = Rebalancer(store, cache, scheduler, plan_with=self.planner_pool.run)
        self.planning = Planning(store, cache, self.rebalancer, self.planner_pool)

    # --- VMs ------------------------------------------------------------------------------
    async def create_vm_async(self, spec: VmSpec, request_id: str = "") -> VmRecord:
        # The VM's NICs (address and MAC) exist before it is placed, so the agent that starts
        # it can plug them; a refused VM gives them back.
        # Its volumes are claimed first too: a local one decides the host.
        # (A thread hop costs more than deciding the placement: only for VMs that need one.)
        if request_id and (spec.volumes or spec.networks):
            # A retry of a create that went through: its VM, not ALREADY_EXISTS from the claims.
            # (Without volumes or NICs the worker answers the same when its commit finds the VM.)
            mine = await asyncio.to_thread(self.scheduler.placed_by, spec.name, request_id)
            if mine is not None:
                return _scheduled(mine)
        claimed = await asyncio.to_thread(self._claim_volumes, spec) if spec.volumes else []
        try:
            ports = await asyncio.to_thread(self._allocate_nics, spec) if spec.networks else []
        except BaseException:
            if claimed:
                await asyncio.to_thread(volumes.detach, self.store, spec.name, claimed)
            raise
        host = volumes.pinned_host(claimed)
        why = f"local volume {next(v.name for v in claimed if v.ties_to_host)} lives on {host}" if host else ""
        try:
            placed: Placed = await asyncio.wrap_future(self.scheduler.submit(spec, request_id, host, why))
        except BaseException:
            if ports:
                await asyncio.to_thread(networks.delete_ports, self.store, ports)
            if claimed:
                await asyncio.to_thread(volumes.detach, self.store, spec.name, claimed)
            raise
        return _scheduled(placed)

    async def create_vms_async(self, items: Sequence[tuple[VmSpec, str]]) -> list[VmRecord | Exception]:
        """Many VMs at once, each placed or refused on its own (results in order). Those with
        neither volumes nor NICs reach the worker's queue together, and the event loop wakes
        once when the last is decided, not once per VM."""
        loop = asyncio.get_running_loop()
        out: dict[int, VmRecord | Exception] = {}
        plain: list[int] = []
        others: list[int] = []  # volumes or NICs: the CreateVm path
        for i, (spec, _) in enumerate(items):
            (others if spec.volumes or spec.networks else plain).append(i)
        futures = self.scheduler.submit_all([items[i] for i in plain])
        all_decided = loop.create_future()
        left = [len(futures)]
        lock = threading.Lock()

        def decided(_: Future[Placed]) -> None:  # on the worker's thread
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            loop.call_soon_threadsafe(lambda: None if all_decided.done() else all_decided.set_result(None))

        for f in futures:
            f.add_done_callback(decided)
        if not futures:
            all_decided.set_result(None)

        async def single(i: int) -> None:
            try:
                out[i] = await self.create_vm_async(*items[i])
            except Exception as e:
                out[i] = e

        await asyncio.gather(all_decided, *(single(i) for i in others))
        for i, f in zip(plain, futures):
            e = f.exception()
            if e is None:
                out[i] = _scheduled(f.result())
            else:
                out[i] = e if isinstance(e, Exception) else RuntimeError(str(e))
        return [out[i] for i in range(len(items))]

    def _claim_volumes(self, spec: VmSpec) -> list[Volume]:
        if self.store.get(keys.vm_spec(spec.name)) is not None:
            raise AlreadyExists(f"vm {spec.name!r} already exists")
        return volumes.attach_all(self.store, spec.name, spec.volumes, spec.project)

    def _allocate_nics(self, spec: VmSpec) -> list[Port]:
        if self.store.get(keys.vm_spec(spec.name)) is not None:
            return []  # an existing VM: the scheduler answers for it
        return networks.create_ports(self.store, [(n, spec.name, PortKind.VM, "", "", 0) for n in spec.networks],
                                     project=spec.project)

    # --- live migration -------------------------------------------------------------------
    def migrate_vm(self, vm: str, target: str, options: MigrationOptions) -> Migration:
        return self.scheduler.migrate(vm, target, options)

    def get_migration(self, mid: str) -> Migration:
        return records.get(self.store, mid)

    def list_migrations(self, vm: str = "") -> list[Migration]:
        return [m for m in records.list_all(self.store) if not vm or m.vm == vm]

    def cancel_migration(self, mid: str) -> Migration:
        return self.scheduler.cancel_migration(mid)

    def explain(self, spec: VmSpec, request_id: str = "", limit: int = 10) -> Explanation:
        return self.scheduler.explain(spec, request_id, limit)

    def delete_vm(self, name: str, keep_volumes: bool = False, project: str | None = None) -> None:
        """Delete a VM (with `project`: only that project's) and what goes with it."""
        kv, place = self.store.get(keys.vm_spec(name)), self.store.get(keys.vm_placement(name))
        self.scheduler.delete(name, project)
        if kv is not None:
            spec = decode(VmSpec, json.loads(kv.value))
            metering.deleted(self.store, name, time.time(), spec,
                             decode(PlacementRecord, json.loads(place.value)) if place is not None else None)
            self.emit("vm.deleted", name, project=spec.project,
                      node=decode(PlacementRecord, json.loads(place.value)).node if place is not None else "",
                      message="deleted" + (", its volumes kept" if keep_volumes else ""))
            networks.delete_ports(self.store, networks.vm_ports(self.store, name, spec.networks))
            # Cinder's delete_on_termination, on by default: no volume outlives its VM unasked.
            node = decode(PlacementRecord, json.loads(place.value)).node if place is not None else ""
            volumes.detach_all(self.store, name, delete_them=not keep_volumes, open_on=node)

    # --- power --------------------------------------------------------------------------------
    def set_power(self, name: str, action: power.Action, project: str | None = None, hard: bool = False,
                  timeout_s: int = power.DEFAULT_STOP_TIMEOUT_S) -> VmRecord:
        """Record the power state `action` asks for (the VM's host carries it out), or, to start
        a shelved VM, place it again. Shelving is `shelve`."""
        if action is power.Action.START:
            kv = self.store.get(keys.vm_spec(name))
            spec = decode(VmSpec, json.loads(kv.value)) if kv else None
            if spec is not None and spec.power.state is PowerState.SHELVED:
                rec = self.scheduler.unshelve(name, project)
                self.emit("vm.unshelved", name, node=rec.node, project=spec.project,
                          message=f"placed again on {rec.node} ({rec.qos.qos_class.value})")
                return self.get_vm(name)
        before, after = power.set_power(self.store, name, action, project=project, hard=hard, timeout_s=timeout_s)
        if after != before:
            log.info("vm %s: %s asked (power %s)", name, action.value, after.power.state.value)
        return self.get_vm(name)

    def resize(self, name: str, resources: Resources | None, qos_policy: str | None, restart: bool,
               project: str | None = None) -> VmRecord:
        before, after = resize.resize(self.store, name, resources=resources, qos_policy=qos_policy, restart=restart,
                                      project=project)
        if after != before:
            r = after.resources
            self.emit("vm.resized", name, project=after.project, message=(
                f"{r.vcpus} vCPU, {r.memory_mib} MiB, {r.disk_gib} GiB, policy {after.policy_name}"))
        return self.get_vm(name)

    def shelve(self, name: str, project: str | None = None) -> VmRecord:
        spec, node = power.shelve(self.store, name, project=project)
        if node:
            self.emit("vm.shelved", name, node=node, project=spec.project,
                      message=f"its reservation on {node} released")
        return self.get_vm(name)

    # --- volumes ------------------------------------------------------------------------------
    def create_volume(self, name: str, pool: PoolKind | None, size_gib: int, host: str = "", image: str = "",
                      snapshot: str = "", project: str = "") -> Volume:
        source = None
        if snapshot:
            # A restore goes where the snapshot's file is: its pool, and its host for a local one.
            source = volumes.restore_source(self.store, snapshot, size_gib)
            if source.project != project:
                raise NotFound(f"snapshot {snapshot!r} not found")
            size_gib = size_gib or source.size_gib
            if pool is not None and pool is not source.pool:
                raise FailedPrecondition(f"snapshot {snapshot} is in the {source.pool.value} pool; "
                                         f"a volume restored from it is too")
            if source.pool is PoolKind.LOCAL and host and host != source.host:
                raise FailedPrecondition(f"snapshot {snapshot} lives in {source.host}'s local pool; "
                                         f"a volume restored from it is made there")
            pool, image = source.pool, source.image
            host = source.host if pool is PoolKind.LOCAL else host
        assert pool is not None  # validation requires a pool unless a snapshot gives it
        if host:
            self.node(host)
        else:
            host = self._volume_host(pool, size_gib)
        return volumes.create(self.store, name, pool, size_gib, host, image, source, project)

    def _volume_host(self, pool: PoolKind, size_gib: int) -> str:
        """A local volume goes to the ready host with the most free disk that it fits (the one
        fit function: a volume's space is a guaranteed reservation); a shared one is made by
        any ready host (the one with the most free disk, to spread the work)."""
        snap = self.cache.snapshot()
        terms = snap.score_terms
        if not terms.schedulable.any():
            raise ResourceExhausted("no ready node to create the volume on")
        j = DIMENSIONS.index("disk_gib")
        free = np.where(terms.schedulable, np.minimum(terms.free_physical[j], terms.free_over[j]), -np.inf)
        if pool is PoolKind.LOCAL:
            demand = demand_vector(Resources(disk_gib=size_gib))
            fit = fit_matrix(terms.free_physical, terms.free_over, demand, QosClass.GUARANTEED)
            if not (fit.ok & terms.schedulable).any():
                best = int(np.argmax(free))
                raise ResourceExhausted(f"no local pool has {size_gib} GiB free (largest: {max(free[best], 0):.0f} "
                                        f"GiB on {snap.names[best]})")
            free = np.where(fit.ok, free, -np.inf)
        return str(snap.names[int(np.argmax(free))])

    def get_volume(self, name: str) -> Volume:
        return volumes.get(self.store, name)

    def list_volumes(self, vm: str = "", host: str = "") -> list[Volume]:
        return volumes.list_volumes(self.store, vm, host)

    def delete_volume(self, name: str) -> None:
        volumes.delete(self.store, name)

    def attach_volume(self, name: str, vm: str) -> Volume:
        return volumes.attach(self.store, name, vm)

    def detach_volume(self, name: str) -> Volume:
        return volumes.detach_one(self.store, name)

    def resize_volume(self, name: str, size_gib: int) -> Volume:
        return volumes.resize(self.store, name, size_gib)

    def create_snapshot(self, name: str, volume: str) -> Snapshot:
        return snapshots.create(self.store, name, volume)

    def get_snapshot(self, name: str) -> Snapshot:
        return snapshots.get(self.store, name)

    def list_snapshots(self, volume: str = "") -> list[Snapshot]:
        return snapshots.list_snapshots(self.store, volume)

    def delete_snapshot(self, name: str) -> None:
        snapshots.delete(self.store, name)

    def pools(self) -> list[PoolStatus]:
        return sorted(volumes.pools(self.store), key=lambda p: (p.pool.value, p.host))

    # --- tenant networks --------------------------------------------------------------------
    def create_network(self, name: str, cidr: str, vni: int = 0, project: str = "") -> Network:
        return networks.create(self.store, name, cidr, vni, project)

    def get_network(self, name: str) -> Network:
        return networks.get(self.store, name)

    def list_networks(self) -> list[Network]:
        return networks.list_networks(self.store)

    def delete_network(self, name: str, project: str | None = None) -> None:
        networks.delete(self.store, name, project)

    def create_endpoint(self, network: str, name: str, host: str, ip: str = "", max_mbps: int = 0,
                        project: str | None = None) -> Port:
        kv = self.store.get(keys.node_spec(host))
        if kv is None:
            raise NotFound(f"node {host!r} not found")
        if not decode(NodeSpec, json.loads(kv.value)).tunnel_ip:
            raise FailedPrecondition(f"node {host!r} has no virtual switch (driver sim?)")
        return networks.create_ports(self.store, [(network, name, PortKind.ENDPOINT, host, ip, max_mbps)], project)[0]

    def list_ports(self, network: str = "") -> list[tuple[Port, list[str]]]:
        if network:
            networks.get(self.store, network)
        ports = networks.list_ports(self.store, network)
        kvs, _ = self.store.get_prefix(keys.BINDINGS + (network + "/" if network else ""))
        bound: dict[str, list[str]] = {}
        for kv in kvs:
            net, port, host = keys.split(kv.key, keys.BINDINGS)
            bound.setdefault(f"{net}/{port}", []).append(host)
        return [(p, sorted(bound.get(p.key, []))) for p in ports]

    def delete_endpoint(self, network: str, name: str) -> None:
        kv = self.store.get(keys.port(network, name))
        if kv is None:
            raise NotFound(f"port {name!r} not found on network {network!r}")
        port = decode(Port, json.loads(kv.value))
        if port.kind is not PortKind.ENDPOINT:
            raise FailedPrecondition(f"port {name!r} is VM {name}'s NIC: it goes when the VM is deleted")
        networks.delete_ports(self.store, [port])

    def get_vm(self, name: str) -> VmRecord:
        kvs, _ = self.store.get_prefix(f"{keys.VMS}{name}/")
        place = next((kv for kv in kvs if kv.key == keys.vm_placement(name)), None)
        node = decode(PlacementRecord, json.loads(place.value)).node if place is not None else ""
        status = self.store.get(keys.vm_status(node, name)) if node else None
        rec = self._records(kvs, [status] if status is not None else []).get(name)
        if rec is None:
            raise NotFound(f"vm {name!r} not found")
        return rec

    def list_vms(self, node: str = "") -> list[VmRecord]:
        kvs, status_kvs = self.store.txn([], [Get(keys.VMS, prefix=True), Get(keys.VM_STATUSES, prefix=True)]).gets
        recs = self._records(kvs, status_kvs).values()
        return sorted((r for r in recs if not node or (r.placement and r.placement.node == node)),
                      key=lambda r: r.spec.name)

    def _records(self, kvs: Sequence[KV], status_kvs: Sequence[KV]) -> dict[str, VmRecord]:
        parts: dict[str, dict[str, bytes]] = {}
        for kv in kvs:
            vm, kind = keys.split(kv.key, keys.VMS)
            parts.setdefault(vm, {})[kind] = kv.value
        said = {(node, vm): kv.value for kv in status_kvs for node, vm in [keys.split(kv.key, keys.VM_STATUSES)]}
        out: dict[str, VmRecord] = {}
        for vm, p in parts.items():
            if "spec" not in p:
                continue
            spec = decode(VmSpec, json.loads(p["spec"]))
            placement = decode(PlacementRecord, json.loads(p["placement"])) if "placement" in p else None
            node = placement.node if placement else ""
            # Its placement's node speaks for it (another node's word is stale: it moved).
            raw = said.get((node, vm))
            status = decode(VmStatus, json.loads(raw)) if raw is not None else VmStatus(VmPhase.SCHEDULED, node)
            if placement is None and spec.power.state is PowerState.SHELVED:
                status = VmStatus(VmPhase.SHELVED, "", "shelved: it holds no host; starting it places it again")
            view = self.cache.node(node) if node else None
            if view is not None and (view.status is None or not view.status.ready):
                status = VmStatus(VmPhase.UNKNOWN, node, f"node {node} is not ready", status.updated_at)
            out[vm] = VmRecord(spec, placement, status)
        return out

    # --- QoS policies -----------------------------------------------------------------------
    def create_policy(self, policy: QosPolicy, update_existing: bool = False) -> tuple[QosPolicy, bool]:
        key = keys.policy(policy.name)

        def attempt(r: Reads) -> Write[tuple[QosPolicy, bool]]:
            old = r.get(QosPolicy, key)
            if old is not None and not update_existing:
                raise AlreadyExists(f"QoS policy {policy.name!r} already exists (use update_existing to replace it)")
            compares: list[Compare] = []
            if old is not None and old.qos_class is not policy.qos_class:
                compares.append(self._no_placement_since_cache())
                users = self.cache.policy_users(policy.name)
                if users:
                    raise FailedPrecondition(
                        f"QoS policy {policy.name!r} cannot change class from {old.qos_class.value} to "
                        f"{policy.qos_class.value} while {len(users)} VMs use it (first: {users[0]})")
            return Write((policy, old is None), [Put(key, dumps(policy))], compares)

        def committed(rev: int) -> None:
            self.cache.apply_kvs([KV(key, dumps(policy), rev, rev)], rev)
        return read_modify_write(self.store, attempt, f"QoS policy {policy.name!r}", attempts=10,
                                 on_commit=committed, on_conflict=self._catch_up)

    def _catch_up(self, revision: int) -> None:
        """After a conflict: the cache answers the next attempt's questions, so it sees it first."""
        self.cache.wait_for_revision(revision)

    def _no_placement_since_cache(self) -> Compare:
        """True only if no allocation changed after what the cache has seen: makes an
        'is this policy in use?' answer from the cache safe to act on."""
        return Compare(keys.ALLOC, "mod", "<", self.cache.revision + 1, prefix=True)

    def get_policy(self, name: str) -> QosPolicy:
        kv = self.store.get(keys.policy(name))
        if kv is None:
            raise NotFound(f"QoS policy {name!r} not found")
        return decode(QosPolicy, json.loads(kv.value))

    def list_policies(self) -> list[QosPolicy]:
        kvs, _ = self.store.get_prefix(keys.POLICIES)
        return sorted((decode(QosPolicy, json.loads(kv.value)) for kv in kvs), key=lambda p: p.name)

    def delete_policy(self, name: str) -> None:
        key = keys.policy(name)

        def attempt(r: Reads) -> Write[None]:
            if r.kv(key) is None:
                raise NotFound(f"QoS policy {name!r} not found")
            self.scheduler.check_policy_unused(name)
            return Write(None, [Delete(key)], [self._no_placement_since_cache()])
        read_modify_write(self.store, attempt, f"QoS policy {name!r}", attempts=10,
                          on_conflict=self._catch_up)

    # --- nodes ------------------------------------------------------------------------------
    def node(self, name: str) -> NodeView:
        view = self.cache.node(name)
        if view is None:
            raise NotFound(f"node {name!r} not found")
        return view

    def nodes(self, selector: dict[str, str] | None = None) -> list[NodeView]:
        views = [v for n in self.cache.node_names() if (v := self.cache.node(n)) is not None]
        sel = set((selector or {}).items())
        return [v for v in views if sel <= set(v.spec.labels)]

    def cordon(self, name: str, reason: str = "", on: bool = True) -> NodeView:
        self.node(name)
        key = keys.node_cordon(name)
        if on:
            rev = self.store.put(key, json.dumps({"reason": reason, "at": time.time()}).encode())
            self.cache.wait_for_revision(rev)
            self.emit("node.cordoned", name, node=name, message=f"cordoned: {reason}" if reason else "cordoned")
        else:
            res = self.store.txn([], [Delete(key)], [])
            self.cache.wait_for_revision(res.revision)
            self.emit("node.uncordoned", name, node=name, message="takes new VMs again")
        return self.node(name)

    # --- configuration and capacity ---------------------------------------------------------
    def config(self) -> SchedulerConfig:
        return self.cache.config

    def failover_capacity(self) -> FailoverCapacity:
        """Admission control's view now: how many VMs it protects and the failover headroom
        after the configured number of host failures (1 when it is off, to show what it would be)."""
        snap = self.cache.snapshot()
        n = snap.config.ha_host_failures_to_tolerate
        loads = self.cache.protected_loads(snap)
        headroom = failover_headroom(snap, loads, max(n, 1))
        protected = sum(1 for a, _ in list(self.cache.allocs.values()) for e in a.entries
                        if e.ha_admission and not e.is_storage)
        short = [f"{d} {-h:g} short" for d, h in zip(DIMENSIONS, headroom) if h < 0]
        room = ", ".join(f"{d} {h:g}" for d, h in zip(DIMENSIONS, headroom))
        who = f"{max(n, 1)} host failure{'s' if max(n, 1) > 1 else ''}"
        message = (f"after {who} the survivors could not restart every protected VM: {', '.join(short)}" if short
                   else f"after {who} the survivors keep {room} free")
        if not n:
            message = "admission control off (ha_host_failures_to_tolerate 0); " + message
        return FailoverCapacity(n, protected, not short, message)

    def ha_states(self) -> dict[str, str]:
        """The HA controller's phase of each host it declared failed (vdcos/controllers/ha.py)."""
        kvs, _ = self.store.get_prefix(keys.HA_HOSTS)
        return {keys.split(kv.key, keys.HA_HOSTS)[0]: str(json.loads(kv.value)["phase"]) for kv in kvs}

    def update_config(self, config: SchedulerConfig) -> SchedulerConfig:
        rev = self.store.put(keys.CONFIG, dumps(config))
        self.cache.wait_for_revision(rev)
        return self.cache.config

    def capacity(self) -> CapacitySummary:
        snap = self.cache.snapshot()
        usable = snap.present & snap.ready & ~snap.cordoned
        by_class = self.cache.vms_by_class()

        def total(arr: np.ndarray) -> Resources:
            return Resources.of(arr[:, usable].sum(axis=1)) if arr.size else Resources()
        return CapacitySummary(
            int(snap.present.sum()), int((snap.present & snap.ready).sum()),
            int((snap.present & snap.cordoned).sum()), total(snap.capacity), total(snap.allocatable),
            total(snap.guaranteed), total(snap.committed), by_class)

