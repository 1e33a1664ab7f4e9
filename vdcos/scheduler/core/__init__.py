"""Pure scheduling core: immutable snapshot + request -> decision or rejection. No I/O."""
from vdcos.scheduler.core.fit import Insufficient, fit_matrix, fits
from vdcos.scheduler.core.qos import reservation, resolve
from vdcos.scheduler.core.result import (Candidate, Decision, DimensionShortfall, Explanation,
                                         FilterOutcome, PlacementRequest, Rejection)
from vdcos.scheduler.core.schedule import SOLO, Lane, explain, schedule, schedule_batch
from vdcos.scheduler.core.snapshot import ClusterSnapshot, build_snapshot

__all__ = [
    "Candidate", "ClusterSnapshot", "Decision", "DimensionShortfall", "Explanation",
    "FilterOutcome", "Insufficient", "Lane", "PlacementRequest", "Rejection", "SOLO", "build_snapshot",
    "explain", "fit_matrix", "fits", "reservation", "resolve", "schedule", "schedule_batch",
]
