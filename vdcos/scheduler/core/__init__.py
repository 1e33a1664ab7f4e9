"""Pure scheduling core: immutable snapshot + request -> decision or rejection. No I/O."""
from vdcos.scheduler.core.result import (Candidate, Decision, DimensionShortfall, Explanation, FilterOutcome,
                                         PlacementRequest, Rejection)
from vdcos.scheduler.core.schedule import SOLO, Lane, explain, schedule, schedule_batch
from vdcos.scheduler.core.snapshot import ClusterSnapshot, build_snapshot

__all__ = [
    "Candidate", "ClusterSnapshot", "Decision", "DimensionShortfall", "Explanation",
    "FilterOutcome", "Lane", "PlacementRequest", "Rejection", "SOLO", "build_snapshot",
    "explain", "schedule", "schedule_batch",
]
