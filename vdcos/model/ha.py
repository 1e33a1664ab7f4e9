"""High availability: what a VM asks for when its host fails, and what the HA controller
records about a failed host (vdcos/controllers/ha.py)."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from vdcos.model.resources import QosClass


class RestartPolicy(enum.Enum):
    # Restarted when its host fails, and by its agent when the guest stops on a live host.
    ALWAYS = "always"
    # Restarted when its host fails only; a guest that stops or crashes stays stopped.
    ON_HOST_FAILURE = "on-host-failure"
    # Never restarted: it stays down with its host.
    NEVER = "never"


class RestartPriority(enum.Enum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


PRIORITY_RANK = {RestartPriority.HIGH: 0, RestartPriority.MEDIUM: 1, RestartPriority.LOW: 2}
CLASS_RANK = {QosClass.GUARANTEED: 0, QosClass.BURSTABLE: 1, QosClass.BEST_EFFORT: 2}


@dataclass(frozen=True, slots=True)
class HaSettings:
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    priority: RestartPriority = RestartPriority.MEDIUM
    # Counted by admission control ("host failures to tolerate"): its reservation must find
    # room on the survivors of any N host failures.
    admission: bool = True

    @property
    def restarts_on_host_failure(self) -> bool:
        return self.restart_policy is not RestartPolicy.NEVER


def restart_order(priority: RestartPriority, qos_class: QosClass, name: str) -> tuple[int, int, str]:
    """Higher priority first; within one, guaranteed before burstable before best-effort."""
    return PRIORITY_RANK[priority], CLASS_RANK[qos_class], name


class HostFailurePhase(enum.Enum):
    # The lease is gone; the controller waits until the host has fenced itself.
    FENCING = "fencing"
    # The host's hypervisor still answers and runs some of its VMs: not restarted (agent down only).
    AGENT_DOWN = "agent-down"
    # Its VMs are being restarted elsewhere (some may wait for capacity).
    RESTARTING = "restarting"
    # Every VM that could be restarted was; the others are recorded as lost.
    FAILED_OVER = "failed-over"


@dataclass(frozen=True, slots=True)
class HostFailure:
    """/vdcos/ha/hosts/<node>: a host the HA controller declared failed, until it comes back."""

    node: str
    phase: HostFailurePhase
    declared_at: float          # wall clock, when the controller saw its lease gone
    restart_after: float        # wall clock: lease gone + fence timeout + margin
    message: str = ""
    restarted: tuple[str, ...] = ()   # VMs restarted elsewhere
    lost: tuple[tuple[str, str], ...] = ()       # (vm, why) never restarted
    pending: tuple[tuple[str, str], ...] = ()    # (vm, refusal) waiting for capacity
    still_running: tuple[str, ...] = ()          # VMs its hypervisor still runs


@dataclass(frozen=True, slots=True)
class HaEvent:
    """/vdcos/ha/events/<time-ordered id>: one HA decision, kept for a bounded count."""

    at: float
    kind: str       # host-failed | host-fenced | agent-down | vm-restarted | vm-lost | vm-pending | host-back
    node: str
    vm: str = ""
    epoch: int = 0
    message: str = ""
