"""`vdcos vm start | stop | reboot | suspend | resume | shelve | resize VM`: each asks the API for
the power state or size, then (unless --no-wait) follows the VM's status until its host has carried it out."""
from __future__ import annotations

import argparse
import time
from typing import Callable

from vdcos.cli.client import Client
from vdcos.cli.common import Subparsers, UsageError, emit, enum_name
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

POLL_S = 0.1
DEFAULT_WAIT_S = 120.0
COMMANDS = ("start", "stop", "reboot", "suspend", "resume", "shelve", "resize")
_DONE = {"start": "running", "stop": "stopped", "reboot": "rebooted", "suspend": "suspended", "resume": "running",
         "shelve": "shelved", "resize": "resized"}


def _phase(vm: pb.Vm) -> str:
    return enum_name(pb.VmPhase, vm.status.phase, "VM_PHASE_")


def _reached(command: str, asked: pb.Vm) -> Callable[[pb.Vm], bool]:
    """Whether the VM's status shows `command` carried out."""
    if command == "reboot":
        return lambda vm: vm.status.reboots >= asked.spec.reboots and vm.status.phase == pb.VM_PHASE_RUNNING
    if command == "resize":
        # Only a running guest restarted at its new size has something to wait for; it says so.
        r = asked.spec.resources
        return lambda vm: vm.status.message.startswith(f"resized to {max(r.vcpus, 1)} vCPU, {r.memory_mib} MiB")
    want = {"start": pb.VM_PHASE_RUNNING, "resume": pb.VM_PHASE_RUNNING, "stop": pb.VM_PHASE_STOPPED,
            "suspend": pb.VM_PHASE_PAUSED, "shelve": pb.VM_PHASE_SHELVED}[command]
    return lambda vm: vm.status.phase == want


def _wait(c: Client, args: argparse.Namespace, name: str, done: Callable[[pb.Vm], bool], what: str) -> pb.Vm:
    deadline = time.monotonic() + args.wait_timeout
    while True:
        vm = c.vms.GetVm(vm_pb.GetVmRequest(name=name), timeout=args.timeout).vm
        if done(vm):
            return vm
        if vm.status.phase == pb.VM_PHASE_FAILED:
            raise UsageError(f"vm {name}: {what} failed: {vm.status.message}")
        if time.monotonic() > deadline:
            raise UsageError(f"vm {name}: not {what} after {args.wait_timeout:.0f} s (phase {_phase(vm)}: "
                             f"{vm.status.message or 'no message'}); --wait-timeout waits longer")
        time.sleep(POLL_S)


def _ask(c: Client, args: argparse.Namespace) -> pb.Vm:
    name, t = args.name, args.timeout
    if args.vm_command == "start":
        return c.vms.StartVm(vm_pb.StartVmRequest(name=name), timeout=t).vm
    if args.vm_command == "stop":
        return c.vms.StopVm(vm_pb.StopVmRequest(name=name, force=args.force, timeout_s=args.stop_timeout),
                            timeout=t).vm
    if args.vm_command == "reboot":
        return c.vms.RebootVm(vm_pb.RebootVmRequest(name=name, hard=args.hard), timeout=t).vm
    if args.vm_command == "suspend":
        return c.vms.SuspendVm(vm_pb.SuspendVmRequest(name=name), timeout=t).vm
    if args.vm_command == "resume":
        return c.vms.ResumeVm(vm_pb.ResumeVmRequest(name=name), timeout=t).vm
    if args.vm_command == "resize":
        return _resize(c, args)
    return c.vms.ShelveVm(vm_pb.ShelveVmRequest(name=name), timeout=t).vm


