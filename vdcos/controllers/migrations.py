"""The migration controller: the control plane's part in every live migration.

1. Applying outcomes. The source agent carries a migration out and reports how it ended on
   the migration's record (`reported`); an agent may write no placement, assignment or
   allocation. This controller applies the report (records.finish): a completed move takes the
   VM's placement, assignment and group membership to the destination and frees the source; a
   failed or cancelled one frees the destination. Its runner watches /vdcos/migrations/, so a
   report is applied within a round trip, not at the next resync.

2. Reaping. Only the source's agent moves a migration from PENDING to RUNNING, by a
   compare-and-swap on its record, so a PENDING migration whose source is NotReady holds its
   destination's reservation, and the cluster's migration slots, for as long as that host stays
   down. Once the source has been NotReady for `grace_s`, the migration is failed (the
   destination is freed, the VM's placement stays on its source); an agent that comes back
   finds it finished and starts nothing.

A RUNNING migration without a report is its source agent's to end (an agent that restarts
reports by where the guest is): whether the guest reached the destination is the hypervisors'
to tell, not this record's. When its record has not moved for `stalled_s` (the agent writes
progress every 0.2 s while the hypervisor reports any), its cancellation is asked for, which
the source agent carries out by aborting the hypervisor's job. A RUNNING migration whose source
host is gone for good waits for the HA controller, which knows whether the guest runs anywhere.
"""
from __future__ import annotations

import time
from dataclasses import replace

from vdcos.errors import NotFound
from vdcos.events import Emit, nothing
from vdcos.migration import records
from vdcos.model import Migration, MigrationPhase
from vdcos.state import keys
from vdcos.state.store import Store

GRACE_S = 30.0
STALLED_S = 300.0


class MigrationController:
    name = "migrations"

    def __init__(self, store: Store, grace_s: float = GRACE_S, stalled_s: float = STALLED_S,
                 emit: Emit = nothing) -> None:
        self.store = store
        self.emit = emit
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
        try:
            m = records.get(self.store, mid)
        except NotFound:
            return
        if m.reported and not m.phase.done:
            self._finished(m, records.apply_reported(self.store, m))
            return
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
            self._finished(m, records.finish(self.store, mid, MigrationPhase.FAILED,
                                             f"{m.source} went NotReady before the migration started",
                                             only_from=(MigrationPhase.PENDING,)))

    def _finished(self, before: Migration, m: Migration) -> None:
        """The event of a migration this call finished (not of one another replica had)."""
        if before.phase.done or not m.phase.done:
            return
        fields = {"migration": m.id, "source": m.source, "destination": m.destination}
        if m.phase is MigrationPhase.COMPLETED:
            self.emit("vm.migrated", m.vm, node=m.destination, project=m.project,
                      message=f"moved from {m.source} to {m.destination} live"
                      + (f": downtime {m.downtime_ms} ms, {m.total_ms} ms in all" if m.downtime_ms >= 0 else ""),
                      downtime_ms=m.downtime_ms, total_ms=m.total_ms, **fields)
        else:
            self.emit("vm.migration_failed", m.vm, node=m.source, project=m.project,
                      message=f"{m.phase.value}: {m.message}", **fields)

    def _cancel_if_stalled(self, m: Migration) -> None:
        idle = time.time() - max(m.updated_at, m.created_at)
        if m.cancel_requested or idle < self.stalled_s:
            return
        records.update(self.store, m.id, lambda x: replace(
            x, cancel_requested=True, message=f"no progress for {idle:.0f} s; cancelled by the migration controller")
            if x.phase is MigrationPhase.RUNNING and not x.cancel_requested else None)
