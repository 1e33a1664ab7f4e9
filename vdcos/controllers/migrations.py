"""The migration reaper: a migration that never started because its source host went away.

Only the source's agent moves a migration from PENDING to RUNNING, by a compare-and-swap on
its record, so a PENDING migration whose source is NotReady holds its destination's
reservation, and the cluster's migration slots, for as long as that host stays down. Once the
source has been NotReady for `grace_s`, the reaper fails the migration (the destination is
freed, the VM's placement stays on its source); an agent that comes back finds it finished
and starts nothing. A RUNNING migration is left alone: whether its guest reached the
destination is the hypervisors' to tell, not this record's (the reliability and HA issues).
"""
from __future__ import annotations

import time

from vdcos.migration import records
from vdcos.model import MigrationPhase
from vdcos.state import keys
from vdcos.state.store import Store

GRACE_S = 30.0


class MigrationReaper:
    name = "migration-reaper"

    def __init__(self, store: Store, grace_s: float = GRACE_S) -> None:
        self.store = store
        self.grace_s = grace_s
        self._source_gone: dict[str, float] = {}  # migration id -> when its source was first seen NotReady

    def keys(self) -> list[str]:
        pending = [m.id for m in records.list_all(self.store) if m.phase is MigrationPhase.PENDING]
        for mid in set(self._source_gone) - set(pending):
            del self._source_gone[mid]
        return pending

    def reconcile(self, mid: str) -> None:
        m = records.get(self.store, mid)
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
