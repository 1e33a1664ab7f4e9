"""A packing problem: VM demands onto identical or heterogeneous hosts, in any number of
dimensions. Pure data.

The planner works on plain integer arrays rather than the scheduler's named dimensions so the
same code packs a cluster's VMs (vcpus, memory, disk, network, IOPS) and the published vector
bin-packing instances (3, 5 or 10 anonymous dimensions).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

I64 = NDArray[np.int64]


class ProblemError(ValueError):
    pass


@dataclass(frozen=True)
class Problem:
    name: str
    capacity: I64  # (d,) one host; with `hosts`, the largest capacity in each dimension
    items: I64     # (n, d) one row per VM, in arrival order
    # Heterogeneous hosts: (m, d), the hosts available, in the order they are worth opening.
    # None: as many identical hosts of `capacity` as needed.
    hosts: I64 | None = None

    @classmethod
    def heterogeneous(cls, name: str, hosts: I64, items: I64) -> Problem:
        if hosts.ndim != 2 or hosts.shape[0] == 0:
            raise ProblemError(f"{name}: give at least one host, as an (m, d) array")
        return cls(name, hosts.max(axis=0), items, hosts)

    def __post_init__(self) -> None:
        if self.capacity.ndim != 1 or self.items.ndim != 2 or self.items.shape[1] != self.capacity.shape[0]:
            raise ProblemError(f"{self.name}: items are {self.items.shape}, capacity {self.capacity.shape}")
        if (self.capacity <= 0).any():
            raise ProblemError(f"{self.name}: every capacity must be positive, got {self.capacity.tolist()}")
        if (self.items < 0).any():
            raise ProblemError(f"{self.name}: demands must not be negative")
        if self.hosts is not None:
            if self.hosts.shape[1:] != self.capacity.shape or (self.hosts < 0).any():
                raise ProblemError(f"{self.name}: hosts must be an (m, {self.d}) array of capacities")
            homeless = np.flatnonzero((self.items > self.capacity).any(axis=1))
            if self.n * len(self.hosts) <= 50_000_000:
                fits_some = np.asarray(np.all(self.items[:, None, :] <= self.hosts[None], axis=2)).any(axis=1)
                homeless = np.flatnonzero(~fits_some)
        else:
            homeless = np.flatnonzero((self.items > self.capacity).any(axis=1))
        if homeless.size:
            raise ProblemError(f"{self.name}: item {int(homeless[0])} ({self.items[homeless[0]].tolist()}) "
                               f"fits on no host (largest: {self.capacity.tolist()})")

    @property
    def n(self) -> int:
        return int(self.items.shape[0])

    @property
    def d(self) -> int:
        return int(self.capacity.shape[0])

    def relative(self) -> NDArray[np.float64]:
        """Demands as fractions of a host (the largest, if they differ), (n, d)."""
        return self.items / self.capacity

    @property
    def max_hosts(self) -> int:
        return self.n if self.hosts is None else int(self.hosts.shape[0])

    def caps(self) -> I64:
        """(max_hosts, d): each host's capacity, by host index."""
        if self.hosts is not None:
            return self.hosts
        return np.broadcast_to(self.capacity, (max(self.n, 1), self.d))


@dataclass(frozen=True)
class Packing:
    """host[i] = the 0-based host item i goes to; hosts are numbered 0..hosts-1 without gaps."""

    host: I64

    @property
    def hosts(self) -> int:
        """Hosts used (with heterogeneous hosts the indices used need not be contiguous)."""
        return int(np.unique(self.host).size)

    def loads(self, problem: Problem) -> I64:
        """(max index + 1, d): what each host index holds."""
        out = np.zeros((int(self.host.max()) + 1 if self.host.size else 0, problem.d), dtype=np.int64)
        np.add.at(out, self.host, problem.items)
        return out


def check(problem: Problem, packing: Packing) -> None:
    """Raise unless every item is on a host and no host is over capacity in any dimension."""
    if packing.host.shape != (problem.n,) or (packing.host < 0).any() or \
            (packing.host.size and packing.host.max() >= problem.max_hosts):
        raise ProblemError(f"{problem.name}: a packing must give each of the {problem.n} items a host")
    loads = packing.loads(problem)
    over = np.flatnonzero((loads > problem.caps()[:len(loads)]).any(axis=1))
    if over.size:
        raise ProblemError(f"{problem.name}: host {int(over[0])} is over capacity")


def load_vbp(path: Path) -> Problem:
    """VPSolver's .vbp: d; the d capacities; m; m lines "w_1 .. w_d demand" (demand = how many
    identical items; they become consecutive rows)."""
    try:
        tokens = [int(t) for t in path.read_text().split()]
    except ValueError as e:
        raise ProblemError(f"{path}: not a .vbp file (a token is not an integer: {e})") from e
    if len(tokens) < 2:
        raise ProblemError(f"{path}: empty")
    d = tokens[0]
    if d < 1 or len(tokens) < 2 + d:
        raise ProblemError(f"{path}: bad dimension count {d}")
    cap = np.asarray(tokens[1:1 + d], dtype=np.int64)
    m = tokens[1 + d]
    body = tokens[2 + d:]
    if m < 0 or len(body) != m * (d + 1):
        raise ProblemError(f"{path}: {m} item types need {m * (d + 1)} numbers, found {len(body)}")
    rows = np.asarray(body, dtype=np.int64).reshape(m, d + 1) if m else np.zeros((0, d + 1), dtype=np.int64)
    if (rows[:, d] < 0).any():
        raise ProblemError(f"{path}: negative demand count")
    items = np.repeat(rows[:, :d], rows[:, d], axis=0)
    return Problem(path.stem, cap, items)
