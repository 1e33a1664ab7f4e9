"""What the API and the controllers ask of the placement engine, and nothing more: the worker
(worker.Scheduler) is one implementation, in the API's process; another process layout would
put a client of the same calls here."""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, Sequence

from vdcos.model import Migration, MigrationOptions, PlacementRecord, VmSpec
from vdcos.scheduler.core import Explanation


@dataclass(frozen=True, slots=True)
class Placed:
    spec: VmSpec
    record: PlacementRecord
    revision: int


class Placer(Protocol):
    def submit(self, spec: VmSpec, request_id: str = "", pinned: str = "",
               pinned_because: str = "") -> Future[Placed]:
        """Place one VM (on `pinned` alone, when given, for the reason given)."""

    def submit_all(self, items: Sequence[tuple[VmSpec, str]]) -> list[Future[Placed]]:
        """Place each (spec, request id) on its own; the futures answer in order."""

    def placed_by(self, name: str, request_id: str) -> Placed | None:
        """The VM of this name, if the create with this request id placed it (a retry's answer)."""

    def explain(self, spec: VmSpec, request_id: str = "", limit: int = 10) -> Explanation: ...

    def delete(self, name: str, project: str | None = None) -> None:
        """Delete a VM (with `project`: only that project's) and give back what it held."""

    def migrate(self, vm: str, target: str, options: MigrationOptions) -> Migration:
        """Reserve a destination (`target`, or the best one) and record the migration."""

    def cancel_migration(self, mid: str) -> Migration: ...

    def unshelve(self, name: str, project: str | None = None) -> PlacementRecord:
        """Place a shelved VM (with `project`: only that project's) again, and start it."""

    def check_policy_unused(self, name: str) -> None:
        """Raise FailedPrecondition while a VM uses the QoS policy."""
