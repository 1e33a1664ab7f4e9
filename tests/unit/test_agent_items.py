"""The node agent reconciles each VM on its own: one that fails reports why and is retried after
its backoff, while the others on the host start as usual (in-memory store, sim driver)."""
from __future__ import annotations

import json
from typing import Iterator

import pytest

from tests.conftest import wait_until
from vdcos.model import (Assignment, Disk, Nic, NodeSpec, PlacementRecord, QosClass, QosSettings, Resources, VmPhase,
                         VmSpec, VmStatus, decode, dumps)
from vdcos.nodeagent.agent import NodeAgent
from vdcos.nodeagent.driver import DomainInfo, DriverError
from vdcos.nodeagent.sim import SimDriver
from vdcos.state import keys
from vdcos.state.store import MemoryStore

HOST = Resources(16, 65536, 1000, 10000)


class FlakyDriver(SimDriver):
    """A hypervisor that cannot define the VMs named in `broken` (until they are taken out)."""

    def __init__(self, broken: set[str]) -> None:
        super().__init__(HOST)
        self.broken = broken

    def define(self, spec: VmSpec, qos: QosSettings, nics: tuple[Nic, ...] = (),
               disks: tuple[Disk, ...] = ()) -> DomainInfo:
        if spec.name in self.broken:
            raise DriverError(f"cannot define {spec.name}: no such machine type")
        return super().define(spec, qos, nics, disks)


def status(store: MemoryStore, vm: str) -> VmStatus | None:
    kv = store.get(keys.vm_status("n1", vm))
    return decode(VmStatus, json.loads(kv.value)) if kv else None


@pytest.fixture
def host() -> Iterator[tuple[MemoryStore, FlakyDriver, NodeAgent]]:
    store = MemoryStore()
    driver = FlakyDriver({"vm-b"})
    agent = NodeAgent(store, NodeSpec("n1", HOST), driver, resync_s=0.1).start()
    yield store, driver, agent
    agent.stop()


def test_a_vm_that_fails_never_holds_up_the_others_and_is_retried(
        host: tuple[MemoryStore, FlakyDriver, NodeAgent]) -> None:
    store, driver, agent = host
    for name in ("vm-a", "vm-b", "vm-c"):
        a = Assignment(VmSpec(name, Resources(1, 512)), QosSettings(QosClass.BURSTABLE, 1024), Resources(1, 512))
        # As the scheduler commits it: the placement (the agent checks its epoch) and the assignment.
        store.put(keys.vm_placement(name), dumps(PlacementRecord("n1", a.qos, a.reserved, 0.0, 0.0)))
        store.put(keys.assign("n1", name), dumps(a))
    assert wait_until(lambda: all((s := status(store, n)) and s.phase is VmPhase.RUNNING for n in ("vm-a", "vm-c")), 5)
    assert wait_until(lambda: (s := status(store, "vm-b")) and "reconcile failed" in s.message, 5)
    st = status(store, "vm-b")
    assert st is not None and st.phase is VmPhase.SCHEDULED
    assert "cannot define vm-b: no such machine type" in st.message
    assert sorted(agent.created) == ["vm-a", "vm-c"]
    driver.broken.clear()  # the hypervisor recovers: the VM's next retry starts it
    assert wait_until(lambda: (s := status(store, "vm-b")) and s.phase is VmPhase.RUNNING, 10)
    st = status(store, "vm-b")
    assert st is not None and "reconcile failed" not in st.message
    assert sorted(agent.created) == ["vm-a", "vm-b", "vm-c"]


def test_a_guest_here_without_an_assignment_is_destroyed_only_once_etcd_says_so(
        host: tuple[MemoryStore, FlakyDriver, NodeAgent]) -> None:
    """A guest that just moved in runs before its assignment (or the migration's record) reaches
    this agent's watches: it is kept while etcd places it here or a migration of it is in flight,
    and destroyed once the VM is deleted or placed elsewhere."""
    store, driver, agent = host
    spec = VmSpec("moved-in", Resources(1, 512))
    qos = QosSettings(QosClass.BURSTABLE, 1024)
    driver.define(spec, qos)  # as libvirt's migration defines it on the destination
    driver.start(spec.name)
    store.put(keys.vm_migration(spec.name), b"mig-1")
    agent.reconcile()
    assert [d.name for d in driver.list_domains()] == ["moved-in"]
    store.delete(keys.vm_migration(spec.name))  # the control plane finished it: placed here
    store.put(keys.vm_placement(spec.name), dumps(PlacementRecord("n1", qos, Resources(1, 512), 0.0, 0.0)))
    agent.reconcile()
    assert [d.name for d in driver.list_domains()] == ["moved-in"]
    store.put(keys.vm_placement(spec.name), dumps(PlacementRecord("n2", qos, Resources(1, 512), 0.0, 0.0)))
    agent.reconcile()
    assert driver.list_domains() == []
