"""A VM's power operations on two real libvirt hosts, as `vdcos up --driver libvirt` makes them,
through the `vdcos vm` CLI: stop (the guest hears the ACPI power button and powers off; no QEMU
is left; its reservation stays), start (a new boot: the counter starts over), reboot (graceful
and hard), suspend and resume (the counter pauses and goes on from where it was), a forced
stop, and shelve then start (the reservation released, the VM placed again and booted)."""
from __future__ import annotations

import json
from typing import Iterator

import pytest

from tests.conftest import wait_until
from tests.e2e.dc import Datacenter, vdcos
from vdcos.images import counters, ensure
from vdcos.model import Allocation, decode
from vdcos.state import keys
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Datacenter]:
    ensure()
    home = tmp_path_factory.mktemp("life") / "dc"
    vdcos(home, "up", "--hosts", "2", "--driver", "libvirt")
    d = Datacenter(home)
    yield d
    d.close()
    vdcos(home, "down", "--purge")
    assert not any(p.running() for p in d.state.procs), "vdcos down left processes behind"


def vm(d: Datacenter, name: str) -> pb.Vm:
    return d.client.vms.GetVm(vm_pb.GetVmRequest(name=name)).vm


def node_of(d: Datacenter, name: str) -> str:
    return vm(d, name).placement.node


def booted_after(d: Datacenter, name: str, offset: int) -> list[int]:
    """The counter values its new boot printed, once it booted again after `offset` of its console."""
    text = d.console(node_of(d, name), name)[offset:]
    return counters(text[text.rindex("GUEST-BOOTED"):]) if "GUEST-BOOTED" in text else []


def console_len(d: Datacenter, name: str) -> int:
    return len(d.console(node_of(d, name), name))


def reserved_on(d: Datacenter, node: str, name: str) -> bool:
    kv = d.store.get(keys.alloc(node))
    return kv is not None and decode(Allocation, json.loads(kv.value)).has(name)


@pytest.fixture(scope="module")
def web(dc: Datacenter) -> str:
    vdcos(dc.home, "vm", "create", "web", "--vcpus", "1", "--memory-mib", "256", "--disk-gib", "1")
    wait_until(lambda: vm(dc, "web").status.phase == pb.VM_PHASE_RUNNING, timeout=60)
    wait_until(lambda: len(counters(dc.console(node_of(dc, "web"), "web"))) >= 3, timeout=90, every=0.2)
    return "web"


def test_stop_powers_the_guest_off_through_acpi_and_start_boots_it_again(dc: Datacenter, web: str) -> None:
    node = node_of(dc, web)
    host = dc.host(node)
    assert web in host.qemus()
    out = vdcos(dc.home, "vm", "stop", web)
    assert f"vm {web}: stopped on {node}" in out
    assert web not in host.qemus(), "no QEMU left for a stopped VM"
    assert vm(dc, web).status.phase == pb.VM_PHASE_STOPPED
    assert "GUEST-POWEROFF" in dc.console(node, web), "the guest heard the power button and shut itself down"
    assert reserved_on(dc, node, web), "a stopped VM keeps its reservation"
    assert web in host.domains(), "its definition stays"

    last = counters(dc.console(node, web))[-1]
    seen = console_len(dc, web)
    out = vdcos(dc.home, "vm", "start", web)
    assert f"vm {web}: running on {node}" in out
    assert web in host.qemus()
    wait_until(lambda: len(booted_after(dc, web, seen)) >= 2, timeout=90, every=0.2)
    again = booted_after(dc, web, seen)
    assert again[0] == 1 and last > 1, "a new boot: the counter starts over"


def test_reboot_graceful_and_hard_boot_the_guest_again(dc: Datacenter, web: str) -> None:
    node = node_of(dc, web)
    for hard, n in ((False, 1), (True, 2)):
        wait_until(lambda: len(counters(dc.console(node, web))) >= 3, timeout=90, every=0.2)
        seen = console_len(dc, web)
        pid = dc.host(node).qemus()[web]
        out = vdcos(dc.home, "vm", "reboot", web, *(["--hard"] if hard else []))
        assert f"{n} reboots" in out
        wait_until(lambda: booted_after(dc, web, seen)[:1] == [1], timeout=90, every=0.2)
        text = dc.console(node, web)[seen:]
        assert ("GUEST-POWEROFF" in text) is not hard, "graceful asks the guest; hard resets it"
        assert dc.host(node).qemus()[web] == pid, "a reboot keeps its QEMU"
        assert vm(dc, web).status.reboots == n and vm(dc, web).status.phase == pb.VM_PHASE_RUNNING


def test_suspend_pauses_the_counter_and_resume_goes_on_from_it(dc: Datacenter, web: str) -> None:
    node = node_of(dc, web)
    wait_until(lambda: len(counters(dc.console(node, web))) >= 3, timeout=90, every=0.2)
    vdcos(dc.home, "vm", "suspend", web)
    assert vm(dc, web).status.phase == pb.VM_PHASE_PAUSED
    frozen = counters(dc.console(node, web))
    import time
    time.sleep(2.0)
    assert counters(dc.console(node, web)) == frozen, "a suspended guest prints nothing"
    assert web in dc.host(node).qemus(), "its QEMU and memory stay"
    vdcos(dc.home, "vm", "resume", web)
    wait_until(lambda: len(counters(dc.console(node, web))) > len(frozen) + 2, timeout=30, every=0.2)
    after = counters(dc.console(node, web))[len(frozen):]
    assert after[0] == frozen[-1] + 1, "resumed where it paused, not booted again"


def test_forced_stop_and_shelve_release_then_start_places_it_again(dc: Datacenter, web: str) -> None:
    node = node_of(dc, web)
    seen = console_len(dc, web)
    vdcos(dc.home, "vm", "stop", web, "--force")
    assert "GUEST-POWEROFF" not in dc.console(node, web)[seen:], "forced: the guest was not asked"
    assert web not in dc.host(node).qemus()

    out = vdcos(dc.home, "vm", "shelve", web)
    assert f"vm {web}: shelved" in out
    v = vm(dc, web)
    assert v.status.phase == pb.VM_PHASE_SHELVED and not v.placement.node
    assert not reserved_on(dc, node, web)
    wait_until(lambda: web not in dc.host(node).domains(), timeout=30)

    out = vdcos(dc.home, "vm", "start", web)
    assert "running on" in out
    new = node_of(dc, web)
    assert reserved_on(dc, new, web) and web in dc.host(new).qemus()
    wait_until(lambda: len(counters(dc.console(new, web))) >= 2, timeout=90, every=0.2)
    vdcos(dc.home, "vm", "delete", web)
