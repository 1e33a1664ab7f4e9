"""Power operations on a VM's record: which change of its desired power state an action asks
for (`decide`, pure), and the one transaction that records it (`set_power`, `shelve`).

The desired state lives in the VM's spec (model.Power), and the spec rides in its assignment,
so the host's agent carries the change out (nodeagent/vms.py) and a restarted agent, a
migration's destination and an HA restart all see it. Every write compares the spec, the
placement and the absence of a migration: a power change never races a move."""
from __future__ import annotations

import enum
import json
import time
from dataclasses import replace

from vdcos.errors import FailedPrecondition, NotFound
from vdcos.model import (Allocation, Assignment, PlacementGroup, PlacementRecord, Power, PowerState, VmPhase, VmSpec,
                         VmStatus, VmUsage, decode, dumps)
from vdcos.model.usage import opened
from vdcos.state import keys
from vdcos.state.rmw import Reads, Write, read_modify_write
from vdcos.state.store import Compare, Delete, Op, Put, Store

DEFAULT_STOP_TIMEOUT_S = 60
MAX_STOP_TIMEOUT_S = 3600


class Action(enum.Enum):
    START = "start"
    STOP = "stop"
    REBOOT = "reboot"
    SUSPEND = "suspend"
    RESUME = "resume"
    SHELVE = "shelve"


# What each action needs the VM to be, by its desired state; an action whose target is the
# current state changes nothing (asking twice is not an error).
_REFUSED: dict[tuple[Action, PowerState], str] = {
    (Action.START, PowerState.PAUSED): "it is suspended: resume it",
    (Action.REBOOT, PowerState.OFF): "it is stopped: start it",
    (Action.REBOOT, PowerState.PAUSED): "it is suspended: resume it first",
    (Action.REBOOT, PowerState.SHELVED): "it is shelved: start it",
    (Action.SUSPEND, PowerState.OFF): "it is stopped: only a running VM is suspended",
    (Action.SUSPEND, PowerState.SHELVED): "it is shelved: only a running VM is suspended",
    (Action.RESUME, PowerState.OFF): "it is stopped, not suspended: start it",
    (Action.RESUME, PowerState.SHELVED): "it is shelved, not suspended: start it",
    (Action.SHELVE, PowerState.ON): "it is running: stop it first",
    (Action.SHELVE, PowerState.PAUSED): "it is suspended: stop it first",
}


def decide(name: str, power: Power, action: Action, *, hard: bool = False,
           timeout_s: int = DEFAULT_STOP_TIMEOUT_S) -> Power:
    """The desired power after `action`, or FailedPrecondition saying why it cannot be asked."""
    why = _REFUSED.get((action, power.state))
    if why:
        raise FailedPrecondition(f"vm {name!r} cannot {action.value}: {why}")
    state = power.state
    if action is Action.START:
        return replace(power, state=PowerState.ON, hard=False)
    if action is Action.STOP:
        if state in (PowerState.OFF, PowerState.SHELVED):
            # A forced stop overtakes a graceful one still waiting for the guest.
            return replace(power, hard=True) if hard and state is PowerState.OFF else power
        return replace(power, state=PowerState.OFF, hard=hard, stop_timeout_s=timeout_s)
    if action is Action.REBOOT:
        return replace(power, reboots=power.reboots + 1, hard=hard)
    if action is Action.SUSPEND:
        return replace(power, state=PowerState.PAUSED)
    if action is Action.RESUME:
        return replace(power, state=PowerState.ON)
    return replace(power, state=PowerState.SHELVED)


def spec_of(r: Reads, name: str, project: str | None) -> VmSpec:
    spec = r.get(VmSpec, keys.vm_spec(name))
    if spec is None or (project is not None and spec.project != project):
        raise NotFound(f"vm {name!r} not found")
    mig = r.kv(keys.vm_migration(name))
    if mig is not None:
        raise FailedPrecondition(f"vm {name!r} is live-migrating ({mig.value.decode()}): wait for it or cancel it")
    return spec


