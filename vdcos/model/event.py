"""The datacenter's events: one typed record per state change an operator cares about, as
vCenter's event log and Kubernetes' Events keep them (vdcos/events/ writes and reads them)."""
from __future__ import annotations

from dataclasses import dataclass

# Every kind there is, and what it says. A new kind is added here first.
KINDS: dict[str, str] = {
    "vm.created": "a VM's record was committed (with its placement)",
    "vm.placed": "the scheduler placed a VM on a node",
    "vm.refused": "placement refused a VM, with the reasons",
    "vm.started": "a node's agent started a VM's guest",
    "vm.stopped": "a VM's guest stopped: on request (StopVm), or it stopped or crashed",
    "vm.suspended": "a VM's vCPUs were paused on request (SuspendVm); its memory stays",
    "vm.resumed": "a suspended VM runs again (ResumeVm)",
    "vm.rebooted": "a VM's guest was rebooted (ACPI) or reset on request (RebootVm)",
    "vm.resized": "a VM's resources or QoS policy were changed (ResizeVm), its reservation with them",
    "vm.shelved": "a stopped VM released its reservation and left its host (ShelveVm)",
    "vm.unshelved": "a shelved VM was placed again to start (StartVm)",
    "vm.failed": "a VM cannot run: refused by its node, or lost with its host",
    "vm.migrated": "a live migration completed, with its downtime",
    "vm.migration_failed": "a live migration failed or was cancelled; the VM stays on its source",
    "vm.restarted": "the HA controller restarted a VM on another node after its host failed",
    "vm.deleted": "a VM was deleted",
    "node.joined": "a node's agent registered",
    "node.not_ready": "a node's lease expired: its agent is gone or cut off",
    "node.fenced": "a failed node was fenced and its VMs released for restart",
    "node.cordoned": "a node was cordoned: no new VM goes there",
    "node.uncordoned": "a node takes new VMs again",
    "node.drained": "a drain started moving a node's VMs off by live migration",
    "quota.refused": "a project's quota refused a request",
}
OBJECT_KINDS = ("vm", "node", "project")


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    at: float
    kind: str           # one of KINDS
    name: str           # the VM's, node's or project's name ("" for a summary of many)
    node: str = ""      # the node it happened on or concerns
    project: str = ""   # the project owning the VM ("" for cluster-scoped objects)
    message: str = ""
    # Kind-specific figures, e.g. downtime_ms, source, reasons.
    fields: tuple[tuple[str, str], ...] = ()
    # How many events of this kind this one stands for (a writer's rate limit folds bursts).
    count: int = 1

    @property
    def object_kind(self) -> str:
        return self.kind.partition(".")[0]
