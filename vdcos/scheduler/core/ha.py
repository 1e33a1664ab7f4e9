"""HA admission control (vSphere's "host failures cluster tolerates"), as pure arithmetic on a
snapshot.

For every set S of N hosts that may fail, the survivors' free room must hold the protected
reservations of S: sum_S load <= sum_not-S free, i.e. sum_S (load + free) <= total free. The
worst S is the N hosts with the most load + free, taken per dimension (at least as strict as any
one S). Free room is the committed pool's (allocatable - committed) on hosts that can take a
restart (ready, not cordoned); load is each ready host's protected reservations (HA-counted,
not best-effort). As vSphere's percentage policy, it counts room in sum, not per host: a
restart can still be refused by fragmentation, and is then retried as capacity frees up.

A placement of demand d on any host lowers the headroom by at most d (by exactly d when the VM
is protected: its host's load + free stays the same), so a batch subtracts each decision from
the headroom as it goes, without computing it again.
"""
from __future__ import annotations

import numpy as np

from vdcos.model.fit import F64
from vdcos.scheduler.core.snapshot import ClusterSnapshot


def failover_headroom(snap: ClusterSnapshot, protected_load: F64, failures: int) -> F64:
    """(D,): what the survivors of the worst `failures` host failures keep free after restarting
    every protected VM of the failed hosts; negative where they could not."""
    up = snap.present & snap.ready
    free = np.where(up & ~snap.cordoned, np.maximum(snap.allocatable - snap.committed, 0.0), 0.0)
    load = np.where(up, protected_load, 0.0)
    both = load + free
    n = snap.size
    k = min(failures, int(up.sum()))
    worst = np.partition(both, n - k, axis=1)[:, n - k:].sum(axis=1) if k else np.zeros(both.shape[0])
    out: F64 = free.sum(axis=1) - worst
    return out
