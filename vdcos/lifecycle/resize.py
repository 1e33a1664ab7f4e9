"""Resizing a VM: new vCPUs, memory, disk or network amounts, or another QoS policy, recorded in
ONE transaction with what it holds: its spec, its placement's QoS settings and reservation, its
host's allocation entry, its assignment and its project's quota all change together, compared
against the records they were computed from (the fit is the scheduler's own `fits`, on the host's
allocation without the VM's old entry). A VM that no longer fits on its host is refused with
the dimensions that are short; a shelved one is only re-specified (it is placed at its new size
when it starts).

What the host does with it (nodeagent/vms.py): a new QoS policy whose class and size stay the
same is applied live (cgroup shares and quota, the memory limit, disk throttles); new vCPUs or
memory need the guest restarted: the agent shuts it down (ACPI, forced after its stop timeout),
redefines it at the new size and starts it again. Because that costs the guest a reboot, a
running VM's vCPU or memory change must be asked with `restart`, as Nova's resize always reboots."""
from __future__ import annotations

from dataclasses import replace

from vdcos.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from vdcos.images import CATALOG, DEFAULT_PROFILE
from vdcos.lifecycle.power import spec_of
from vdcos.model import (Allocation, AllocEntry, Assignment, NodeSpec, PlacementRecord, PowerState, QosPolicy,
                         Resources, SchedulerConfig, VmSpec, dumps, policy_named, qos)
from vdcos.model.fit import fits
from vdcos.model.project import vm_usage
from vdcos.projects import records as projects
from vdcos.state import keys
from vdcos.state.rmw import Reads, Write, read_modify_write
from vdcos.state.store import Op, Put, Store


def needs_restart(old: VmSpec, new: VmSpec) -> bool:
    """What a running guest cannot take live here: its vCPU count and its memory size."""
    a, b = old.resources, new.resources
    return (a.vcpus, a.memory_mib) != (b.vcpus, b.memory_mib)


def resize(store: Store, name: str, *, resources: Resources | None = None, qos_policy: str | None = None,
           restart: bool = False, project: str | None = None) -> tuple[VmSpec, VmSpec]:
    """(spec before, spec after); the same spec twice when nothing changes."""

    def attempt(r: Reads) -> Write[tuple[VmSpec, VmSpec]]:
        r.load(keys.vm_spec(name), keys.vm_placement(name), keys.vm_migration(name))
        spec = spec_of(r, name, project)
        new = replace(spec, resources=resources if resources is not None else spec.resources,
                      qos_policy=qos_policy if qos_policy is not None else spec.qos_policy)
        if new == spec:
            return Write((spec, spec))
        need = CATALOG[new.image or DEFAULT_PROFILE].min_memory_mib
        if 0 < new.resources.memory_mib < need:
            raise InvalidArgument(f"invalid request: resources.memory_mib: image {new.image or DEFAULT_PROFILE} "
                                  f"needs at least {need} MiB", details=[("resources.memory_mib", f"at least {need} MiB")])
        policy = policy_named(new.policy_name, r.get(QosPolicy, keys.policy(new.policy_name)))
        if policy is None:
            raise NotFound(f"QoS policy {new.policy_name!r} not found")
        ops: list[Op] = [Put(keys.vm_spec(name), dumps(new))]
        place = r.get(PlacementRecord, keys.vm_placement(name))
        if place is not None:
            on = spec.power.state in (PowerState.ON, PowerState.PAUSED)
            if on and needs_restart(spec, new) and not restart:
                raise FailedPrecondition(
                    f"vm {name!r} runs: its vCPUs and memory change only with a restart of the guest "
                    f"(ask with restart, `--restart`), or stop it first")
            ops += _on_host(r, name, new, place, policy)
        a, b = spec.resources, new.resources
        ops += projects.charge(r, spec.project, vm_usage(b.vcpus, b.memory_mib, b.disk_gib)
                            + -vm_usage(a.vcpus, a.memory_mib, a.disk_gib))
        return Write((spec, new), ops)

    return read_modify_write(store, attempt, f"resize vm {name}")


def _on_host(r: Reads, name: str, new: VmSpec, place: PlacementRecord, policy: QosPolicy) -> list[Op]:
    """The placement, allocation entry and assignment at the new size, if it fits its host."""
    node = place.node
    r.load(keys.alloc(node), keys.node_spec(node), keys.CONFIG, keys.assign(node, name))
    settings, reserved = qos.resolve(new, policy), qos.reservation(new, policy)
    alloc = r.get(Allocation, keys.alloc(node)) or Allocation(node)
    host = r.get(NodeSpec, keys.node_spec(node))
    if host is None:
        raise FailedPrecondition(f"vm {name!r}: its host {node} is not registered")
    config = r.get(SchedulerConfig, keys.CONFIG) or SchedulerConfig()
    short = fits(host.capacity, config.overcommit, alloc.without(name), qos.placed_request(new, reserved),
                 settings.qos_class)
    if short:
        why = "; ".join(f"{s.dimension} ({s.pool}): requested {s.requested}, free {s.free}" for s in short)
        raise ResourceExhausted(f"vm {name!r} does not fit on its host {node} at the new size: {why}. "
                                "Shelve it and start it again to place it where it fits, or migrate it first",
                                details=[str(s) for s in short])
    old = next((e for e in alloc.entries if e.vm == name), None)
    entry = AllocEntry(name, settings.qos_class, reserved, new.policy_name,
                       held_by=old.held_by if old else "", ha_admission=new.ha.admission)
    ops: list[Op] = [Put(keys.vm_placement(name), dumps(replace(place, qos=settings, reserved=reserved))),
                     Put(keys.alloc(node), dumps(alloc.with_entry(entry)))]
    assigned = r.get(Assignment, keys.assign(node, name))
    if assigned is not None:
        ops.append(Put(keys.assign(node, name), dumps(replace(assigned, spec=new, qos=settings, reserved=reserved))))
    return ops
