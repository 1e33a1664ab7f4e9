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
from typing import Callable

from vdcos.model import (AllocEntry, Allocation, Assignment, NodeSpec, NodeStatus, Resources,
                         SchedulerConfig, VmPhase, VmStatus, decode)
from vdcos.nodeagent.driver import DomainState, DriverError, HypervisorDriver
from vdcos.scheduler.core.fit import fits
from vdcos.scheduler.worker import dumps
from vdcos.state import keys
from vdcos.state.store import Compare, Delete, Event, Put, Store, StoreError, TxnResult

log = logging.getLogger("vdcos.nodeagent")


def node_records(spec: NodeSpec, lease: int, used: Resources = Resources(), pid: int = 0) -> list[Put]:
    """What a node publishes: its spec (kept) and its status (under the lease: gone when it dies)."""
    return [Put(keys.node_spec(spec.name), dumps(spec)),
            Put(keys.node_status(spec.name), dumps(NodeStatus(True, time.time(), used, pid)), lease)]


def register(store: Store, spec: NodeSpec, ttl: int, pid: int = 0) -> int:
    lease = store.grant_lease(ttl)
    store.txn([], node_records(spec, lease, pid=pid))
    return lease


class NodeAgent:
    def __init__(self, store: Store, spec: NodeSpec, driver: HypervisorDriver, *,
                 lease_ttl: int = 10, resync_s: float = 5.0, status_s: float = 5.0) -> None:
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
        self.created: list[str] = []  # domains this process defined (tests: nothing twice)

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> NodeAgent:
        self.lease = register(self.store, self.spec, self.lease_ttl, os.getpid())
        self._subscribe()
        for target, name in ((self._reconcile_loop, "reconcile"), (self._heartbeat_loop, "heartbeat")):
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
        for t in self._threads:
            t.join(5)
        if revoke and self.lease:
            self.store.revoke_lease(self.lease)

    def _on_watch_error(self, e: Exception) -> None:
        log.error("assignment watch failed (%s); the resync loop re-reads assignments", e)
        self._cancel = None

    def _on_assign(self, events: list[Event], revision: int) -> None:
        with self._lock:
            for ev in events:
                vm = ev.kv.key.rsplit("/", 1)[1]
                if ev.kind == "put":
                    self._desired[vm] = decode(Assignment, json.loads(ev.kv.value))
                else:
                    self._desired.pop(vm, None)
        self._wake.set()

    # --- heartbeat ----------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self._stop.wait(self.lease_ttl / 3):
            try:
                if self.store.keepalive(self.lease) <= 0:
                    log.warning("lease %x expired; registering again", self.lease)
                    self.lease = register(self.store, self.spec, self.lease_ttl, os.getpid())
                if time.monotonic() - last_status >= self.status_s:
                    last_status = time.monotonic()
                    self.store.txn([], node_records(self.spec, self.lease, self._usage(), os.getpid())[1:])
            except StoreError as e:
                log.warning("heartbeat failed: %s", e)

    def _usage(self) -> Resources:
        mem = 0
        vcpus = 0
        for d in self.driver.list_domains():
            if d.state is DomainState.RUNNING:
                try:
                    mem += self.driver.stats(d.name).memory_used_mib
                except DriverError:
                    continue
                a = self._desired.get(d.name)
                vcpus += a.spec.resources.vcpus if a else 0
        return Resources(vcpus, mem, 0, 0)

    # --- reconcile ----------------------------------------------------------------------
    def _reconcile_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.resync_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self._cancel is None:
                    self._subscribe()
                self.reconcile()
            except (StoreError, DriverError) as e:
                log.warning("reconcile failed, retrying: %s", e)

    def _subscribe(self) -> None:
        """Read the assignments, then watch from just after that read: nothing is missed."""
        kvs, rev = self.store.get_prefix(keys.assign_prefix(self.spec.name))
        with self._lock:
            self._desired = {a.spec.name: a for a in (decode(Assignment, json.loads(kv.value)) for kv in kvs)}
        self._cancel = self.store.watch_prefix(keys.assign_prefix(self.spec.name), rev + 1,
                                               self._on_assign, self._on_watch_error)

    def _config(self) -> SchedulerConfig:
        kv = self.store.get(keys.CONFIG)
        return decode(SchedulerConfig, json.loads(kv.value)) if kv else SchedulerConfig()

    def reconcile(self) -> None:
        with self._lock:
            desired = dict(self._desired)
        actual = {d.name: d for d in self.driver.list_domains()}
        for name in sorted(set(actual) - set(desired)):
            self.driver.destroy(name)
            self.store.txn([Compare(keys.assign(self.spec.name, name), "create", "==", 0)],
                           [Delete(keys.vm_status(name))])
            self._reported.pop(name, None)
            log.info("destroyed %s (no longer assigned here)", name)
        admitted = Allocation(self.spec.name, tuple(
            AllocEntry(n, a.qos.qos_class, a.reserved) for n, a in desired.items() if n in actual))
        config = self._config() if set(desired) - set(actual) else None
        for name in sorted(desired):
            a = desired[name]
            dom = actual.get(name)
            if dom is None:
                assert config is not None
                # Agent admission: the same fit function the scheduler and its commit used.
                short = fits(self.spec.capacity, config.overcommit, admitted.without(name),
                             a.spec.resources, a.qos.qos_class)
                if short:
                    why = ", ".join(f"{s.dimension} {s.pool}: requested {s.requested}, free {s.free}" for s in short)
                    self._report(name, VmPhase.FAILED, f"refused by node admission: {why}")
                    continue
                vanished = self._reported.get(name, None)
                self.driver.define(a.spec, a.qos)
                self.driver.start(name)
                self.created.append(name)
                admitted = admitted.with_entry(AllocEntry(name, a.qos.qos_class, a.reserved))
                note = "restarted: its domain disappeared" if vanished and vanished.phase is VmPhase.RUNNING else ""
                self._report(name, VmPhase.RUNNING, note)
                continue
            if dom.qos != a.qos:
                self.driver.apply_qos(name, a.qos)
            if dom.state is DomainState.RUNNING:
                self._report(name, VmPhase.RUNNING, self._reported.get(name, VmStatus(VmPhase.RUNNING, "")).message)
            else:
                self.driver.start(name)
                self._report(name, VmPhase.RUNNING, f"started again (was {dom.state.value})")

    def _report(self, vm: str, phase: VmPhase, message: str = "") -> None:
        """Status is written only while the assignment exists, so a deleted VM never comes back."""
        prev = self._reported.get(vm)
        if prev is not None and prev.phase is phase and prev.message == message:
            return
        stats = self.driver.stats(vm) if phase is VmPhase.RUNNING else None
        status = VmStatus(phase, self.spec.name, message, time.time(),
                          stats.cpu_time_ns if stats else 0, stats.memory_used_mib if stats else 0)
        res: TxnResult = self.store.txn([Compare(keys.assign(self.spec.name, vm), "create", ">", 0)],
                                        [Put(keys.vm_status(vm), dumps(status))])
        if res.succeeded:
            self._reported[vm] = status
