"""Live migrations and rebalancing plans (sequences of them)."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from vdcos.model.resources import Pairs


class RebalanceMode(enum.Enum):
    MANUAL = "manual"
    AUTOMATIC = "automatic"


class MigrationPhase(enum.Enum):
    PENDING = "pending"        # destination reserved; the source agent has not started yet
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"          # the VM kept running on the source
    CANCELLED = "cancelled"    # likewise

    @property
    def done(self) -> bool:
        return self in (MigrationPhase.COMPLETED, MigrationPhase.FAILED, MigrationPhase.CANCELLED)


@dataclass(frozen=True, slots=True)
class MigrationOptions:
    max_downtime_ms: int = 25
    bandwidth_mibps: int = 0
    auto_converge: bool = True
    postcopy_after_iterations: int = 0


@dataclass(frozen=True, slots=True)
class MigrationProgress:
    phase: str = ""
    memory_total_bytes: int = 0
    memory_processed_bytes: int = 0
    memory_remaining_bytes: int = 0
    iteration: int = 0
    expected_downtime_ms: int = 0
    elapsed_ms: int = 0


@dataclass(frozen=True, slots=True)
class Migration:
    id: str
    vm: str
    source: str
    destination: str
    phase: MigrationPhase
    options: MigrationOptions
    created_at: float
    updated_at: float = 0.0
    cancel_requested: bool = False
    progress: MigrationProgress = MigrationProgress()
    downtime_ms: int = -1
    total_ms: int = 0
    message: str = ""
    project: str = ""  # its VM's
    request_id: str = ""  # the call that asked for it: the agents log the move under it
    # The outcome its source agent reported (a done MigrationPhase's value; "" = none yet). An
    # agent may write only migration records: the control plane's migration controller applies
    # the outcome (moves the VM's placement, assignment and allocations) and sets `phase`.
    reported: str = ""


class RebalanceGoal(enum.Enum):
    CONSOLIDATE = "consolidate"
    BALANCE = "balance"
    EVACUATE = "evacuate"


class RebalanceState(enum.Enum):
    PLANNED = "planned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RebalanceStep:
    vm: str
    source: str
    target: str           # planned; an evacuation lets the scheduler choose again when it runs
    reason: str
    state: str = "pending"  # pending | migrating | done | failed | skipped
    migration: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Rebalance:
    """A plan of live migrations, and how far its execution got (one step at a time)."""

    id: str
    goal: RebalanceGoal
    state: RebalanceState
    steps: tuple[RebalanceStep, ...] = ()
    hosts_freed: tuple[str, ...] = ()
    hosts_in_use_before: int = 0
    hosts_in_use_after: int = 0
    imbalance_before: float = 0.0
    imbalance_after: float = 0.0
    unmovable: Pairs = ()
    message: str = ""
    node: str = ""
    automatic: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ActiveMigrations:
    """One record listing the migrations in flight: the limits are checked against it in the
    same transaction that starts a migration, so concurrent requests cannot exceed them."""

    entries: tuple[tuple[str, str, str], ...] = ()  # (id, source, destination)

    def count(self, host: str) -> int:
        return sum(1 for _, s, d in self.entries if host in (s, d))

    def with_(self, m: Migration) -> ActiveMigrations:
        return ActiveMigrations((*self.without(m.id).entries, (m.id, m.source, m.destination)))

    def without(self, mid: str) -> ActiveMigrations:
        return ActiveMigrations(tuple(e for e in self.entries if e[0] != mid))
