"""A VM's power operations on two real libvirt hosts, as `vdcos up --driver libvirt` makes them,
through the `vdcos vm` CLI: stop (the guest hears the ACPI power button and powers off; no QEMU
is left; its reservation stays), start (a new boot: the counter starts over), reboot (graceful
and hard), suspend and resume (the counter pauses and goes on from where it was), a forced
stop, and shelve then start (the reservation released, the VM placed again and booted). The
serial console over ConsoleVm and `vdcos vm console`: live boot output, a shell that answers,
the console following a live migration, refused to a reader and to a stopped VM."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import grpc
import libvirt
import pytest

from tests.conftest import wait_until
from tests.e2e.dc import Datacenter, vdcos
from vdcos.cli.client import Client
from vdcos.images import counters, ensure
from vdcos.model import Allocation, decode
from vdcos.security.pki import TlsFiles
from vdcos.state import keys
from vdcos.v1 import token_service_pb2 as tok_pb
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


class Console:
    """A ConsoleVm stream held open by a test: keystrokes in, the guest's bytes and notices out."""

    def __init__(self, client: Client, name: str) -> None:
        self.keys: queue.Queue[vm_pb.ConsoleVmRequest | None] = queue.Queue()
        self.keys.put(vm_pb.ConsoleVmRequest(name=name))
        self.text = ""
        self.notices: list[str] = []
        self.call = client.vms.ConsoleVm(iter(self.keys.get, None))
        self.error: grpc.RpcError | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for answer in self.call:
                if answer.notice:
                    self.notices.append(answer.notice)
                else:
                    self.text += answer.data.decode(errors="replace")
        except grpc.RpcError as e:
            self.error = e

    def type(self, line: str) -> None:
        self.keys.put(vm_pb.ConsoleVmRequest(data=line.encode()))

    def ask(self, line: str, answer: str, timeout: float = 30.0) -> None:
        """Type `line` until `answer` shows: keys typed while a freshly booted shell sets its
        terminal up are lost, as on any serial console."""
        deadline = time.monotonic() + timeout
        while answer not in self.text:
            assert time.monotonic() < deadline, f"no {answer!r} on the console within {timeout} s: {self.text[-400:]!r}"
            self.type(line)
            again = time.monotonic() + 3.0
            while answer not in self.text and time.monotonic() < again:
                time.sleep(0.1)

    def close(self) -> None:
        self.keys.put(None)
        self.call.cancel()


def test_console_shows_boot_output_answers_a_command_and_follows_a_migration(dc: Datacenter) -> None:
    vdcos(dc.home, "vm", "create", "tty", "--vcpus", "1", "--memory-mib", "256", "--disk-gib", "1")
    wait_until(lambda: vm(dc, "tty").status.phase == pb.VM_PHASE_RUNNING, timeout=60)
    node = node_of(dc, "tty")
    con = Console(dc.client, "tty")
    try:
        wait_until(lambda: con.notices, timeout=10)
        assert con.notices[0] == f"attached to tty on {node}"
        wait_until(lambda: "CNT " in con.text, timeout=90, every=0.2)
        dc.client.vms.RebootVm(vm_pb.RebootVmRequest(name="tty", hard=True))
        wait_until(lambda: "GUEST-BOOTED" in con.text, timeout=90, every=0.2)  # boot output, live
        wait_until(lambda: "CNT " in con.text[con.text.rindex("GUEST-BOOTED"):], timeout=60, every=0.2)
        con.ask("echo answer-$((40+2))\n", "answer-42")

        other = "host-2" if node == "host-1" else "host-1"
        vdcos(dc.home, "vm", "migrate", "tty", "--to", other)
        wait_until(lambda: any(n == f"tty moved: attached on {other}" for n in con.notices), timeout=30)
        con.ask("echo moved-$((6*7))\n", "moved-42")
        assert con.error is None
    finally:
        con.close()

    out = subprocess.run([sys.executable, "-m", "vdcos.cli.main", "--home", str(dc.home), "vm", "console", "tty",
                          "--linger", "3"], input="echo via-cli-$((2*21))\n", capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "[vdcos: attached to tty on" in out.stdout and "via-cli-42" in out.stdout

    secret = dc.client.tokens.CreateToken(tok_pb.CreateTokenRequest(name="peek", role="reader")).secret
    reader = Client(dc.state.api, TlsFiles(Path(dc.state.ca)), secret)
    try:
        with pytest.raises(grpc.RpcError) as e:
            list(reader.vms.ConsoleVm(iter([vm_pb.ConsoleVmRequest(name="tty")]), timeout=10))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        reader.channel.close()
    vdcos(dc.home, "vm", "stop", "tty", "--force")
    with pytest.raises(grpc.RpcError) as e:
        list(dc.client.vms.ConsoleVm(iter([vm_pb.ConsoleVmRequest(name="tty")]), timeout=10))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    vdcos(dc.home, "vm", "delete", "tty")


def test_resize_a_new_policy_live_and_new_vcpus_and_memory_with_a_restart(dc: Datacenter) -> None:
    vdcos(dc.home, "vm", "create", "grow", "--vcpus", "1", "--memory-mib", "256", "--disk-gib", "1")
    wait_until(lambda: vm(dc, "grow").status.phase == pb.VM_PHASE_RUNNING, timeout=60)
    node = node_of(dc, "grow")
    host = dc.host(node)
    wait_until(lambda: len(counters(dc.console(node, "grow"))) >= 3, timeout=90, every=0.2)
    pid = host.qemus()["grow"]
    conn = libvirt.open(host.uri)
    try:
        dom = conn.lookupByName("grow")
        assert dom.schedulerParameters()["cpu_shares"] == 1024
        vdcos(dc.home, "policy", "apply", "-f", str(_policy_file(dc.home)))
        vdcos(dc.home, "vm", "resize", "grow", "--policy", "heavy")
        wait_until(lambda: dom.schedulerParameters()["cpu_shares"] == 4096, timeout=30)
        assert host.qemus()["grow"] == pid, "a new policy is applied to the running guest"

        seen = console_len(dc, "grow")
        out = vdcos(dc.home, "vm", "resize", "grow", "--vcpus", "2", "--memory-mib", "384", "--restart")
        assert "running on" in out
        assert reserved_on(dc, node, "grow")
        dom = conn.lookupByName("grow")
        assert dom.info()[3] == 2 and dom.info()[1] == 384 * 1024
        assert host.qemus()["grow"] != pid, "new vCPUs and memory: the guest was restarted"
        assert "GUEST-POWEROFF" in dc.console(node, "grow")[seen:], "it was shut down through ACPI first"
        wait_until(lambda: len(booted_after(dc, "grow", seen)) >= 2, timeout=90, every=0.2)
    finally:
        conn.close()
    con = Console(dc.client, "grow")
    try:
        con.ask("echo cpus-$(grep -c ^processor /proc/cpuinfo)\n", "cpus-2")
    finally:
        con.close()
    v = vm(dc, "grow")
    assert v.placement.reserved.vcpus == 2 and v.placement.reserved.memory_mib == 384
    vdcos(dc.home, "vm", "delete", "grow")


def _policy_file(home: Path) -> Path:
    f = home / "heavy.yaml"
    f.write_text("kind: QosPolicy\nname: heavy\nqos_class: burstable\ncpu_weight: 400\n")
    return f
