"""The node agent's live migrations: it watches /vdcos/migrations/ and carries out the ones that
leave its host (the source's agent drives libvirt's migration and records its progress and
outcome), and keeps a VM that moves to or from here out of the VM reconcile until its
assignment has moved. Methods of NodeAgent, kept apart by concern, as the kubelet splits its own
(kubelet_pods.go, kubelet_volumes.go, ...)."""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace
from typing import Callable

from vdcos import logs
from vdcos.errors import FailedPrecondition, VdcosError
from vdcos.host.netlink import NetworkError
from vdcos.metrics.agent import AgentMetrics
from vdcos.migration import records
from vdcos.model import Assignment, Migration, MigrationPhase, MigrationProgress, NodeSpec, decode
from vdcos.nodeagent.driver import DiskCopy, DriverError, HypervisorDriver, MigrationCancelled
from vdcos.state import keys
from vdcos.state.store import Event, Store, StoreError
from vdcos.storagepool import volumes
from vdcos.vswitch import networks
from vdcos.vswitch.controller import SwitchController, wait_bound

log = logging.getLogger("vdcos.nodeagent")


class Migrations:
    """The migration half of NodeAgent (agent.py holds the state it reads)."""

    store: Store
    spec: NodeSpec
    driver: HypervisorDriver
    switch: SwitchController | None
    _lock: threading.Lock
    _wake: threading.Event
    _desired: dict[str, Assignment]
    _migrations: dict[str, Migration]
    _running: dict[str, threading.Event]
    _settling: dict[str, tuple[int, str]]
    _assign_rev: int
    _moved_away: set[str]
    _cancel_migrations: Callable[[], None] | None
    metrics: AgentMetrics | None

    def _on_migration_watch_error(self, e: Exception) -> None:
        log.error("migration watch failed (%s); subscribing again", e)
        self._cancel_migrations = None
        self._wake.set()

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
                if m.id not in self._running and not m.reported:  # reported: the control plane finishes it
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
        with logs.request(m.request_id):
            self._carry_out_logged(m)

    def _carry_out_logged(self, m: Migration) -> None:
        try:
            self._migrate(m)
        except Exception as e:
            # Never leave it RUNNING with both hosts held: report its outcome by where the guest is.
            log.exception("migration %s of %s failed", m.id, m.vm)
            if self.metrics is not None:
                self.metrics.error("migration")
            self._settle_after_error(m, e)
        finally:
            with self._lock:
                self._running.pop(m.id, None)
            self._wake.set()

    def _settle_after_error(self, m: Migration, error: Exception, attempts: int = 30) -> None:
        """Reports the outcome of a migration whose worker hit an unexpected error: COMPLETED if
        the guest runs on the destination, else FAILED. Tries for about a minute (etcd may be
        electing a leader); after that the agent's restart path reports it, or the migration
        controller asks for its cancellation once its record has stalled."""
        for attempt in range(attempts):
            try:
                dest = self.store.get(keys.node_spec(m.destination))
                uri = decode(NodeSpec, json.loads(dest.value)).hypervisor_uri if dest else ""
                where = self.driver.locate(m.vm, uri) if uri else ""
                if where == "destination":
                    records.report(self.store, m.id, MigrationPhase.COMPLETED, f"completed with an error: {error}")
                else:
                    records.report(self.store, m.id, MigrationPhase.FAILED,
                                   f"{error}; the VM keeps running on {m.source}")
                return
            except Exception as e:
                log.warning("migration %s: cannot record its outcome yet (%s)", m.id, e)
                time.sleep(min(5.0, 0.2 * 2 ** attempt))

    def _migrate(self, m: Migration) -> None:
        dest = self.store.get(keys.node_spec(m.destination))
        dest_uri = decode(NodeSpec, json.loads(dest.value)).hypervisor_uri if dest else ""
        if m.phase is MigrationPhase.RUNNING:
            # This agent restarted mid-migration: report it from where the guest is now.
            where = self.driver.locate(m.vm, dest_uri) if dest_uri else ""
            if where == "destination":
                records.report(self.store, m.id, MigrationPhase.COMPLETED, "completed while the agent restarted")
            else:
                records.report(self.store, m.id, MigrationPhase.FAILED,
                               "interrupted by an agent restart; the VM stays on " + (m.source if where else "no host"))
            return
        cancel = self._running[m.id]
        started = records.update(self.store, m.id, lambda x: replace(x, phase=MigrationPhase.RUNNING)
                                 if x.phase is MigrationPhase.PENDING and not x.cancel_requested else None)
        if started is None or started.phase is not MigrationPhase.RUNNING:
            if started is not None and started.cancel_requested:
                records.report(self.store, m.id, MigrationPhase.CANCELLED, "cancelled before it started")
            return
        if not dest_uri:
            records.report(self.store, m.id, MigrationPhase.FAILED, f"{m.destination} publishes no hypervisor URI")
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
            records.report(self.store, m.id, MigrationPhase.FAILED,
                           f"{m.destination}'s switch did not plug the VM's NICs; the VM keeps running on {m.source}")
            return
        vols = volumes.list_volumes(self.store, vm=m.vm)
        try:
            copies = self._copy_targets(m, cancel)
        except VdcosError as e:
            records.report(self.store, m.id, MigrationPhase.CANCELLED if cancel.is_set() else MigrationPhase.FAILED,
                           f"{e}; the VM keeps running on {m.source}")
            return
        log.info("migrating %s to %s (%s, %d disk(s) copied)", m.vm, m.destination, m.id, len(copies))
        try:
            res = self.driver.migrate(m.vm, dest_uri, m.options, progress, cancel,
                                      shared_disks=any(not v.ties_to_host for v in vols), copies=copies)
        except MigrationCancelled as e:
            records.report(self.store, m.id, MigrationPhase.CANCELLED, str(e))
            return
        except DriverError as e:
            # An error after the switch-over still leaves the guest on the destination.
            if self.driver.locate(m.vm, dest_uri) == "destination":
                records.report(self.store, m.id, MigrationPhase.COMPLETED, f"completed with an error: {e}")
            else:
                records.report(self.store, m.id, MigrationPhase.FAILED, f"{e}; the VM keeps running on {m.source}")
            return
        self._unplug_moved(m.vm)
        mem = res.memory_processed_bytes
        final = MigrationProgress("completed", max(mem, last_progress[0].memory_total_bytes), mem, 0,
                                  res.iterations, res.downtime_ms, res.total_ms)
        done = records.report(self.store, m.id, MigrationPhase.COMPLETED,
                              "post-copy" if res.postcopy else "", res.downtime_ms, res.total_ms, final)
        log.info("migrated %s to %s: downtime %d ms, %d ms in all (reported %s)", m.vm, m.destination,
                 res.downtime_ms, res.total_ms, done.reported)

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
