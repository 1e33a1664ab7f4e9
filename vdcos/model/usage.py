"""Metering: what each VM reserved and used over time, kept past its deletion (per VM, with its
project and QoS class: a project's usage is the sum of its VMs')."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

from vdcos.model.compute import PlacementRecord, VmSpec

# The quantities metered, each a total since the VM was created and per hour.
QUANTITIES = ("vcpu_reserved_s", "vcpu_used_s", "memory_gib_s", "disk_gib_s", "network_bytes")
HOURS_KEPT = 31 * 24


@dataclass(frozen=True, slots=True)
class Amounts:
    vcpu_reserved_s: float = 0.0   # vCPUs reserved x seconds
    vcpu_used_s: float = 0.0       # CPU time its guest used (seconds)
    memory_gib_s: float = 0.0      # GiB reserved x seconds
    disk_gib_s: float = 0.0        # GiB reserved x seconds
    network_bytes: int = 0         # bytes its NICs received and sent

    def plus(self, o: Amounts) -> Amounts:
        return Amounts(*(getattr(self, q) + getattr(o, q) for q in QUANTITIES))

    def scaled(self, f: float) -> Amounts:
        return Amounts(self.vcpu_reserved_s * f, self.vcpu_used_s * f, self.memory_gib_s * f, self.disk_gib_s * f,
                       round(self.network_bytes * f))


@dataclass(frozen=True, slots=True)
class VmUsage:
    vm: str
    project: str
    qos_class: str
    created_at: float             # metered from
    metered_to: float             # everything up to here is counted, nothing after
    total: Amounts = Amounts()
    hours: tuple[tuple[int, Amounts], ...] = ()  # (UTC hour start, its amounts), oldest first
    deleted_at: float = 0.0       # set once the VM is gone and its last interval counted
    # Where its guest's counters were last read, to count what they added since (a new QEMU,
    # after a move or a restart, counts from zero).
    last_node: str = ""
    last_cpu_ns: int = 0
    last_network_bytes: int = 0
    last_counter_at: float = 0.0  # the status time of that reading
    reserved: tuple[int, int, int] = (0, 0, 0)  # vCPUs, MiB, GiB it held at the last round

    def charged(self, start: float, end: float, amounts: Amounts) -> VmUsage:
        """`amounts` spread evenly over [start, end), split between the hours it spans."""
        return replace(self, total=self.total.plus(amounts), hours=_spread(self.hours, start, end, amounts),
                       metered_to=max(self.metered_to, end))

    def _tail(self, now: float) -> tuple[float, float, Amounts]:
        """What its reservation has accrued since `metered_to` (up to its deletion): the
        reserved quantities are exact at any moment, not only at the controller's rounds."""
        end = min(now, self.deleted_at) if self.deleted_at else now
        dt = max(0.0, end - self.metered_to)
        vcpus, memory_mib, disk_gib = self.reserved
        return self.metered_to, self.metered_to + dt, Amounts(vcpus * dt, 0.0, memory_mib / 1024 * dt, disk_gib * dt)

    def as_of(self, now: float) -> VmUsage:
        """The record with its reservation charged up to `now` (or its deletion)."""
        start, end, tail = self._tail(now)
        return self.charged(start, end, tail) if end > start else self

    def since(self, t: float) -> Amounts:
        """What it used from `t` on, by whole hours (the hour `t` falls in counts whole)."""
        start = int(t // 3600 * 3600)
        out = Amounts()
        for hour, a in self.hours:
            if hour >= start:
                out = out.plus(a)
        return out


def _spread(hours: tuple[tuple[int, Amounts], ...], start: float, end: float,
            amounts: Amounts) -> tuple[tuple[int, Amounts], ...]:
    by_hour = dict(hours)
    span = max(end - start, 1e-9)
    t = start
    while t < end:
        hour = int(t // 3600 * 3600)
        part = min(end, hour + 3600) - t
        by_hour[hour] = by_hour.get(hour, Amounts()).plus(amounts.scaled(part / span))
        t = hour + 3600
    if end <= start:  # counters alone, at an instant
        hour = int(start // 3600 * 3600)
        by_hour[hour] = by_hour.get(hour, Amounts()).plus(amounts)
    return tuple(sorted(by_hour.items())[-HOURS_KEPT:])


def opened(spec: VmSpec, placed: PlacementRecord) -> VmUsage:
    """A VM's record before anything is charged: from its placement, at its reservation."""
    start = placed.placed_at or time.time()
    r = placed.reserved
    return VmUsage(spec.name, spec.project, placed.qos.qos_class.value, start, start,
                   reserved=(r.vcpus, r.memory_mib, r.disk_gib))
