"""The node agent's VMs: each assigned VM reconciled on its own against what the hypervisor runs
(created after admission with the scheduler's own fit, started again, its QoS, disks and NICs
brought in line, destroyed once no longer assigned), and its status reported. One VM that fails
reports why and waits out its own backoff while the others go on. Methods of NodeAgent, kept
apart by concern, as the kubelet splits its own."""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

from vdcos import logs
from vdcos.errors import VdcosError
from vdcos.events import Emit
from vdcos.host.netlink import NetworkError
from vdcos.metrics.agent import AgentMetrics
from vdcos.model import (Allocation, AllocEntry, Assignment, Disk, Nic, NodeSpec, PlacementRecord, PowerState,
                         RestartPolicy, SchedulerConfig, VmPhase, VmSpec, VmStatus, VolumeState, decode, dumps, qos)
from vdcos.model.fit import fits
from vdcos.nodeagent.driver import DomainInfo, DomainState, DomainStats, DriverError, HypervisorDriver
from vdcos.reconcile import Backoff
from vdcos.state import keys
from vdcos.state.store import Compare, Delete, Get, Put, Store, StoreError, TxnResult
from vdcos.storagepool import volumes
from vdcos.storagepool.pool import VolumeReconciler
from vdcos.vswitch.controller import SwitchController

log = logging.getLogger("vdcos.nodeagent")
GIB = 1024 ** 3
_DOWN = (DomainState.STOPPED, DomainState.CRASHED)


def _size(spec: VmSpec) -> tuple[int, int]:
    """(vCPUs, memory MiB) its domain is defined with (a VM asking 0 vCPUs gets one)."""
    return max(spec.resources.vcpus, 1), spec.resources.memory_mib


