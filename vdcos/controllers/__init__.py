"""Leader-elected control loops on one framework (framework.py): each reconciles one kind of
object from a work queue, with per-item retries and backoff."""
from __future__ import annotations

from typing import Callable

from vdcos.controllers.ha import HaController
from vdcos.controllers.metering import PERIOD_S as METERING_PERIOD_S, MeteringController
from vdcos.controllers.migrations import MigrationController
from vdcos.controllers.rebalancer import LOCK_TTL, AutomaticRebalance, Rebalancer
from vdcos.events import Emit, nothing
from vdcos.reconcile import LeaderLease, Runner
from vdcos.scheduler.cache import ClusterCache
from vdcos.scheduler.core import SOLO, Lane
from vdcos.state import keys
from vdcos.state.store import Store


def start_all(store: Store, rebalancer: Rebalancer, cache: ClusterCache,
              lane: Callable[[], Lane] = lambda: SOLO, emit: Emit = nothing,
              metering_period_s: float = METERING_PERIOD_S) -> list[Runner]:
    """Every controller of an API/scheduler replica, each leading on at most one replica."""
    return [
        # Resynced every 0.5 s: a failed host's restart waits for it.
        Runner(HaController(store, cache, lane=lane, emit=emit), leader=LeaderLease(store, keys.HA_LOCK, LOCK_TTL),
               resync_s=0.5).start(),
        Runner(AutomaticRebalance(rebalancer), leader=LeaderLease(store, keys.REBALANCER_LOCK, LOCK_TTL)).start(),
        # Woken by its watch when an agent reports an outcome; the reaper's grace is 30 s, so a
        # resync every 5 s is soon enough for the rest, and lists the migrations a fifth as often.
        Runner(MigrationController(store, emit=emit), leader=LeaderLease(store, keys.MIGRATIONS_LOCK, LOCK_TTL),
               resync_s=5.0, store=store,
               watch=(keys.MIGRATIONS, lambda key: keys.split(key, keys.MIGRATIONS)[0])).start(),
        # Counters are written every ten rounds at most (a reservation is exact at any time).
        Runner(MeteringController(store, cache, flush_s=10 * metering_period_s), leader=LeaderLease(store, keys.METERING_LOCK, LOCK_TTL),
               resync_s=metering_period_s).start(),
    ]
