"""What the core returns: a decision, or a rejection that says why."""
from __future__ import annotations

from dataclasses import dataclass

from vdcos.model import QosClass, QosSettings, Resources, VmSpec


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    spec: VmSpec
    # Seeds the tie-break so that every placement can be replayed.
    request_id: str = ""
    # Nodes ruled out for this request only: a live migration's source.
    avoid: tuple[str, ...] = ()
    # The one node the VM can run on, and why: the host of its local volumes.
    pinned: str = ""
    pinned_because: str = ""

    @property
    def seed_key(self) -> str:
        return self.request_id or self.spec.name


@dataclass(frozen=True, slots=True)
class Decision:
    vm: str
    node: str
    node_index: int
    qos: QosSettings
    reserved: Resources
    score: float
    scores: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class FilterOutcome:
    filter: str
    nodes_ruled_out: int
    reason: str


@dataclass(frozen=True, slots=True)
class DimensionShortfall:
    dimension: str
    pool: str
    nodes_short: int
    requested: int
    largest_free: int
    largest_free_node: str


@dataclass(frozen=True, slots=True)
class Rejection:
    vm: str
    nodes_total: int
    nodes_feasible: int
    filters: tuple[FilterOutcome, ...]
    dimensions: tuple[DimensionShortfall, ...]
    # True: it fits once capacity frees up or nodes come back. False: it never can.
    retryable: bool
    summary: str


@dataclass(frozen=True, slots=True)
class Candidate:
    node: str
    score: float
    scores: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    qos_class: QosClass | None
    decision: Decision | None
    candidates: tuple[Candidate, ...]
    rejection: Rejection | None
    revision: int
    # Nodes the decision compared: a window of the cluster on a large one (see `window`).
    nodes_scored: int = 0
    nodes_total: int = 0