def _resize(c: Client, args: argparse.Namespace) -> pb.Vm:
    """The VM's current amounts with the flags given over them."""
    vm = c.vms.GetVm(vm_pb.GetVmRequest(name=args.name), timeout=args.timeout).vm
    r = pb.Resources()
    r.CopyFrom(vm.spec.resources)
    for field in ("vcpus", "memory_mib", "disk_gib", "network_mbps", "disk_iops"):
        if getattr(args, field) is not None:
            setattr(r, field, getattr(args, field))
    changed = r != vm.spec.resources
    # A running guest with new vCPUs or memory is restarted by its host: that is waited for.
    args.restarts = vm.status.phase == pb.VM_PHASE_RUNNING and (r.vcpus, r.memory_mib) != (
        vm.spec.resources.vcpus, vm.spec.resources.memory_mib)
    if not changed and not args.policy:
        raise UsageError("resize: give at least one of --vcpus, --memory-mib, --disk-gib, --network-mbps, "
                         "--disk-iops, --policy")
    return c.vms.ResizeVm(vm_pb.ResizeVmRequest(name=args.name, resources=r if changed else None,
                                                qos_policy=args.policy or "", restart=args.restart),
                          timeout=args.timeout).vm


def run(c: Client, args: argparse.Namespace) -> int:
    command = args.vm_command
    started = time.monotonic()
    if command == "shelve" and not args.no_wait:
        # Only a stopped VM is shelved: stop it first (gracefully), as Nova's shelve does.
        vm = c.vms.GetVm(vm_pb.GetVmRequest(name=args.name), timeout=args.timeout).vm
        if vm.status.phase not in (pb.VM_PHASE_STOPPED, pb.VM_PHASE_SHELVED):
            c.vms.StopVm(vm_pb.StopVmRequest(name=args.name, timeout_s=args.stop_timeout), timeout=args.timeout)
            _wait(c, args, args.name, _reached("stop", vm), "stopped")
    vm = _ask(c, args)
    if not args.no_wait and (command != "resize" or getattr(args, "restarts", False)):
        vm = _wait(c, args, args.name, _reached(command, vm), _DONE[command])
    elapsed = time.monotonic() - started
    emit(args, vm, lambda: f"vm {args.name}: {_phase(vm).lower()}"
         + (f" on {vm.status.node}" if vm.status.node else "")
         + (f", {vm.status.reboots} reboots" if command == "reboot" else "")
         + ("" if args.no_wait else f" ({elapsed:.1f} s)"))
    return 0


def register(vsub: Subparsers) -> None:
    helps = {"start": "start a stopped VM (a shelved one is placed again first)",
             "stop": "stop a VM: the ACPI power button, forced off after --stop-timeout (its reservation stays)",
             "reboot": "reboot a running VM (ACPI), or --hard reset it",
             "suspend": "pause a running VM's vCPUs (its memory stays)",
             "resume": "resume a suspended VM",
             "shelve": "stop a VM and release its reservation (start places it again)",
             "resize": "change a VM's vCPUs, memory, disk, network or QoS policy, its reservation with them"}
    for command in COMMANDS:
        p = vsub.add_parser(command, help=helps[command])
        p.add_argument("name")
        p.add_argument("--no-wait", action="store_true", help="return once the API has recorded it")
        p.add_argument("--wait-timeout", type=float, default=DEFAULT_WAIT_S, metavar="S",
                       help=f"how long to wait for the VM's host to carry it out (default {DEFAULT_WAIT_S:.0f} s)")
        if command in ("stop", "shelve"):
            p.add_argument("--stop-timeout", type=int, default=0, metavar="S",
                           help="seconds the guest has to shut down before it is forced off (default 60)")
        if command == "stop":
            p.add_argument("--force", action="store_true", help="power it off at once, without asking the guest")
        if command == "reboot":
            p.add_argument("--hard", action="store_true", help="reset it, without asking the guest")
        if command == "resize":
            for flag in ("vcpus", "memory-mib", "disk-gib", "network-mbps", "disk-iops"):
                p.add_argument(f"--{flag}", type=int)
            p.add_argument("--policy", help="another QoS policy (applied live)")
            p.add_argument("--restart", action="store_true",
                           help="a running VM's new vCPUs or memory restart its guest: allow it")
