"""Projects (tenants, as Keystone's projects and Incus's) and their quotas.

A project owns VMs, networks (and their ports), volumes (and their snapshots), and the
migrations of its VMs. Disk counts VMs' own disks, volumes and snapshots, as Cinder's
`gigabytes` counts volumes and snapshots. A quota record holds a project's limits and what it uses, in one etcd
key: every create that charges it compares that key in its own transaction (the placement
batch, the volume's, the network's), so concurrent creates can never pass a limit together.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

UNLIMITED = -1
QUOTA_FIELDS: tuple[str, ...] = ("vcpus", "memory_mib", "disk_gib", "vms", "networks", "volumes", "snapshots")


@dataclass(frozen=True, slots=True)
class Project:
    name: str
    description: str = ""
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Usage:
    """An amount of each quota's unit: what a project uses, what a create charges."""
    vcpus: int = 0
    memory_mib: int = 0
    disk_gib: int = 0  # VMs' own disks, volumes and snapshots
    vms: int = 0
    networks: int = 0
    volumes: int = 0
    snapshots: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f) + getattr(other, f) for f in QUOTA_FIELDS))

    def __neg__(self) -> Usage:
        return Usage(*(-getattr(self, f) for f in QUOTA_FIELDS))

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f) for f in QUOTA_FIELDS)


@dataclass(frozen=True, slots=True)
class Limits:
    """Each quota's limit; UNLIMITED (-1) for none."""
    vcpus: int = UNLIMITED
    memory_mib: int = UNLIMITED
    disk_gib: int = UNLIMITED
    vms: int = UNLIMITED
    networks: int = UNLIMITED
    volumes: int = UNLIMITED
    snapshots: int = UNLIMITED


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    project: str
    quota: str      # one of QUOTA_FIELDS
    limit: int
    used: int
    wanted: int     # what the refused create would have added

    def __str__(self) -> str:
        return (f"project {self.project}: quota {self.quota} is {self.limit}, {self.used} in use, "
                f"the request needs {self.wanted} more")


@dataclass(frozen=True, slots=True)
class Quota:
    project: str
    limits: Limits = Limits()
    used: Usage = Usage()

    def violations(self, more: Usage) -> list[QuotaViolation]:
        """What charging `more` would exceed (nothing when it may be charged). A release (a
        negative amount) always may: a lowered limit stops new use, never the return of old."""
        out = []
        for f in QUOTA_FIELDS:
            limit, used, wanted = getattr(self.limits, f), getattr(self.used, f), getattr(more, f)
            if wanted > 0 and limit != UNLIMITED and used + wanted > limit:
                out.append(QuotaViolation(self.project, f, limit, used, wanted))
        return out

    def charged(self, more: Usage) -> Quota:
        """`more` added to the use (a release: never below zero)."""
        total = self.used + more
        return replace(self, used=Usage(*(max(0, getattr(total, f)) for f in QUOTA_FIELDS)))

    def with_limits(self, **limits: int) -> Quota:
        return replace(self, limits=replace(self.limits, **limits))


def vm_usage(vcpus: int, memory_mib: int, disk_gib: int) -> Usage:
    return Usage(vcpus=vcpus, memory_mib=memory_mib, disk_gib=disk_gib, vms=1)


def volume_usage(size_gib: int, count: int = 1) -> Usage:
    return Usage(disk_gib=size_gib, volumes=count)


def snapshot_usage(size_gib: int) -> Usage:
    return Usage(disk_gib=size_gib, snapshots=1)


NETWORK_USAGE = Usage(networks=1)
assert tuple(f.name for f in fields(Usage)) == QUOTA_FIELDS == tuple(f.name for f in fields(Limits))
