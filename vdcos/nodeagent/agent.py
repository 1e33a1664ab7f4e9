"""The node agent: registers its host, keeps a lease alive, and reconciles the VMs the scheduler
assigned to it (etcd /vdcos/assign/<node>/) with what its hypervisor driver runs.

Restart-safe: desired state comes from etcd and actual state from the driver, so an agent that
restarts adopts the running domains it finds and creates nothing twice.

This module holds the agent's state, its lifecycle, its lease and status loops and its
watches; the VMs' reconcile is in vms.py and the live migrations in migrations.py (methods of
the same agent, split by concern); the storage pools' and the switch ports' reconcilers are
their packages' (storagepool/pool.py, vswitch/controller.py), each with its own loop.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from vdcos.events import Emit, nothing
from vdcos.host import fencer
from vdcos.host.network import HostNetwork
from vdcos.metrics.agent import DEVICE_PERIOD_S, AgentMetrics, HostSample, MigrationSample, SwitchSample, VmSample
from vdcos.model import Assignment, Migration, NodeSpec, NodeStatus, Resources, VmPhase, VmStatus, decode, dumps
from vdcos.nodeagent.driver import DomainStats, DriverError, HypervisorDriver
from vdcos.nodeagent.migrations import Migrations
from vdcos.nodeagent.vms import VmReconciler
from vdcos.reconcile import Backoff
from vdcos.state import keys
from vdcos.state.store import Event, Put, Store, StoreError
from vdcos.storagepool.pool import StoragePools, VolumeReconciler
from vdcos.vswitch.controller import SwitchController

log = logging.getLogger("vdcos.nodeagent")
STOPPING_POLL_S = 0.1  # reconcile period while a guest is shutting down


def node_records(spec: NodeSpec, lease: int, used: Resources = Resources(), pid: int = 0,
                 ready: bool = True, metrics: str = "") -> list[Put]:
    """What a node publishes: its spec (kept) and its status (under the lease: gone when it dies)."""
    return [Put(keys.node_spec(spec.name), dumps(spec)),
            Put(keys.node_status(spec.name), dumps(NodeStatus(ready, time.time(), used, pid, metrics)), lease)]


def register(store: Store, spec: NodeSpec, ttl: int, pid: int = 0, metrics: str = "") -> int:
    lease = store.grant_lease(ttl)
    store.txn([], node_records(spec, lease, pid=pid, metrics=metrics))
    return lease


class NodeAgent(Migrations, VmReconciler):
    def __init__(self, store: Store, spec: NodeSpec, driver: HypervisorDriver, *,
                 lease_ttl: int = 10, resync_s: float = 5.0, status_s: float = 5.0,
                 network: HostNetwork | None = None, pools: StoragePools | None = None,
                 fence_root: Path | None = None, metrics: AgentMetrics | None = None,
                 metrics_address: str = "", emit: Emit = nothing) -> None:
        self.store = store
        self.spec = spec
        self.driver = driver
        self.lease_ttl = lease_ttl
        self.resync_s = resync_s
        self.status_s = status_s
        self.lease = 0
        self._desired: dict[str, Assignment] = {}
        self._reported: dict[str, VmStatus] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cancel: Callable[[], None] | None = None
        self._cancel_migrations: Callable[[], None] | None = None
        # Migrations this host takes part in, and the ones this process is carrying out.
        self._migrations: dict[str, Migration] = {}
        self._running: dict[str, threading.Event] = {}
        # Completed moves whose assignment change this agent has not seen yet (the two watches
        # deliver independently): vm -> (revision of the completion, its destination).
        self._settling: dict[str, tuple[int, str]] = {}
        self._assign_rev = 0
        # VMs that left by live migration while their assignment here is not yet gone:
        # their NICs are unplugged at once, so the network follows the guest.
        self._moved_away: set[str] = set()
        self.network = network
        self.switch: SwitchController | None = None
        self.created: list[str] = []  # domains this process defined (tests: nothing twice)
        self.storage = (VolumeReconciler(store, spec.name, pools, lambda: self.lease, guests=driver)
                        if pools else None)
        self._cancel_volumes: Callable[[], None] | None = None
        # Set by the volume watch: the pools are synced then, and every resync period, not on
        # every assignment or migration event that wakes the reconcile loop.
        self._volumes_changed = threading.Event()
        self._volumes_changed.set()
        # Set when a volume may have been closed here (a domain gone, a disk unplugged, the
        # volumes changed): the next reconcile round frees the ones this host held open.
        self._closed_volumes = threading.Event()
        self._closed_volumes.set()
        self._grown: dict[str, int] = {}  # disk file -> GiB a running guest's disk was checked to have
        self._reboots: dict[str, int] = {}
        self._stopping: dict[str, float] = {}
        # Per VM: a VM whose reconcile failed waits out its own backoff; the others go on.
        self._backoff = Backoff(base_s=1.0, max_s=60.0)
        # The host's fencer (vdcos/host/fencer.py), petted after every renewal of the lease.
        self.fence_root = fence_root
        # Prometheus metrics (metrics/agent.py): the status loop's samples, served where
        # `metrics_address` says (published in the node's status for discovery).
        self.metrics = metrics
        self.metrics_address = metrics_address
        self.emit = emit  # the datacenter's events (vdcos/events/)
        self._devices_read = float("-inf")
        if metrics is not None:
            metrics.migrations = self._leaving

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> NodeAgent:
        sent = time.monotonic()
        self.lease = register(self.store, self.spec, self.lease_ttl, os.getpid(), self.metrics_address)
        self._pet(sent)
        cap = self.spec.capacity
        self.emit("node.joined", self.spec.name, node=self.spec.name,
                  message=f"agent registered: {cap.vcpus} vCPUs, {cap.memory_mib} MiB, {cap.disk_gib} GiB "
                          f"({self.spec.driver})")
        if self.network is not None:
            self.switch = SwitchController(self.store, self.spec.name, self.network, lambda: self.lease,
                                           self._switch_wanted).start()
            if self.metrics is not None:
                self.metrics.switch = self._switch_sample
        self._subscribe()
        for target, name in ((self._reconcile_loop, "reconcile"), (self._heartbeat_loop, "heartbeat"),
                             (self._status_loop, "status")):
            t = threading.Thread(target=target, name=f"{name}-{self.spec.name}", daemon=True)
            t.start()
            self._threads.append(t)
        self._wake.set()
        log.info("node %s registered (lease %x, %d assigned VMs)", self.spec.name, self.lease, len(self._desired))
        return self

    def stop(self, *, revoke: bool = False) -> None:
        self._stop.set()
        self._wake.set()
        if self._cancel:
            self._cancel()
        if self._cancel_migrations:
            self._cancel_migrations()
        if self._cancel_volumes:
            self._cancel_volumes()
        for t in self._threads:
            t.join(5)
        if self.storage is not None:
            self.storage.wait_copies(5)
        if self.switch:
            self.switch.stop()
        if revoke and self.lease:
            self.store.revoke_lease(self.lease)

    def _relist_assignments(self) -> None:
        with self._lock:
            cancel, self._cancel = self._cancel, None
        if cancel:
            cancel()
        self._wake.set()

    def _on_watch_error(self, e: Exception) -> None:
        log.error("assignment watch failed (%s); listing again", e)
        self._cancel = None
        self._wake.set()

    def _on_assign(self, events: list[Event], revision: int) -> None:
        with self._lock:
            self._assign_rev = max(self._assign_rev, revision)
            for ev in events:
                vm = ev.kv.key.rsplit("/", 1)[1]
                if ev.kind == "put":
                    self._desired[vm] = decode(Assignment, json.loads(ev.kv.value))
                else:
                    self._desired.pop(vm, None)
                    self._moved_away.discard(vm)
        self._wake.set()
        if self.switch:
            self.switch.wake()

    def _switch_sample(self) -> SwitchSample | None:
        if self.switch is None:
            return None
        c = self.switch.counters
        last = c.last
        return SwitchSample(last.tunnels if last else 0, last.local_ports if last else 0, last.flows if last else 0,
                            c.syncs, c.sync_failures, c.flow_pushes, c.flow_push_seconds)

    def _switch_wanted(self) -> dict[str, int]:
        """The VMs whose NICs belong on this host's switch now, with their bandwidth caps:
        the ones assigned here, and the ones migrating here (bound before the guest moves).
        A move that completed here stays wanted until its assignment arrives: the migration
        watch may deliver the completion first, and a sync in between would delete the tap
        the guest's QEMU has open (a CI run lost every ping after the move)."""
        me = self.spec.name
        with self._lock:
            out = {n: a.qos.network_mbps_limit for n, a in self._desired.items() if n not in self._moved_away}
            arriving = [m.vm for m in self._migrations.values() if m.destination == me]
            arriving += [vm for vm, (rev, dest) in self._settling.items() if dest == me and rev > self._assign_rev]
        for vm in arriving:
            out.setdefault(vm, 0)
        return out

    # --- heartbeat ----------------------------------------------------------------------
    def _pet(self, sent: float) -> None:
        """Tell the fencer the lease holds until `sent` + TTL: etcd cannot expire it sooner
        (the renewal reached it after it was sent). A pet that fails is a pet missed."""
        if self.fence_root is None:
            return
        try:
            fencer.pet(self.fence_root, sent + self.lease_ttl, self.lease)
        except OSError as e:
            log.error("could not pet the fencer: %s", e)

    def _heartbeat_loop(self) -> None:
        # Only the keepalive here: a hypervisor call can block for longer than the lease's TTL
        # (libvirt waits for a domain's job lock while a migration or backup holds it), and a
        # busy host must not look dead. A renewal waits a third of the TTL at most, so that a
        # hung one is sent again while the lease can still be saved.
        period = self.lease_ttl / 3
        while not self._stop.wait(period):
            try:
                sent = time.monotonic()
                if self.store.keepalive(self.lease, timeout=period) > 0:
                    self._pet(sent)
                else:
                    log.warning("lease %x expired; registering again", self.lease)
                    sent = time.monotonic()
                    self.lease = register(self.store, self.spec, self.lease_ttl, os.getpid(), self.metrics_address)
                    # While the lease was gone the HA controller may have moved this host's VMs
                    # (and this agent may have been frozen through it): list the assignments
                    # again before anything is started or kept.
                    self._relist_assignments()
                    self._pet(sent)
            except StoreError as e:
                log.warning("heartbeat failed: %s", e)
            except Exception:  # the lease must outlive any bug below it
                log.exception("heartbeat round failed")

    def _status_loop(self) -> None:
        while not self._stop.wait(self.status_s):
            try:
                ready = True
                try:
                    used, stats = self._usage()
                except DriverError as e:
                    # The lease stays alive (the VMs still run), but no new VM comes here
                    # while this agent cannot reach its hypervisor.
                    log.warning("hypervisor unreachable, node reports NotReady: %s", e)
                    used, stats, ready = Resources(), {}, False
                self.store.txn([], node_records(self.spec, self.lease, used, os.getpid(), ready,
                                                self.metrics_address)[1:])
                self._refresh_usage(stats)
            except StoreError as e:
                log.warning("status report failed: %s", e)
            except Exception:
                log.exception("status round failed")

    def _refresh_usage(self, stats: dict[str, DomainStats]) -> None:
        """Observed CPU time and memory of each running VM, every status period."""
        moving = self.migrating()
        for vm, st in list(self._reported.items()):
            if st.phase is VmPhase.RUNNING and vm not in moving and vm in stats:
                self._report(vm, VmPhase.RUNNING, st.message, fresh=stats[vm])

    def _usage(self) -> tuple[Resources, dict[str, DomainStats]]:
        """The host's use (for the node status) and each running domain's (for the VM statuses,
        metering and the metrics): CPU time and memory every time, disk and NIC counters (a
        hypervisor round trip each) once a device period."""
        period = self.metrics.period_s if self.metrics is not None else DEVICE_PERIOD_S
        devices = time.monotonic() - self._devices_read >= period
        stats = self.driver.all_stats(devices=devices)
        with self._lock:
            desired = dict(self._desired)
        vcpus = sum(a.spec.resources.vcpus for n, a in desired.items() if n in stats)
        used = Resources(vcpus, sum(s.memory_used_mib for s in stats.values()), 0, 0)
        if devices:
            self._devices_read = time.monotonic()
        if self.metrics is not None:
            before = self.metrics.sample.vms if self.metrics.sample else {}
            cap = self.spec.capacity
            self.metrics.sample = HostSample(cap.vcpus, cap.memory_mib, cap.disk_gib, used.vcpus, used.memory_mib, {
                vm: VmSample(desired[vm].spec.project if vm in desired else "", s.cpu_time_ns, s.memory_used_mib,
                             {d[0]: d[1:] for d in s.disks} if devices else (old.disks if (old := before.get(vm)) else {}),
                             {n[0]: n[1:] for n in s.nics} if devices else (old.nics if (old := before.get(vm)) else {}),
                             s.throttled_ns)
                for vm, s in stats.items()})
        return used, stats

    def _leaving(self) -> list[MigrationSample]:
        """Live migrations this host carries out now, with their last progress."""
        with self._lock:
            ms = [m for m in self._migrations.values() if m.source == self.spec.name and m.id in self._running]
        return [MigrationSample(m.id, m.vm, m.destination, m.progress.memory_remaining_bytes,
                                m.progress.memory_total_bytes) for m in ms]

    # --- reconcile ----------------------------------------------------------------------
    def _reconcile_loop(self) -> None:
        synced = 0.0
        while not self._stop.is_set():
            # A guest asked to shut down is looked at often: its stop ends when it powers off.
            self._wake.wait(STOPPING_POLL_S if self._stopping else self.resync_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if None in (self._cancel, self._cancel_migrations) or (
                        self.storage is not None and self._cancel_volumes is None):
                    self._subscribe()
                if self.storage is not None and (self._volumes_changed.is_set()
                                                 or time.monotonic() - synced >= self.resync_s):
                    self._volumes_changed.clear()
                    self._closed_volumes.set()
                    synced = time.monotonic()
                    try:
                        self.storage.sync()
                    except Exception as e:  # a broken pool must not stop the VMs' reconcile
                        log.warning("storage pools: %s", e)
                        if self.metrics is not None:
                            self.metrics.error("volume")
                self.reconcile()
            except (StoreError, DriverError) as e:
                log.warning("reconcile failed, retrying: %s", e)
            except Exception:
                log.exception("reconcile round failed, retrying")

    def _subscribe(self) -> None:
        """Each watch that is not running: read its records, then watch from just after that
        read, so nothing is missed (a watch lost to a dead etcd member or a compaction comes
        back this way)."""
        if self._cancel is None:
            kvs, rev = self.store.get_prefix(keys.assign_prefix(self.spec.name))
            with self._lock:
                self._desired = {a.spec.name: a for a in (decode(Assignment, json.loads(kv.value)) for kv in kvs)}
                self._assign_rev = max(self._assign_rev, rev)
            self._cancel = self.store.watch_prefix(keys.assign_prefix(self.spec.name), rev + 1,
                                                   self._on_assign, self._on_watch_error)
        if self._cancel_migrations is None:
            kvs, rev = self.store.get_prefix(keys.MIGRATIONS)
            self._on_migration_records([(decode(Migration, json.loads(kv.value)), kv.mod_revision) for kv in kvs])
            self._cancel_migrations = self.store.watch_prefix(keys.MIGRATIONS, rev + 1, self._on_migrations,
                                                              self._on_migration_watch_error)
        if self.storage is not None and self._cancel_volumes is None:
            # Any volume change: make or remove files, then define VMs that waited for them.
            self._cancel_volumes = self.store.watch_prefix(keys.VOLUMES, self.store.get_prefix(keys.VOLUMES)[1] + 1,
                                                           self._on_volumes, self._on_volume_watch_error)

    def _on_volumes(self, events: list[Event], revision: int) -> None:
        self._volumes_changed.set()
        self._wake.set()

    def _on_volume_watch_error(self, e: Exception) -> None:
        log.error("volume watch failed (%s); subscribing again", e)
        self._cancel_volumes = None
        self._volumes_changed.set()
        self._wake.set()  # the next reconcile round subscribes again
