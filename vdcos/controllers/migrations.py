"""The migration reaper: a migration that never started because its source host went away.

Only the source's agent moves a migration from PENDING to RUNNING, by a compare-and-swap on
its record, so a PENDING migration whose source is NotReady holds its destination's
reservation, and the cluster's migration slots, for as long as that host stays down. Once the
source has been NotReady for `grace_s`, the reaper fails the migration (the destination is
freed, the VM's placement stays on its source); an agent that comes back finds it finished
and starts nothing.

A RUNNING migration is its source agent's to finish (an agent that restarts finishes it by
where the guest is): whether the guest reached the destination is the hypervisors' to tell,
not this record's. When its record has not moved for `stalled_s` (the agent writes progress
every 0.2 s while the hypervisor reports any), the reaper asks for its cancellation, which
the source agent carries out by aborting the hypervisor's job. A RUNNING migration whose
source host is gone for good waits for the HA controller (issue 31), which knows whether the
guest runs anywhere.
"""
from __future__ import annotations

import time
from dataclasses import replace

from vdcos.migration import records
from vdcos.model import Migration, MigrationPhase
from vdcos.state import keys
from vdcos.state.store import Store

GRACE_S = 30.0
STALLED_S = 300.0


class MigrationReaper:
    name = "migration-reaper"

    def __init__(self, store: Store, grace_s: float = GRACE_S, stalled_s: float = STALLED_S) -> None:
        self.store = store
        self.grace_s = grace_s
        self.stalled_s = stalled_s
        self._source_gone: dict[str, float] = {}  # migration id -> when its source was first seen NotReady

    def keys(self) -> list[str]:
        live = [m for m in records.list_all(self.store) if not m.phase.done]
        pending = [m.id for m in live if m.phase is MigrationPhase.PENDING]
        for mid in set(self._source_gone) - set(pending):
            del self._source_gone[mid]
        return [m.id for m in live]

    def reconcile(self, mid: str) -> None:
        m = records.get(self.store, mid)
        if m.phase is MigrationPhase.RUNNING:
            self._cancel_if_stalled(m)
            return
        if m.phase is not MigrationPhase.PENDING:
            return
        if self.store.get(keys.node_status(m.source)) is not None:
            self._source_gone.pop(mid, None)
            return
        since = self._source_gone.setdefault(mid, time.monotonic())
        if time.monotonic() - since >= self.grace_s:
            records.finish(self.store, mid, MigrationPhase.FAILED,
                           f"{m.source} went NotReady before the migration started",
                           only_from=(MigrationPhase.PENDING,))

    def _cancel_if_stalled(self, m: Migration) -> None:
        idle = time.time() - max(m.updated_at, m.created_at)
        if m.cancel_requested or idle < self.stalled_s:
            return
        records.update(self.store, m.id, lambda x: replace(
            x, cancel_requested=True, message=f"no progress for {idle:.0f} s; cancelled by the migration reaper")
            if x.phase is MigrationPhase.RUNNING and not x.cancel_requested else None)
