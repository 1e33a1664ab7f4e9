"""Resources, their dimensions and QoS classes: what every layer counts in."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Mapping

DIMENSIONS: tuple[str, ...] = ("vcpus", "memory_mib", "disk_gib", "network_mbps", "disk_iops")


class QosClass(enum.Enum):
    GUARANTEED = "guaranteed"
    BURSTABLE = "burstable"
    BEST_EFFORT = "best-effort"


Pairs = tuple[tuple[str, str], ...]


def pairs(mapping: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> Pairs:
    """Canonical, hashable form of a string mapping."""
    if mapping is None:
        return ()
    items = mapping.items() if isinstance(mapping, Mapping) else mapping
    return tuple(sorted((str(k), str(v)) for k, v in items))


@dataclass(frozen=True, slots=True)
class Resources:
    vcpus: int = 0
    memory_mib: int = 0
    disk_gib: int = 0
    network_mbps: int = 0
    # Reserved disk operations per second (from the QoS policy); a host's capacity is what its
    # disks sustain, as its operator measured it.
    disk_iops: int = 0

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.vcpus, self.memory_mib, self.disk_gib, self.network_mbps, self.disk_iops)

    @classmethod
    def of(cls, values: Iterable[float]) -> Resources:
        return cls(*(int(round(v)) for v in values))

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.vcpus + other.vcpus, self.memory_mib + other.memory_mib,
                         self.disk_gib + other.disk_gib, self.network_mbps + other.network_mbps,
                         self.disk_iops + other.disk_iops)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.vcpus - other.vcpus, self.memory_mib - other.memory_mib,
                         self.disk_gib - other.disk_gib, self.network_mbps - other.network_mbps,
                         self.disk_iops - other.disk_iops)


@dataclass(frozen=True, slots=True)
class Overcommit:
    """Per-resource allocation ratios (OpenStack's *_allocation_ratio)."""

    vcpus: float = 4.0
    memory_mib: float = 1.0
    disk_gib: float = 1.0
    network_mbps: float = 2.0
    disk_iops: float = 1.0

    def as_tuple(self) -> tuple[float, float, float, float, float]:
        return (self.vcpus, self.memory_mib, self.disk_gib, self.network_mbps, self.disk_iops)