def set_power(store: Store, name: str, action: Action, *, project: str | None = None, hard: bool = False,
              timeout_s: int = DEFAULT_STOP_TIMEOUT_S) -> tuple[VmSpec, VmSpec]:
    """Record the power state `action` asks for in the VM's spec and in its assignment, in one
    transaction; (spec before, spec after). Not for starting a shelved VM: it needs a host
    (the scheduler's unshelve)."""
    assert action is not Action.SHELVE

    def attempt(r: Reads) -> Write[tuple[VmSpec, VmSpec]]:
        r.load(keys.vm_spec(name), keys.vm_placement(name), keys.vm_migration(name))
        spec = spec_of(r, name, project)
        if action is Action.START and spec.power.state is PowerState.SHELVED:
            raise FailedPrecondition(f"vm {name!r} is shelved: starting it places it again")
        power = decide(name, spec.power, action, hard=hard, timeout_s=timeout_s)
        if power == spec.power:
            return Write((spec, spec))
        new = replace(spec, power=power)
        ops: list[Op] = [Put(keys.vm_spec(name), dumps(new))]
        place = r.get(PlacementRecord, keys.vm_placement(name))
        if place is not None:
            assigned = r.get(Assignment, keys.assign(place.node, name))
            if assigned is not None:
                ops.append(Put(keys.assign(place.node, name), dumps(replace(assigned, spec=new))))
        return Write((spec, new), ops)

    return read_modify_write(store, attempt, f"{action.value} vm {name}")


def shelve(store: Store, name: str, *, project: str | None = None) -> tuple[VmSpec, str]:
    """Release a stopped VM's reservation: its placement, assignment and status go, its host's
    allocation and its group forget it, its spec says shelved. Its volumes, ports and quota
    charge stay (a shelved VM is still its project's). (spec after, the host it left: "" when
    it was shelved already)."""

    def attempt(r: Reads) -> Write[tuple[VmSpec, str]]:
        r.load(keys.vm_spec(name), keys.vm_placement(name), keys.vm_migration(name))
        spec = spec_of(r, name, project)
        power = decide(name, spec.power, Action.SHELVE)
        place = r.get(PlacementRecord, keys.vm_placement(name))
        if power == spec.power or place is None:
            return Write((spec, ""))
        node = place.node
        status_kv = r.peek(keys.vm_status(node, name))
        status = decode(VmStatus, json.loads(status_kv.value)) if status_kv else None
        if status is None or status.phase is not VmPhase.STOPPED:
            raise FailedPrecondition(f"vm {name!r} cannot shelve: it is not stopped yet on {node} "
                                     f"(phase {status.phase.value if status else 'unknown'}); wait for it")
        new = replace(spec, power=power)
        # Metered up to now at the reservation it held, nothing from now on (controllers/metering.py
        # keeps the record; one too young for a record gets it here, from its placement).
        used = r.get(VmUsage, keys.usage(name)) or opened(spec, place)
        # The status is compared too: a guest that came back up meanwhile is not shelved.
        ops: list[Op] = [Put(keys.vm_spec(name), dumps(new)), Delete(keys.vm_placement(name)),
                         Delete(keys.assign(node, name)), Delete(keys.vm_status(node, name)),
                         Put(keys.usage(name), dumps(replace(used.as_of(time.time()), reserved=(0, 0, 0))))]
        alloc = r.get(Allocation, keys.alloc(node))
        if alloc is not None and alloc.has(name):
            ops.append(Put(keys.alloc(node), dumps(alloc.without(name))))
        if spec.placement_group:
            group = r.get(PlacementGroup, keys.group(spec.placement_group))
            if group is not None:
                rest = group.without(name)
                ops.append(Put(keys.group(rest.name), dumps(rest)) if rest.members else Delete(keys.group(rest.name)))
        assert status_kv is not None
        return Write((new, node), ops, [Compare(status_kv.key, "mod", "==", status_kv.mod_revision)])

    return read_modify_write(store, attempt, f"shelve vm {name}")
