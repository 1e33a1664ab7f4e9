"""The hypervisor-driver protocol the node agent reconciles through. Shaped for libvirt:
every call is idempotent (define may exist, destroy if exists) and raises on real failure."""
from __future__ import annotations

import enum
from dataclasses import dataclass
import threading
from typing import Callable, Protocol

from vdcos.model import Disk, MigrationOptions, MigrationProgress, Nic, QosSettings, Resources, VmSpec


class DomainState(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    CRASHED = "crashed"
    PAUSED = "paused"  # suspended on request (a migration's own pause reads as running)


@dataclass(frozen=True, slots=True)
class DomainInfo:
    name: str
    uuid: str
    state: DomainState
    qos: QosSettings | None = None
    disks: tuple[str, ...] = ()  # the files of its disks
    size: tuple[int, int] = (0, 0)  # (vCPUs, memory MiB) its definition gives the guest


@dataclass(frozen=True, slots=True)
class DomainStats:
    cpu_time_ns: int
    memory_used_mib: int
    # Per disk (its target, e.g. vda): bytes read, bytes written, read and write requests.
    disks: tuple[tuple[str, int, int, int, int], ...] = ()
    # Per NIC (its host-side device): bytes received and sent, packets received and sent.
    nics: tuple[tuple[str, int, int, int, int], ...] = ()
    # CPU time its QoS cap withheld (the kernel's cgroup cpu.stat); None where none is reported.
    throttled_ns: int | None = None


class DriverError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class MigrationResult:
    downtime_ms: int
    total_ms: int
    memory_processed_bytes: int
    iterations: int
    postcopy: bool = False


class MigrationCancelled(DriverError):
    pass


@dataclass(frozen=True, slots=True)
class DiskCopy:
    """A disk that live migration copies (copy-storage) into a file the destination made."""

    source_path: str
    destination_path: str


class HypervisorDriver(Protocol):
    name: str

    def host_capacity(self) -> Resources: ...
    def list_domains(self) -> list[DomainInfo]: ...
    def define(self, spec: VmSpec, qos: QosSettings, nics: tuple[Nic, ...] = (),
               disks: tuple[Disk, ...] = ()) -> DomainInfo: ...
    def redefine(self, spec: VmSpec, qos: QosSettings, nics: tuple[Nic, ...] = (),
                 disks: tuple[Disk, ...] = ()) -> None:
        """Replace a stopped domain's definition (a resize); its console log goes on."""
        ...

    def start(self, name: str) -> None: ...
    def stop(self, name: str) -> None:
        """Power it off now (the guest is not asked); its definition stays."""
        ...

    def shutdown(self, name: str) -> None:
        """Ask the guest to power off (the ACPI power button) and return at once."""
        ...

    def reboot(self, name: str, hard: bool = False) -> None:
        """Ask the guest to reboot (ACPI), or with `hard` reset it."""
        ...

    def suspend(self, name: str) -> None:
        """Stop its vCPUs; its memory stays."""
        ...

    def resume(self, name: str) -> None: ...
    def destroy(self, name: str) -> None: ...
    def apply_qos(self, name: str, qos: QosSettings) -> None: ...
    def attach_disk(self, name: str, disk: Disk, qos: QosSettings) -> None:
        """Hot-plug into the running guest (and its definition), on the first free device."""
        ...

    def detach_disk(self, name: str, path: str) -> None:
        """Hot-unplug the disk on this file; the guest has to let it go."""
        ...

    def grow_disk(self, name: str, path: str, size_bytes: int) -> None:
        """Grow a running guest's disk to at least this size; the guest sees it grow."""
        ...

    def backup_disk(self, name: str, path: str, target: str) -> bool:
        """Copy the running guest's disk on `path`, as of now, into a new file `target` while the
        guest runs on; False when no running guest of that name has that disk."""
        ...

    def stats(self, name: str) -> DomainStats: ...

    def all_stats(self, devices: bool = True) -> dict[str, DomainStats]:
        """Every running guest's: the agent reads them once per status period, for the VM
        statuses and the metrics alike. `devices`: also each disk's and NIC's counters (they
        cost more; the agent asks for them once per metrics period)."""
        ...
    def migrate(self, name: str, destination_uri: str, options: MigrationOptions,
                on_progress: Callable[[MigrationProgress], None] | None = None,
                cancel: threading.Event | None = None, shared_disks: bool = False,
                copies: tuple[DiskCopy, ...] = ()) -> MigrationResult:
        """Live-migrate; on any failure or cancel the guest keeps running here and this raises.
        shared_disks: the disks not in `copies` are in a pool the destination sees too.
        copies: disks whose content is copied while the guest runs, each into a file the
        destination made beforehand on the same base image."""
        ...

    def locate(self, name: str, destination_uri: str) -> str:
        """Where the guest runs after an interrupted migration: "source", "destination" or ""."""
        ...