class VmReconciler:
    """The VM half of NodeAgent (agent.py holds the state it reads; `migrating()` is the
    migration half's)."""

    store: Store
    spec: NodeSpec
    driver: HypervisorDriver
    switch: SwitchController | None
    storage: VolumeReconciler | None
    created: list[str]
    _lock: threading.Lock
    _desired: dict[str, Assignment]
    _reported: dict[str, VmStatus]
    _grown: dict[str, int]
    _reboots: dict[str, int]  # per VM: the reboots of its spec carried out (or found done)
    _stopping: dict[str, float]  # per VM: when a graceful stop asked of its guest turns forced (monotonic)
    _backoff: Backoff
    _closed_volumes: threading.Event
    metrics: AgentMetrics | None
    emit: Emit

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
        if self.storage is not None and self._closed_volumes.is_set():
            self._closed_volumes.clear()
            try:
                self._let_go_volumes()
            except Exception:
                self._closed_volumes.set()
                raise

    def _let_go_volumes(self) -> None:
        """Volumes that left their VM while a guest here had them open: once no domain here has
        the file open, they are free for another guest (and for offline copies)."""
        held = [v for v in volumes.list_volumes(self.store) if v.open_on == self.spec.name]
        if not held:
            return
        open_paths = {p for d in self.driver.list_domains() for p in d.disks}
        for v in held:
            if v.path not in open_paths:
                volumes.let_go(self.store, v.name, self.spec.name)
                log.info("volume %s closed here: free for another guest", v.name)

    def _item(self, vm: str, fn: Callable[..., None], *args: object) -> None:
        """Reconcile one VM, unless it is waiting out the backoff of an earlier failure. A
        failure is the VM's alone: logged, reported in its status, tried again after its backoff."""
        if not self._backoff.due(vm):
            return
        a = self._desired.get(vm)
        with logs.request(a.request_id if a else ""):
            self._item_logged(vm, fn, *args)

    def _item_logged(self, vm: str, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
            self._backoff.succeeded(vm)
        except Exception as e:
            delay = self._backoff.failed(vm, e)
            if self.metrics is not None:
                self.metrics.error("vm")
            log.warning("vm %s: %s (retry in %.1f s)", vm, e, delay,
                        exc_info=not isinstance(e, (StoreError, DriverError, VdcosError, NetworkError, OSError)))
            prev = self._reported.get(vm)
            try:
                self._report(vm, prev.phase if prev else VmPhase.SCHEDULED,
                             f"reconcile failed: {e} (retry in {delay:.0f} s)"[:300])
            except Exception as report_error:  # the store itself may be what failed
                log.warning("vm %s: its status could not be written: %s", vm, report_error)

    def _remove(self, name: str) -> None:
        why = self._kept(name)
        if why:
            log.info("vm %s: runs here unassigned, kept: %s", name, why)
            return
        self.driver.destroy(name)
        self._closed_volumes.set()
        self.store.txn([Compare(keys.assign(self.spec.name, name), "create", "==", 0)],
                       [Delete(keys.vm_status(self.spec.name, name))])
        for per_vm in (self._reported, self._reboots, self._stopping):
            per_vm.pop(name, None)
        log.info("destroyed %s (no longer assigned here)", name)

    def _reconcile_vm(self, a: Assignment, dom: DomainInfo | None, config: SchedulerConfig | None,
                      admitted: list[Allocation]) -> None:
        """`admitted[0]` is what the host holds: a VM started here joins it for the next one."""
        name = a.spec.name
        want = a.spec.power.state
        if want in (PowerState.OFF, PowerState.SHELVED) and (dom is None or dom.state in _DOWN):
            self._reboots[name] = a.spec.power.reboots  # a guest started later is a new one
            self._stopping.pop(name, None)
            self._report_power(a, VmPhase.STOPPED, "stopped", "vm.stopped")
            return
        if dom is None:
            assert config is not None
            # Agent admission: the same fit function the scheduler and its commit used.
            short = fits(self.spec.capacity, config.overcommit, admitted[0].without(name),
                         qos.placed_request(a.spec, a.reserved), a.qos.qos_class)
            if short:
                why = ", ".join(f"{s.dimension} {s.pool}: requested {s.requested}, free {s.free}" for s in short)
                if (prev := self._reported.get(name)) is None or prev.phase is not VmPhase.FAILED:
                    self.emit("vm.failed", name, node=self.spec.name, project=a.spec.project,
                              message=f"refused by node admission: {why}")
                self._report(name, VmPhase.FAILED, f"refused by node admission: {why}")
                return
            if not self._owns(a):
                return
            vanished = self._reported.get(name) or self._last_status(name)
            if self._stays_down(a, vanished, "gone"):
                return
            devices = self._devices(a)
            if devices is None:
                return
            self.driver.define(a.spec, a.qos, *devices)
            self.driver.start(name)
            self._reboots[name] = a.spec.power.reboots  # a new guest: no reboot of an old one is due
            self.created.append(name)
            admitted[0] = admitted[0].with_entry(AllocEntry(name, a.qos.qos_class, a.reserved))
            note = ("restarted: its domain disappeared" if vanished and vanished.phase is VmPhase.RUNNING
                    else vanished.message if vanished and vanished.message.startswith("restarted by HA") else "")
            log.info("started %s%s", name, f" ({note})" if note else "")
            self.emit("vm.started", name, node=self.spec.name, project=a.spec.project, message=note or "started")
            self._report(name, VmPhase.RUNNING, note)
            if want is PowerState.PAUSED:
                self._power(a, DomainState.RUNNING)
            return
        if want in (PowerState.ON, PowerState.PAUSED) and dom.size != (0, 0) and dom.size != _size(a.spec):
            self._resize(a, dom)
            return
        if dom.qos != a.qos:
            self.driver.apply_qos(name, a.qos)
        if self.storage is not None and dom.state is DomainState.RUNNING:
            self._plug_disks(a, dom)
        if dom.state in (DomainState.RUNNING, DomainState.PAUSED):
            if self._power(a, dom.state):
                return
            prev = self._reported.get(name)
            # A VM that recovered from a failed round says so no more.
            keep = prev.message if prev and not prev.message.startswith("reconcile failed:") else ""
            self._report(name, VmPhase.RUNNING, keep)
        else:
            if self._stays_down(a, self._reported.get(name) or self._last_status(name), dom.state.value):
                return
            if not self._owns(a):
                return
            self.driver.start(name)
            self._reboots[name] = a.spec.power.reboots
            last = self._reported.get(name)
            again = last is not None and last.phase is VmPhase.STOPPED and last.message == "stopped"
            message = "started" if again else f"started again (was {dom.state.value})"
            self.emit("vm.started", name, node=self.spec.name, project=a.spec.project, message=message)
            self._report(name, VmPhase.RUNNING, message)
            if want is PowerState.PAUSED:
                self._power(a, DomainState.RUNNING)

    def _power(self, a: Assignment, state: DomainState) -> bool:
        """A running or suspended guest brought to its spec's power state: stopped (the ACPI
        button, then forced after the spec's timeout; a suspended guest cannot hear the button),
        suspended, resumed or rebooted. True when the guest is not simply running now."""
        name, power = a.spec.name, a.spec.power
        if power.state in (PowerState.OFF, PowerState.SHELVED):
            why = self._shut_down(a, state, power.hard, f"stopping: ACPI shutdown asked, forced off after "
                                  f"{power.stop_timeout_s} s")
            if why:
                self._stopping.pop(name, None)
                self._report_power(a, VmPhase.STOPPED, "stopped", "vm.stopped", why)
            return True
        self._stopping.pop(name, None)
        if power.state is PowerState.PAUSED:
            if state is DomainState.RUNNING:
                self.driver.suspend(name)
            self._report_power(a, VmPhase.PAUSED, "suspended", "vm.suspended")
            return True
        if state is DomainState.PAUSED:
            self.driver.resume(name)
            self.emit("vm.resumed", name, node=self.spec.name, project=a.spec.project, message="resumed")
            self._report(name, VmPhase.RUNNING, "resumed")
            return True
        done = self._reboots.get(name)
        if done is None:  # first seen by this process: what this host reported, else nothing due
            last = self._reported.get(name) or self._last_status(name)
            done = self._reboots[name] = last.reboots if last is not None else power.reboots
        if done < power.reboots:
            self.driver.reboot(name, power.hard)
            self._reboots[name] = power.reboots
            how = "reset" if power.hard else "rebooted (ACPI)"
            log.info("vm %s: %s", name, how)
            self.emit("vm.rebooted", name, node=self.spec.name, project=a.spec.project, message=how)
            self._report(name, VmPhase.RUNNING, how)
            return True
        return False

    def _shut_down(self, a: Assignment, state: DomainState, hard: bool, waiting: str) -> str:
        """One round of bringing a running guest down: the ACPI power button first (reported
        as `waiting`), then forced off once its spec's stop timeout has passed; forced at once
        when `hard`, or when suspended (a paused guest cannot hear the button). Why it was
        forced off this round, or "" while the guest is given its time."""
        name, timeout = a.spec.name, a.spec.power.stop_timeout_s
        deadline = self._stopping.get(name)
        if hard or state is DomainState.PAUSED or (deadline is not None and time.monotonic() >= deadline):
            self.driver.stop(name)
            why = "forced off" if hard or state is DomainState.PAUSED else \
                f"forced off: the guest did not shut down within {timeout} s"
            log.info("vm %s: %s", name, why)
            return why
        if deadline is None:
            self.driver.shutdown(name)
            self._stopping[name] = time.monotonic() + timeout
            log.info("vm %s: asked the guest to shut down (forced off in %d s): %s", name, timeout, waiting)
            self._report(name, VmPhase.RUNNING, waiting)
        return ""

    def _resize(self, a: Assignment, dom: DomainInfo) -> None:
        """A guest whose definition has another size than its spec (ResizeVm): shut down (ACPI,
        forced after the spec's stop timeout), redefined at the new size, started again."""
        name = a.spec.name
        vcpus, memory = _size(a.spec)
        if dom.state in (DomainState.RUNNING, DomainState.PAUSED):
            if self._shut_down(a, dom.state, False, f"resizing to {vcpus} vCPU, {memory} MiB: shutting down"):
                self._stopping.setdefault(name, time.monotonic())  # polled on until it is redefined
            return
        devices = self._devices(a)
        if devices is None:
            return
        self.driver.redefine(a.spec, a.qos, *devices)
        self._stopping.pop(name, None)
        log.info("vm %s: redefined at %d vCPU, %d MiB", name, vcpus, memory)
        if not self._owns(a):
            return
        self.driver.start(name)
        self._reboots[name] = a.spec.power.reboots
        message = f"resized to {vcpus} vCPU, {memory} MiB"
        self.emit("vm.started", name, node=self.spec.name, project=a.spec.project, message=message)
        self._report(name, VmPhase.RUNNING, message)
        if a.spec.power.state is PowerState.PAUSED:
            self._power(a, DomainState.RUNNING)

    def _report_power(self, a: Assignment, phase: VmPhase, message: str, event: str, why: str = "") -> None:
        """Report a power state reached, with its event the first time it is reported."""
        prev = self._reported.get(a.spec.name)
        if prev is None or prev.phase is not phase:
            self.emit(event, a.spec.name, node=self.spec.name, project=a.spec.project, message=why or message)
        self._report(a.spec.name, phase, message)

    def _stays_down(self, a: Assignment, last: VmStatus | None, state: str) -> bool:
        """A guest that ran here and is no longer running, by its restart policy: `never` stays
        down (also after its host came back); `on-host-failure` stays down when it stopped
        while this agent watched it (a host failure restarts it elsewhere, not here)."""
        policy = a.spec.ha.restart_policy
        ran = last is not None and (last.phase is VmPhase.RUNNING or last.message.startswith("guest stopped"))
        seen = self._reported.get(a.spec.name)
        if not ran or policy is RestartPolicy.ALWAYS or (policy is RestartPolicy.ON_HOST_FAILURE and seen is None):
            return False
        if seen is None or seen.phase is not VmPhase.STOPPED:
            self.emit("vm.stopped", a.spec.name, node=self.spec.name, project=a.spec.project,
                      message=f"guest stopped ({state}); restart policy {policy.value} does not start it again")
        self._report(a.spec.name, VmPhase.STOPPED, f"guest stopped ({state}); restart policy {policy.value} does "
                     "not start it again")
        return True

    def _kept(self, name: str) -> str:
        """Why a guest this host runs without an assignment must not be destroyed, read from etcd
        just before (the fencing token's other half): the watches that say what moves here are
        separate streams, and a destination whose migration watch was late destroyed a guest
        that had just moved in (CI). Placed here: its assignment is on its way; a migration in
        flight: its outcome decides. Empty: the VM is deleted or placed elsewhere."""
        placement, migration = self.store.txn([], [Get(keys.vm_placement(name)), Get(keys.vm_migration(name))]).gets
        rec = decode(PlacementRecord, json.loads(placement[0].value)) if placement else None
        if migration:
            return f"its migration {migration[0].value.decode()} is in flight"
        if rec is not None and rec.node == self.spec.name:
            return "it is placed here (its assignment has not arrived yet)"
        return ""

    def _owns(self, a: Assignment) -> bool:
        """The fencing token, read from etcd just before a guest is started: the VM's placement
        is on this host at the assignment's epoch. An agent that was frozen or cut off while
        the HA controller restarted the VM elsewhere holds a stale assignment, and starts
        nothing from it (its watch delivers the removal next)."""
        kv = self.store.get(keys.vm_placement(a.spec.name))
        rec = decode(PlacementRecord, json.loads(kv.value)) if kv else None
        if rec is not None and rec.node == self.spec.name and rec.epoch == a.epoch:
            return True
        log.warning("vm %s: not started: its assignment here is at epoch %d, its placement is %s", a.spec.name,
                    a.epoch, f"on {rec.node} at epoch {rec.epoch}" if rec else "gone")
        return False

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
                    self._closed_volumes.set()
                    log.info("detached %s from %s", p, a.spec.name)
        except DriverError as e:
            log.warning("volumes of %s: %s (the next round tries again)", a.spec.name, e)

    def _devices(self, a: Assignment) -> tuple[tuple[Nic, ...], tuple[Disk, ...]] | None:
        """The NICs (plugged into the host's switch) and disks a definition of the VM gets; None,
        reported, while a volume is not made yet."""
        disks = self._disks(a)
        if disks is None:
            self._report(a.spec.name, VmPhase.SCHEDULED, "waiting for its volumes to be created")
            return None
        nics = self.switch.plug(a.spec.name, a.spec.networks) if self.switch and a.spec.networks else []
        return tuple(nics), disks

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
        kv = self.store.get(keys.vm_status(self.spec.name, vm))
        return decode(VmStatus, json.loads(kv.value)) if kv else None

    def _report(self, vm: str, phase: VmPhase, message: str = "", fresh: DomainStats | None = None) -> None:
        """Status is written only while the assignment exists, so a deleted VM never comes back.
        With `fresh` usage it is written even when phase and message are unchanged."""
        prev = self._reported.get(vm)
        reboots = self._reboots.get(vm, prev.reboots if prev else 0)
        if fresh is None and prev is not None and (prev.phase, prev.message, prev.reboots) == (phase, message, reboots):
            return
        stats = fresh or (self.driver.stats(vm) if phase is VmPhase.RUNNING else None)
        # NIC counters come with the reads that ask for devices; between them the last stands.
        net = sum(n[1] + n[2] for n in stats.nics) if stats and stats.nics else (prev.network_bytes if prev else 0)
        status = VmStatus(phase, self.spec.name, message, time.time(),
                          stats.cpu_time_ns if stats else 0, stats.memory_used_mib if stats else 0, net, reboots)
        res: TxnResult = self.store.txn([Compare(keys.assign(self.spec.name, vm), "create", ">", 0)],
                                        [Put(keys.vm_status(self.spec.name, vm), dumps(status))])
        if res.succeeded:
            self._reported[vm] = status
