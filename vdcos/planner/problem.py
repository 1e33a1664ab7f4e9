"""A packing problem: VM demands onto identical hosts, in any number of dimensions. Pure data.

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
    capacity: I64  # (d,) one host
    items: I64     # (n, d) one row per VM, in arrival order

    def __post_init__(self) -> None:
        if self.capacity.ndim != 1 or self.items.ndim != 2 or self.items.shape[1] != self.capacity.shape[0]:
            raise ProblemError(f"{self.name}: items are {self.items.shape}, capacity {self.capacity.shape}")
        if (self.capacity <= 0).any():
            raise ProblemError(f"{self.name}: every capacity must be positive, got {self.capacity.tolist()}")
        if (self.items < 0).any():
            raise ProblemError(f"{self.name}: demands must not be negative")
        too_big = np.flatnonzero((self.items > self.capacity).any(axis=1))
        if too_big.size:
            raise ProblemError(f"{self.name}: item {int(too_big[0])} is bigger than a host "
                               f"({self.items[too_big[0]].tolist()} > {self.capacity.tolist()})")

    @property
    def n(self) -> int:
        return int(self.items.shape[0])

    @property
    def d(self) -> int:
        return int(self.capacity.shape[0])

    def relative(self) -> NDArray[np.float64]:
        """Demands as fractions of a host, (n, d)."""
        return self.items / self.capacity


@dataclass(frozen=True)
class Packing:
    """host[i] = the 0-based host item i goes to; hosts are numbered 0..hosts-1 without gaps."""

    host: I64

    @property
    def hosts(self) -> int:
        return int(self.host.max()) + 1 if self.host.size else 0

    def loads(self, problem: Problem) -> I64:
        out = np.zeros((self.hosts, problem.d), dtype=np.int64)
        np.add.at(out, self.host, problem.items)
        return out


def check(problem: Problem, packing: Packing) -> None:
    """Raise unless every item is on a host and no host is over capacity in any dimension."""
    if packing.host.shape != (problem.n,) or (packing.host < 0).any():
        raise ProblemError(f"{problem.name}: a packing must give each of the {problem.n} items a host")
    over = np.flatnonzero((packing.loads(problem) > problem.capacity).any(axis=1))
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
