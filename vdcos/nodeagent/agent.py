"""The node agent: registers its host, keeps a lease alive, and reconciles the VMs the scheduler
assigned to it (etcd /vdcos/assign/<node>/) with what its hypervisor driver runs.

Restart-safe: desired state comes from etcd and actual state from the driver, so an agent that
restarts adopts the running domains it finds and creates nothing twice.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import replace
from typing import Callable

from vdcos.errors import FailedPrecondition, VdcosError
from vdcos.host.netlink import NetworkError
from vdcos.host.network import HostNetwork
from vdcos.migration import records
from vdcos.model import (Allocation, AllocEntry, Assignment, Disk, Migration, MigrationPhase, MigrationProgress,
                         NodeSpec, NodeStatus, Resources, SchedulerConfig, VmPhase, VmStatus, VolumeState, decode,
                         dumps, qos)
from vdcos.model.fit import fits
from vdcos.nodeagent.driver import (DiskCopy, DomainInfo, DomainState, DomainStats, DriverError, HypervisorDriver,
                                    MigrationCancelled)
from vdcos.reconcile import Backoff
from vdcos.state import keys
from vdcos.state.store import Compare, Delete, Event, Get, Put, Store, StoreError, TxnResult
from vdcos.storagepool import volumes
from vdcos.storagepool.pool import StoragePools, VolumeReconciler
from vdcos.vswitch import networks
from vdcos.vswitch.controller import SwitchController, wait_bound

log = logging.getLogger("vdcos.nodeagent")
GIB = 1024 ** 3


def node_records(spec: NodeSpec, lease: int, used: Resources = Resources(), pid: int = 0,
                 ready: bool = True) -> list[Put]:
    """What a node publishes: its spec (kept) and its status (under the lease: gone when it dies)."""
    return [Put(keys.node_spec(spec.name), dumps(spec)),
            Put(keys.node_status(spec.name), dumps(NodeStatus(ready, time.time(), used, pid)), lease)]


def register(store: Store, spec: NodeSpec, ttl: int, pid: int = 0) -> int:
    lease = store.grant_lease(ttl)
    store.txn([], node_records(spec, lease, pid=pid))
    return lease


class NodeAgent:
    def __init__(self, store: Store, spec: NodeSpec, driver: HypervisorDriver, *,
                 lease_ttl: int = 10, resync_s: float = 5.0, status_s: float = 5.0,
                 network: HostNetwork | None = None, pools: StoragePools | None = None) -> None:
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
        self._grown: dict[str, int] = {}  # disk file -> GiB a running guest's disk was checked to have
        # Per VM: a VM whose reconcile failed waits out its own backoff; the others go on.
        self._backoff = Backoff(base_s=1.0, max_s=60.0)

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> NodeAgent:
        self.lease = register(self.store, self.spec, self.lease_ttl, os.getpid())
        if self.network is not None:
            self.switch = SwitchController(self.store, self.spec.name, self.network, lambda: self.lease,
                                           self._switch_wanted).start()
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

    def _on_watch_error(self, e: Exception) -> None:
        log.error("assignment watch failed (%s); the resync loop re-reads assignments", e)
        self._cancel = None

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
    def _heartbeat_loop(self) -> None:
        # Only the keepalive here: a hypervisor call can block for longer than the lease's TTL
        # (libvirt waits for a domain's job lock while a migration or backup holds it), and a
        # busy host must not look dead.
        while not self._stop.wait(self.lease_ttl / 3):
            try:
                if self.store.keepalive(self.lease) <= 0:
                    log.warning("lease %x expired; registering again", self.lease)
                    self.lease = register(self.store, self.spec, self.lease_ttl, os.getpid())
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
                self.store.txn([], node_records(self.spec, self.lease, used, os.getpid(), ready)[1:])
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
        """The host's use (for the node status) and each running domain's (for the VM statuses)."""
        stats: dict[str, DomainStats] = {}
        for d in self.driver.list_domains():
            if d.state is DomainState.RUNNING:
                try:
                    stats[d.name] = self.driver.stats(d.name)
                except DriverError:
                    continue
        vcpus = sum(a.spec.resources.vcpus for n, a in self._desired.items() if n in stats)
        return Resources(vcpus, sum(s.memory_used_mib for s in stats.values()), 0, 0), stats

    # --- reconcile ----------------------------------------------------------------------
    def _reconcile_loop(self) -> None:
        synced = 0.0
        while not self._stop.is_set():
            self._wake.wait(self.resync_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self._cancel is None:
                    self._subscribe()
                if self.storage is not None and (self._volumes_changed.is_set()
                                                 or time.monotonic() - synced >= self.resync_s):
                    self._volumes_changed.clear()
                    synced = time.monotonic()
                    try:
                        self.storage.sync()
                    except Exception as e:  # a broken pool must not stop the VMs' reconcile
                        log.warning("storage pools: %s", e)
                self.reconcile()
            except (StoreError, DriverError) as e:
                log.warning("reconcile failed, retrying: %s", e)
            except Exception:
                log.exception("reconcile round failed, retrying")

    def _subscribe(self) -> None:
        """Read the assignments, then watch from just after that read: nothing is missed."""
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
        self._cancel = None  # the next reconcile round subscribes again

    # --- live migration -----------------------------------------------------------------
    def _on_migration_watch_error(self, e: Exception) -> None:
        log.error("migration watch failed (%s); subscribing again", e)
        self._cancel_migrations = None

    def _on_migrations(self, events: list[Event], revision: int) -> None:
        self._on_migration_records([(decode(Migration, json.loads(ev.kv.value)), ev.kv.mod_revision)
                                    for ev in events if ev.kind == "put"])

    def _on_migration_records(self, ms: list[tuple[Migration, int]]) -> None:
        me = self.spec.name
        with self._lock:
            for m, rev in ms:
                if me not in (m.source, m.destination):
                    continue
                if m.phase.done:
                    if self._migrations.pop(m.id, None) is not None and m.phase is MigrationPhase.COMPLETED:
                        self._settling[m.vm] = (rev, m.destination)
                    continue
                self._migrations[m.id] = m
                if m.source != me:
                    continue
                if m.cancel_requested and m.id in self._running:
                    self._running[m.id].set()
                if m.id not in self._running:
                    self._running[m.id] = threading.Event()
                    threading.Thread(target=self._carry_out, args=(m,), name=f"migrate-{m.vm}", daemon=True).start()
        self._wake.set()
        if self.switch:
            self.switch.wake()

    def migrating(self) -> set[str]:
        """VMs in a migration to or from here: reconcile leaves them to the migration."""
        with self._lock:
            self._settling = {vm: s for vm, s in self._settling.items() if s[0] > self._assign_rev}
            return {m.vm for m in self._migrations.values()} | set(self._settling)

    def _carry_out(self, m: Migration) -> None:
        try:
            self._migrate(m)
        except (StoreError, VdcosError, DriverError) as e:
            log.error("migration %s of %s: %s", m.id, m.vm, e)
        finally:
            with self._lock:
                self._running.pop(m.id, None)
            self._wake.set()

    def _migrate(self, m: Migration) -> None:
        dest = self.store.get(keys.node_spec(m.destination))
        dest_uri = decode(NodeSpec, json.loads(dest.value)).hypervisor_uri if dest else ""
        if m.phase is MigrationPhase.RUNNING:
            # This agent restarted mid-migration: finish it from where the guest is now.
            where = self.driver.locate(m.vm, dest_uri) if dest_uri else ""
            if where == "destination":
                records.finish(self.store, m.id, MigrationPhase.COMPLETED, "completed while the agent restarted")
            else:
                records.finish(self.store, m.id, MigrationPhase.FAILED,
                               "interrupted by an agent restart; the VM stays on " + (m.source if where else "no host"))
            return
        cancel = self._running[m.id]
        started = records.update(self.store, m.id, lambda x: replace(x, phase=MigrationPhase.RUNNING)
                                 if x.phase is MigrationPhase.PENDING and not x.cancel_requested else None)
        if started is None or started.phase is not MigrationPhase.RUNNING:
            if started is not None and started.cancel_requested:
                records.finish(self.store, m.id, MigrationPhase.CANCELLED, "cancelled before it started")
            return
        if not dest_uri:
            records.finish(self.store, m.id, MigrationPhase.FAILED, f"{m.destination} publishes no hypervisor URI")
            return
        last = [0.0]
        last_progress = [MigrationProgress()]

        def progress(p: MigrationProgress) -> None:
            last_progress[0] = p
            if time.monotonic() - last[0] < 0.2:
                return
            last[0] = time.monotonic()
            try:
                cur = records.update(self.store, m.id, lambda x: replace(x, progress=p)
                                     if x.phase is MigrationPhase.RUNNING else None)
            except (StoreError, VdcosError):
                return
            if cur is not None and cur.cancel_requested:
                cancel.set()

        if not self._destination_plugged(m):
            records.finish(self.store, m.id, MigrationPhase.FAILED,
                           f"{m.destination}'s switch did not plug the VM's NICs; the VM keeps running on {m.source}")
            return
        vols = volumes.list_volumes(self.store, vm=m.vm)
        try:
            copies = self._copy_targets(m, cancel)
        except VdcosError as e:
            records.finish(self.store, m.id, MigrationPhase.CANCELLED if cancel.is_set() else MigrationPhase.FAILED,
                           f"{e}; the VM keeps running on {m.source}")
            return
        log.info("migrating %s to %s (%s, %d disk(s) copied)", m.vm, m.destination, m.id, len(copies))
        try:
            res = self.driver.migrate(m.vm, dest_uri, m.options, progress, cancel,
                                      shared_disks=any(not v.ties_to_host for v in vols), copies=copies)
        except MigrationCancelled as e:
            records.finish(self.store, m.id, MigrationPhase.CANCELLED, str(e))
            return
        except DriverError as e:
            # An error after the switch-over still leaves the guest on the destination.
            if self.driver.locate(m.vm, dest_uri) == "destination":
                records.finish(self.store, m.id, MigrationPhase.COMPLETED, f"completed with an error: {e}")
            else:
                records.finish(self.store, m.id, MigrationPhase.FAILED, f"{e}; the VM keeps running on {m.source}")
            return
        self._unplug_moved(m.vm)
        mem = res.memory_processed_bytes
        final = MigrationProgress("completed", max(mem, last_progress[0].memory_total_bytes), mem, 0,
                                  res.iterations, res.downtime_ms, res.total_ms)
        done = records.finish(self.store, m.id, MigrationPhase.COMPLETED,
                              "post-copy" if res.postcopy else "", res.downtime_ms, res.total_ms, final)
        log.info("migrated %s to %s: downtime %d ms, %d ms in all (%s)", m.vm, m.destination,
                 res.downtime_ms, res.total_ms, done.phase.value)

    def _copy_targets(self, m: Migration, cancel: threading.Event, timeout: float = 120.0) -> tuple[DiskCopy, ...]:
        """Copy-storage: wait until the destination's agent has made a file for each local
        volume of the VM (records.start accounted their space there)."""
        deadline = time.monotonic() + timeout
        while True:
            moving = [v for v in volumes.list_volumes(self.store, vm=m.vm) if v.migration == m.id]
            failed = next((v for v in moving if v.message), None)
            if failed is not None:
                raise FailedPrecondition(f"volume {failed.name}: {failed.message}")
            if all(v.target_path for v in moving):
                return tuple(DiskCopy(v.path, v.target_path) for v in moving)
            if cancel.is_set():
                raise FailedPrecondition("cancelled while the destination made its volume copies")
            if time.monotonic() > deadline:
                raise FailedPrecondition(f"{m.destination} did not make the files for "
                                         f"{', '.join(v.name for v in moving if not v.target_path)} in {timeout:.0f} s")
            time.sleep(0.1)

    def _destination_plugged(self, m: Migration, timeout: float = 30.0) -> bool:
        """OVN's multi-chassis binding: the destination's switch has the VM's ports (and every
        host sends the VM's traffic to both hosts) before the guest moves, so none is lost."""
        a = self._desired.get(m.vm)
        if self.switch is None or a is None or not a.spec.networks:
            return True
        ports = networks.vm_ports(self.store, m.vm, a.spec.networks)
        return wait_bound(self.store, ports, m.destination, timeout)

    def _unplug_moved(self, vm: str) -> None:
        """The guest runs on the destination now: stop sending its traffic here at once."""
        with self._lock:
            self._moved_away.add(vm)
        if self.switch is not None:
            try:
                self.switch.sync()
            except (StoreError, NetworkError, OSError) as e:
                log.warning("unplugging %s after its move: %s (the next sync retries)", vm, e)

    def _admission_records(self) -> tuple[SchedulerConfig, tuple[AllocEntry, ...]]:
        """The overcommit ratios, and the space this host's local volumes and snapshots hold
        (in its allocation record): admission counts both as the scheduler's commit did."""
        config_kvs, alloc_kvs = self.store.txn([], [Get(keys.CONFIG), Get(keys.alloc(self.spec.name))]).gets
        config = decode(SchedulerConfig, json.loads(config_kvs[0].value)) if config_kvs else SchedulerConfig()
        alloc = decode(Allocation, json.loads(alloc_kvs[0].value)) if alloc_kvs else Allocation(self.spec.name)
        return config, tuple(e for e in alloc.entries if e.is_storage)

    def reconcile(self) -> None:
        """One round over every VM: each is reconciled on its own (`_item`), so a VM whose
        domain, disks or NICs fail reports its error and waits out its own backoff while the
        others go on."""
        moving = self.migrating()
        with self._lock:
            desired = {n: a for n, a in self._desired.items() if n not in moving}
        actual = {d.name: d for d in self.driver.list_domains()}
        # A disk's checked size matters while a guest here has it open: forget the others.
        open_disks = {p for d in actual.values() for p in d.disks}
        self._grown = {p: gib for p, gib in self._grown.items() if p in open_disks}
        for name in sorted(set(actual) - set(desired) - moving):
            self._item(name, self._remove, name)
        with self._lock:
            held = [a for n, a in self._desired.items() if n in moving]
        for gone in set(self._reported) - set(desired) - moving:
            self._reported.pop(gone, None)  # moved away or deleted: nothing more to report
        self._backoff.keep([*desired, *actual])
        to_start = set(desired) - set(actual)
        config, storage = self._admission_records() if to_start else (None, ())
        # A VM moving away still holds its resources here until the move succeeds; local
        # volumes hold their disk space whether a VM uses them or not.
        admitted = [Allocation(self.spec.name, tuple(
            AllocEntry(a.spec.name, a.qos.qos_class, a.reserved) for a in (*desired.values(), *held)
            if a.spec.name in actual) + storage)]
        for name in sorted(desired):
            self._item(name, self._reconcile_vm, desired[name], actual.get(name), config, admitted)

    def _item(self, vm: str, fn: Callable[..., None], *args: object) -> None:
        """Reconcile one VM, unless it is waiting out the backoff of an earlier failure. A
        failure is the VM's alone: logged, reported in its status, tried again after its backoff."""
        if not self._backoff.due(vm):
            return
        try:
            fn(*args)
            self._backoff.succeeded(vm)
        except Exception as e:
            delay = self._backoff.failed(vm, e)
            log.warning("vm %s: %s (retry in %.1f s)", vm, e, delay,
                        exc_info=not isinstance(e, (StoreError, DriverError, VdcosError, NetworkError, OSError)))
            prev = self._reported.get(vm)
            try:
                self._report(vm, prev.phase if prev else VmPhase.SCHEDULED,
                             f"reconcile failed: {e} (retry in {delay:.0f} s)"[:300])
            except Exception as report_error:  # the store itself may be what failed
                log.warning("vm %s: its status could not be written: %s", vm, report_error)

    def _remove(self, name: str) -> None:
        self.driver.destroy(name)
        self.store.txn([Compare(keys.assign(self.spec.name, name), "create", "==", 0)],
                       [Delete(keys.vm_status(name))])
        self._reported.pop(name, None)
        log.info("destroyed %s (no longer assigned here)", name)

    def _reconcile_vm(self, a: Assignment, dom: DomainInfo | None, config: SchedulerConfig | None,
                      admitted: list[Allocation]) -> None:
        """`admitted[0]` is what the host holds: a VM started here joins it for the next one."""
        name = a.spec.name
        if dom is None:
            assert config is not None
            # Agent admission: the same fit function the scheduler and its commit used.
            short = fits(self.spec.capacity, config.overcommit, admitted[0].without(name),
                         qos.placed_request(a.spec, a.reserved), a.qos.qos_class)
            if short:
                why = ", ".join(f"{s.dimension} {s.pool}: requested {s.requested}, free {s.free}" for s in short)
                self._report(name, VmPhase.FAILED, f"refused by node admission: {why}")
                return
            vanished = self._reported.get(name) or self._last_status(name)
            disks = self._disks(a)
            if disks is None:
                self._report(name, VmPhase.SCHEDULED, "waiting for its volumes to be created")
                return
            nics = self.switch.plug(name, a.spec.networks) if self.switch and a.spec.networks else []
            self.driver.define(a.spec, a.qos, tuple(nics), disks)
            self.driver.start(name)
            self.created.append(name)
            admitted[0] = admitted[0].with_entry(AllocEntry(name, a.qos.qos_class, a.reserved))
            note = "restarted: its domain disappeared" if vanished and vanished.phase is VmPhase.RUNNING else ""
            self._report(name, VmPhase.RUNNING, note)
            return
        if dom.qos != a.qos:
            self.driver.apply_qos(name, a.qos)
        if self.storage is not None and dom.state is DomainState.RUNNING:
            self._plug_disks(a, dom)
        if dom.state is DomainState.RUNNING:
            prev = self._reported.get(name)
            # A VM that recovered from a failed round says so no more.
            keep = prev.message if prev and not prev.message.startswith("reconcile failed:") else ""
            self._report(name, VmPhase.RUNNING, keep)
        else:
            self.driver.start(name)
            self._report(name, VmPhase.RUNNING, f"started again (was {dom.state.value})")

    def _plug_disks(self, a: Assignment, dom: DomainInfo) -> None:
        """Volumes attached to or detached from a running VM: hot-plug or unplug its disks."""
        want = self._disks(a)
        if want is None:
            return  # a volume is not made yet; the next round looks again
        paths = {d.path for d in want}
        try:  # one guest's refusal must not hold up the other VMs' reconcile
            for d in want:
                if d.path not in dom.disks:
                    self.driver.attach_disk(a.spec.name, d, a.qos)
                    log.info("attached volume %s to %s", d.volume, a.spec.name)
                if self._grown.get(d.path) != d.size_gib:
                    # Resized: the file grows through the QEMU that has it open; the guest sees it.
                    self.driver.grow_disk(a.spec.name, d.path, d.size_gib * GIB)
                    self._grown[d.path] = d.size_gib
            for p in dom.disks:
                if p not in paths:
                    self.driver.detach_disk(a.spec.name, p)
                    log.info("detached %s from %s", p, a.spec.name)
        except DriverError as e:
            log.warning("volumes of %s: %s (the next round tries again)", a.spec.name, e)

    def _disks(self, a: Assignment) -> tuple[Disk, ...] | None:
        """The VM's volumes as disks, in its order; None while one is not made yet."""
        out = []
        for i, name in enumerate(a.spec.volumes):
            try:
                v = volumes.get(self.store, name)
            except VdcosError:
                return None
            if v.state is not VolumeState.AVAILABLE or (v.ties_to_host and v.host != self.spec.name):
                return None
            out.append(Disk(v.name, v.path, "vd" + "abcdefghijklmnopqrstuvwxyz"[i], v.size_gib))
        return tuple(out)

    def _last_status(self, vm: str) -> VmStatus | None:
        """What this host last said about a VM, from etcd: a restarted agent remembers too."""
        kv = self.store.get(keys.vm_status(vm))
        st = decode(VmStatus, json.loads(kv.value)) if kv else None
        return st if st is not None and st.node == self.spec.name else None

    def _report(self, vm: str, phase: VmPhase, message: str = "", fresh: DomainStats | None = None) -> None:
        """Status is written only while the assignment exists, so a deleted VM never comes back.
        With `fresh` usage it is written even when phase and message are unchanged."""
        prev = self._reported.get(vm)
        if fresh is None and prev is not None and prev.phase is phase and prev.message == message:
            return
        stats = fresh or (self.driver.stats(vm) if phase is VmPhase.RUNNING else None)
        status = VmStatus(phase, self.spec.name, message, time.time(),
                          stats.cpu_time_ns if stats else 0, stats.memory_used_mib if stats else 0)
        res: TxnResult = self.store.txn([Compare(keys.assign(self.spec.name, vm), "create", ">", 0)],
                                        [Put(keys.vm_status(vm), dumps(status))])
        if res.succeeded:
            self._reported[vm] = status
