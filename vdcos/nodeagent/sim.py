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

from vdcos.model import QosSettings, Resources, VmSpec, decode, encode
from vdcos.nodeagent.driver import DomainInfo, DomainState, DomainStats, DriverError


@dataclass(frozen=True, slots=True)
class SimDomain:
    name: str
    uuid: str
    vcpus: int
    memory_mib: int
    state: DomainState
    qos: QosSettings
    started_at: float = 0.0


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
            return [DomainInfo(d.name, d.uuid, d.state, d.qos) for d in self._domains.values()]

    def define(self, spec: VmSpec, qos: QosSettings) -> DomainInfo:
        with self._lock:
            dom = self._domains.get(spec.name)
            if dom is None:
                dom = SimDomain(spec.name, str(uuid.uuid4()), spec.resources.vcpus,
                                spec.resources.memory_mib, DomainState.STOPPED, qos)
                self._domains[spec.name] = dom
                self._save()
            return DomainInfo(dom.name, dom.uuid, dom.state, dom.qos)

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

    def destroy(self, name: str) -> None:
        with self._lock:
            if self._domains.pop(name, None) is not None:
                self._save()

    def apply_qos(self, name: str, qos: QosSettings) -> None:
        with self._lock:
            self._domains[name] = replace(self._get(name), qos=qos)
            self._save()

    def stats(self, name: str) -> DomainStats:
        with self._lock:
            dom = self._get(name)
        if dom.state is not DomainState.RUNNING:
            return DomainStats(0, 0)
        # A sim guest idles at 5% of its vCPUs and touches half of its memory.
        busy = (time.time() - dom.started_at) * dom.vcpus * 0.05
        return DomainStats(int(busy * 1e9), dom.memory_mib // 2)

    def migrate(self, name: str, destination_uri: str, *, max_downtime_ms: int = 25) -> None:
        """destination_uri: sim://<path of the destination host's state file>."""
        if not destination_uri.startswith("sim://"):
            raise DriverError(f"sim driver cannot migrate to {destination_uri!r}")
        dest = Path(destination_uri[len("sim://"):])
        with self._lock:
            dom = self._get(name)
            others = json.loads(dest.read_text()) if dest.exists() else []
            dest.write_text(json.dumps([*others, encode(dom)]))
            del self._domains[name]
            self._save()

