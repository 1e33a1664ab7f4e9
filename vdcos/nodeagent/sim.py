"""The `sim` hypervisor: in memory, optionally persisted to one JSON file per host so that, like
libvirt, its domains outlive the agent process. Fast enough for 10,000 hosts in one process."""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from vdcos.model import Disk, MigrationOptions, MigrationProgress, Nic, QosSettings, Resources, VmSpec, decode, encode
from vdcos.nodeagent.driver import (DiskCopy, DomainInfo, DomainState, DomainStats, DriverError, MigrationCancelled,
                                    MigrationResult)


@dataclass(frozen=True, slots=True)
class SimDomain:
    name: str
    uuid: str
    vcpus: int
    memory_mib: int
    state: DomainState
    qos: QosSettings
    started_at: float = 0.0
    disks: tuple[str, ...] = ()  # volume paths, in device order


class SimDriver:
    name = "sim"

    def __init__(self, capacity: Resources, state_file: Path | None = None) -> None:
        self._capacity = capacity
        self._file = state_file
        self._lock = threading.Lock()
        self._domains: dict[str, SimDomain] = {}
        self._mtime = 0
        self._reload()

    def _reload(self) -> None:
        """The file is the hypervisor's truth: someone else (a test, a migration) may change it."""
        if self._file is None or not self._file.exists():
            return
        st = self._file.stat().st_mtime_ns
        if st != self._mtime:
            self._domains = {d["name"]: decode(SimDomain, d) for d in json.loads(self._file.read_text())}
            self._mtime = st

    def _save(self) -> None:
        if self._file is None:
            return
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps([encode(d) for d in self._domains.values()]))
        os.replace(tmp, self._file)
        self._mtime = self._file.stat().st_mtime_ns

    def _get(self, name: str) -> SimDomain:
        dom = self._domains.get(name)
        if dom is None:
            raise DriverError(f"domain {name!r} not defined")
        return dom

    def host_capacity(self) -> Resources:
        return self._capacity

    def list_domains(self) -> list[DomainInfo]:
        with self._lock:
            self._reload()
            return [DomainInfo(d.name, d.uuid, d.state, d.qos, d.disks, (d.vcpus, d.memory_mib))
                    for d in self._domains.values()]

    def define(self, spec: VmSpec, qos: QosSettings, nics: tuple[Nic, ...] = (),
               disks: tuple[Disk, ...] = ()) -> DomainInfo:
        with self._lock:
            dom = self._domains.get(spec.name)
            if dom is None:
                dom = SimDomain(spec.name, str(uuid.uuid4()), max(spec.resources.vcpus, 1),
                                spec.resources.memory_mib, DomainState.STOPPED, qos,
                                disks=tuple(d.path for d in disks))
                self._domains[spec.name] = dom
                self._save()
            return DomainInfo(dom.name, dom.uuid, dom.state, dom.qos)

    def redefine(self, spec: VmSpec, qos: QosSettings, nics: tuple[Nic, ...] = (),
                 disks: tuple[Disk, ...] = ()) -> None:
        with self._lock:
            dom = self._get(spec.name)
            if dom.state is not DomainState.STOPPED:
                raise DriverError(f"{spec.name} runs: only a stopped domain is redefined")
            self._domains[spec.name] = replace(dom, vcpus=max(spec.resources.vcpus, 1), memory_mib=spec.resources.memory_mib,
                                               qos=qos, disks=tuple(d.path for d in disks))
            self._save()

    def start(self, name: str) -> None:
        with self._lock:
            dom = self._get(name)
            if dom.state is not DomainState.RUNNING:
                self._domains[name] = replace(dom, state=DomainState.RUNNING, started_at=time.time())
                self._save()

    def stop(self, name: str) -> None:
        with self._lock:
            dom = self._get(name)
            if dom.state is not DomainState.STOPPED:
                self._domains[name] = replace(dom, state=DomainState.STOPPED, started_at=0.0)
                self._save()

    def _set(self, name: str, state: DomainState, only_from: tuple[DomainState, ...], started_at: float) -> None:
        with self._lock:
            dom = self._get(name)
            if dom.state in only_from:
                self._domains[name] = replace(dom, state=state, started_at=started_at or dom.started_at)
                self._save()

    def shutdown(self, name: str) -> None:
        # A sim guest obeys the power button at once.
        self.stop(name)

    def reboot(self, name: str, hard: bool = False) -> None:
        self._set(name, DomainState.RUNNING, (DomainState.RUNNING,), time.time())

    def suspend(self, name: str) -> None:
        self._set(name, DomainState.PAUSED, (DomainState.RUNNING,), 0.0)

    def resume(self, name: str) -> None:
        self._set(name, DomainState.RUNNING, (DomainState.PAUSED,), 0.0)

    def destroy(self, name: str) -> None:
        with self._lock:
            if self._domains.pop(name, None) is not None:
                self._save()

    def apply_qos(self, name: str, qos: QosSettings) -> None:
        with self._lock:
            self._domains[name] = replace(self._get(name), qos=qos)
            self._save()

    def attach_disk(self, name: str, disk: Disk, qos: QosSettings) -> None:
        with self._lock:
            dom = self._get(name)
            if disk.path not in dom.disks:
                self._domains[name] = replace(dom, disks=(*dom.disks, disk.path))
                self._save()

    def detach_disk(self, name: str, path: str) -> None:
        with self._lock:
            dom = self._get(name)
            self._domains[name] = replace(dom, disks=tuple(p for p in dom.disks if p != path))
            self._save()

    def grow_disk(self, name: str, path: str, size_bytes: int) -> None:
        with self._lock:
            self._get(name)

    def backup_disk(self, name: str, path: str, target: str) -> bool:
        with self._lock:
            dom = self._domains.get(name)
            return dom is not None and dom.state is DomainState.RUNNING and path in dom.disks

    def stats(self, name: str) -> DomainStats:
        with self._lock:
            dom = self._get(name)
        if dom.state is not DomainState.RUNNING:
            return DomainStats(0, 0)
        # A sim guest idles at 5% of its vCPUs and touches half of its memory.
        busy = (time.time() - dom.started_at) * dom.vcpus * 0.05
        return DomainStats(int(busy * 1e9), dom.memory_mib // 2)

    def all_stats(self, devices: bool = True) -> dict[str, DomainStats]:
        with self._lock:
            running = [n for n, d in self._domains.items() if d.state is DomainState.RUNNING]
        out = {}
        for name in running:
            try:
                out[name] = self.stats(name)
            except DriverError:
                continue  # gone meanwhile
        return out

    def migrate(self, name: str, destination_uri: str, options: MigrationOptions,
                on_progress: Callable[[MigrationProgress], None] | None = None,
                cancel: threading.Event | None = None, shared_disks: bool = False,
                copies: tuple[DiskCopy, ...] = ()) -> MigrationResult:
        """destination_uri: sim://<path of the destination host's state file>. Instant."""
        dest = self._dest(destination_uri)
        if cancel is not None and cancel.is_set():
            raise MigrationCancelled(f"migration of {name} cancelled; it keeps running here")
        with self._lock:
            dom = self._get(name)
            mem = dom.memory_mib << 20
            if on_progress is not None:
                on_progress(MigrationProgress("copying", mem, mem, 0, 1, options.max_downtime_ms, 0))
            others = [d for d in (json.loads(dest.read_text()) if dest.exists() else []) if d["name"] != name]
            moved = {c.source_path: c.destination_path for c in copies}
            dom = replace(dom, disks=tuple(moved.get(p, p) for p in dom.disks))
            dest.write_text(json.dumps([*others, encode(dom)]))
            del self._domains[name]
            self._save()
        return MigrationResult(downtime_ms=0, total_ms=0, memory_processed_bytes=mem, iterations=1)

    @staticmethod
    def _dest(uri: str) -> Path:
        if not uri.startswith("sim://"):
            raise DriverError(f"sim driver cannot migrate to {uri!r}")
        return Path(uri[len("sim://"):])

    def locate(self, name: str, destination_uri: str) -> str:
        with self._lock:
            self._reload()
            if name in self._domains:
                return "source"
        dest = self._dest(destination_uri)
        if dest.exists() and any(d["name"] == name for d in json.loads(dest.read_text())):
            return "destination"
        return ""
