"""HA on real libvirt hosts (`vdcos up`, 3 hosts, the shared pool, lease TTL 5 s), one host
loss of each kind: crash (every process of the host SIGKILLed), freeze (its agent SIGSTOPped
while its guests run, SIGCONT after the restart) and isolation (its uplink to etcd and its
underlay cables cut while everything on it runs). In each, the HA VMs run again on another
host, the guest's counter on its shared disk goes on from its last value, the `never` VM stays
down, and a sampler listing every host's running QEMUs every 100 ms never sees one VM on two
hosts at once, also while the lost host comes back. The machinery is the failover benchmark's."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from benchmarks.failover import HA_VMS, KINDS, NEVER, Bench
from tests.conftest import wait_until
from vdcos.cli.localdc import down
from vdcos.images import ensure
from vdcos.v1 import types_pb2 as pb

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    ensure()
    home: Path = tmp_path_factory.mktemp("ha")
    b = None
    try:
        b = Bench(home)
        b.create()
        yield b
    finally:
        try:
            if b is not None:
                b.close()
        finally:
            down(home, purge=True)


@pytest.mark.parametrize("kind", KINDS)
def test_a_lost_hosts_ha_vms_run_again_elsewhere_exactly_once(bench: Bench, kind: str) -> None:
    epochs = {v: bench.vm(v).placement.epoch for v in HA_VMS}
    never_on = bench.vm(NEVER).placement.node
    row = bench.run_once(kind)
    assert row["ok"], json.dumps(row, default=str)
    assert not row["doubles"] and row["new_host"] != row["host"]
    assert row["counter_from"] >= max(row["counter_before"] - 1, 1)  # the same disk, not a blank one
    for v in HA_VMS:
        got = bench.vm(v)
        assert got.placement.node != row["host"] and got.placement.epoch == epochs[v] + 1
        wait_until(lambda: bench.vm(v).status.phase == pb.VM_PHASE_RUNNING, 60)
    never = bench.vm(NEVER)
    assert never.placement.node == never_on
    assert all(h == never_on for h in bench.sampler.now.get(NEVER, []))
    if never_on == row["host"]:
        assert NEVER not in bench.sampler.now  # it stays down, also after its host came back
    assert not bench.sampler.doubles


def test_a_host_whose_agent_alone_died_keeps_its_running_guests(bench: Bench) -> None:
    """Its lease is gone, its hypervisor answers with the guests running: provably alive, so
    nothing is restarted elsewhere; the agent that comes back adopts them (same QEMUs)."""
    row = bench.agent_down_once()
    assert row["ok"], json.dumps(row, default=str)
    assert row["phase"] == "agent-down" and set(row["still_running"]) == set(row["vms"]) - {NEVER}


def test_a_shared_disk_in_use_cannot_be_opened_by_another_hosts_qemu(bench: Bench) -> None:
    """virtlockd, the second safeguard: the guest's definition started on a second host while
    the first runs it is refused, its disk's lease being held."""
    import xml.etree.ElementTree as ET

    import libvirt

    from vdcos.cli.localdc import host_root
    from vdcos.host.libvirtd import LibvirtHost

    node = bench.vm("ha-disk").placement.node
    other = next(h for h in bench.hosts if h != node)
    root = ET.fromstring(LibvirtHost.load(host_root(bench.home, node)).domains()["ha-disk"])
    root.find("name").text = "ha-disk-copy"  # type: ignore[union-attr]
    root.remove(root.find("uuid"))  # type: ignore[arg-type]
    for console in root.iter("log"):
        console.set("file", str(host_root(bench.home, other) / "ha-disk-copy.console"))
    conn = libvirt.open(LibvirtHost.load(host_root(bench.home, other)).uri)
    try:
        with pytest.raises(libvirt.libvirtError) as e:
            conn.createXML(ET.tostring(root, encoding="unicode"))
        assert "lock" in str(e.value).lower() or "busy" in str(e.value).lower(), e.value
    finally:
        conn.close()
    assert "ha-disk-copy" not in bench.sampler.now
