"""Power operations through the real API, etcd and sim agents: stop, start, reboot, suspend,
resume and shelve carried out by the VM's host and reported in its status and events; refusals
that change nothing; a restarted agent, an HA restart and the scheduler all honouring the
desired power state; shelve releasing the reservation, start placing the VM again; the console's
refusals; resize changing reservation, quota and guest together, or nothing."""
from __future__ import annotations

import json
from typing import Callable

import grpc
import pytest

from tests.conftest import Cluster, wait_until
from vdcos.model import AllocEntry, Allocation, decode
from vdcos.nodeagent.agent import NodeAgent
from vdcos.nodeagent.driver import DomainState
from vdcos.state import keys
from vdcos.v1 import event_service_pb2 as ev_pb
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import project_service_pb2 as proj_pb
from vdcos.v1 import qos_policy_service_pb2 as pol_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

pytestmark = pytest.mark.etcd


def spec(name: str, memory_mib: int = 1024, **kw: object) -> pb.VmSpec:
    return pb.VmSpec(name=name, resources=pb.Resources(vcpus=2, memory_mib=memory_mib, disk_gib=1),
                     **kw)  # type: ignore[arg-type]


def vm(c: Cluster, name: str) -> pb.Vm:
    return c.client.vms.GetVm(vm_pb.GetVmRequest(name=name)).vm


def phase_is(c: Cluster, name: str, phase: int) -> Callable[[], bool]:
    return lambda: vm(c, name).status.phase == phase


def domain_state(c: Cluster, node: str, name: str) -> DomainState | None:
    return next((d.state for d in c.agents[node].driver.list_domains() if d.name == name), None)


def alloc(c: Cluster, node: str) -> Allocation:
    kv = c.store.get(keys.alloc(node))
    return decode(Allocation, json.loads(kv.value)) if kv else Allocation(node)


def event_kinds(c: Cluster, name: str) -> list[str]:
    got = c.client.events.ListEvents(ev_pb.ListEventsRequest(filter=ev_pb.EventFilter(vm=name), page_size=1000))
    return [e.kind for e in reversed(got.events)]


def code_of(fn: Callable[..., object], request: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        fn(request)
    return e.value.code()


def test_stop_start_suspend_resume_and_reboot_are_carried_out_by_the_host(cluster: Cluster) -> None:
    c = cluster
    c.add_node("h1")
    c.create_on("h1", spec("web"))
    vms = c.client.vms

    got = vms.StopVm(vm_pb.StopVmRequest(name="web")).vm
    assert got.spec.power_state == pb.POWER_STATE_OFF
    wait_until(phase_is(c, "web", pb.VM_PHASE_STOPPED))
    assert domain_state(c, "h1", "web") is DomainState.STOPPED
    assert alloc(c, "h1").has("web"), "a stopped VM keeps its reservation by default"
    assert vms.StopVm(vm_pb.StopVmRequest(name="web")).vm.spec.power_state == pb.POWER_STATE_OFF  # twice: no error

    vms.StartVm(vm_pb.StartVmRequest(name="web"))
    wait_until(phase_is(c, "web", pb.VM_PHASE_RUNNING))
    assert domain_state(c, "h1", "web") is DomainState.RUNNING

    vms.SuspendVm(vm_pb.SuspendVmRequest(name="web"))
    wait_until(phase_is(c, "web", pb.VM_PHASE_PAUSED))
    assert domain_state(c, "h1", "web") is DomainState.PAUSED
    vms.ResumeVm(vm_pb.ResumeVmRequest(name="web"))
    wait_until(phase_is(c, "web", pb.VM_PHASE_RUNNING))
    assert domain_state(c, "h1", "web") is DomainState.RUNNING

    assert vms.RebootVm(vm_pb.RebootVmRequest(name="web")).vm.spec.reboots == 1
    assert vms.RebootVm(vm_pb.RebootVmRequest(name="web", hard=True)).vm.spec.reboots == 2
    wait_until(lambda: vm(c, "web").status.reboots == 2)
    assert vm(c, "web").status.phase == pb.VM_PHASE_RUNNING

    wait_until(lambda: "vm.rebooted" in event_kinds(c, "web"))
    kinds = [k for k in event_kinds(c, "web") if k in ("vm.stopped", "vm.started", "vm.suspended", "vm.resumed")]
    assert kinds == ["vm.started", "vm.stopped", "vm.started", "vm.suspended", "vm.resumed"]
    assert c.agents["h1"].created == ["web"], "start reuses the stopped guest's domain"


def test_refused_power_operations_change_nothing(cluster: Cluster) -> None:
    c = cluster
    c.add_node("h1")
    c.add_node("h2")
    c.create_on("h1", spec("web"))
    vms = c.client.vms
    vms.StopVm(vm_pb.StopVmRequest(name="web"))
    wait_until(phase_is(c, "web", pb.VM_PHASE_STOPPED))
    before = c.store.get(keys.vm_spec("web"))
    assert before is not None

    refused = [(vms.RebootVm, vm_pb.RebootVmRequest(name="web")), (vms.SuspendVm, vm_pb.SuspendVmRequest(name="web")),
               (vms.ResumeVm, vm_pb.ResumeVmRequest(name="web"))]
    for fn, req in refused:
        assert code_of(fn, req) == grpc.StatusCode.FAILED_PRECONDITION
    mig = c.client.migrations
    with pytest.raises(grpc.RpcError) as e:
        mig.MigrateVm(mig_pb.MigrateVmRequest(vm="web", target_node="h2"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "only a running VM" in (e.value.details() or "")
    assert code_of(vms.StartVm, vm_pb.StartVmRequest(name="nope")) == grpc.StatusCode.NOT_FOUND
    assert code_of(vms.StopVm, vm_pb.StopVmRequest(name="Bad Name!")) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        vms.StopVm(vm_pb.StopVmRequest(name="web", timeout_s=-1))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "timeout_s" in (e.value.details() or "")
    with pytest.raises(grpc.RpcError) as e:
        vms.CreateVm(vm_pb.CreateVmRequest(spec=spec("paused", power_state=pb.POWER_STATE_PAUSED)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "power_state" in (e.value.details() or "")
    after = c.store.get(keys.vm_spec("web"))
    assert after is not None and after.mod_revision == before.mod_revision

    vms.StartVm(vm_pb.StartVmRequest(name="web"))
    wait_until(phase_is(c, "web", pb.VM_PHASE_RUNNING))
    assert code_of(vms.ShelveVm, vm_pb.ShelveVmRequest(name="web")) == grpc.StatusCode.FAILED_PRECONDITION
    vms.SuspendVm(vm_pb.SuspendVmRequest(name="web"))
    assert code_of(vms.StartVm, vm_pb.StartVmRequest(name="web")) == grpc.StatusCode.FAILED_PRECONDITION
    assert code_of(vms.RebootVm, vm_pb.RebootVmRequest(name="web")) == grpc.StatusCode.FAILED_PRECONDITION


def test_a_restarted_agent_keeps_a_stopped_vm_stopped_and_never_starts_one_created_stopped(cluster: Cluster) -> None:
    c = cluster
    c.add_node("h1")
    c.create_on("h1", spec("web"))
    c.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec("cold", power_state=pb.POWER_STATE_OFF)))
    wait_until(phase_is(c, "cold", pb.VM_PHASE_STOPPED))
    assert vm(c, "cold").placement.node == "h1" and alloc(c, "h1").has("cold")
    assert domain_state(c, "h1", "cold") is None, "a VM created stopped is not even defined"
    c.client.vms.StopVm(vm_pb.StopVmRequest(name="web"))
    wait_until(phase_is(c, "web", pb.VM_PHASE_STOPPED))

    old = c.agents["h1"]
    old.stop()
    back = NodeAgent(c.store, old.spec, old.driver, lease_ttl=10, resync_s=0.2,
                     pools=old.storage.pools if old.storage else None).start()
    c.agents["h1"] = back
    wait_until(lambda: back.lease and c.server.cache.node("h1") is not None)
    import time
    time.sleep(1.5)  # several reconcile rounds of the new agent
    assert vm(c, "web").status.phase == pb.VM_PHASE_STOPPED and domain_state(c, "h1", "web") is DomainState.STOPPED
    assert domain_state(c, "h1", "cold") is None and back.created == []

    c.client.vms.StartVm(vm_pb.StartVmRequest(name="cold"))
    wait_until(phase_is(c, "cold", pb.VM_PHASE_RUNNING))
    assert back.created == ["cold"]


def test_shelve_releases_the_reservation_and_start_places_the_vm_again(cluster: Cluster) -> None:
    c = cluster
    c.add_node("h1")  # 64 GiB, memory not overcommitted (conftest's HOST): one 40 GiB VM at a time
    c.create_on("h1", spec("big", memory_mib=40960))
    vms = c.client.vms
    with pytest.raises(grpc.RpcError) as e:
        vms.CreateVm(vm_pb.CreateVmRequest(spec=spec("other", memory_mib=40960)))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    vms.StopVm(vm_pb.StopVmRequest(name="big"))
    with pytest.raises(grpc.RpcError) as e:  # stopped keeps the reservation: still no room
        vms.CreateVm(vm_pb.CreateVmRequest(spec=spec("other", memory_mib=40960)))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    wait_until(phase_is(c, "big", pb.VM_PHASE_STOPPED))

    shelved = vms.ShelveVm(vm_pb.ShelveVmRequest(name="big")).vm
    assert shelved.status.phase == pb.VM_PHASE_SHELVED and not shelved.placement.node
    assert not alloc(c, "h1").has("big")
    wait_until(lambda: c.server.cache.node("h1") is not None and not c.server.cache.node("h1").allocation.has("big"))
    wait_until(lambda: domain_state(c, "h1", "big") is None)
    wait_until(lambda: "vm.shelved" in event_kinds(c, "big"))

    vms.CreateVm(vm_pb.CreateVmRequest(spec=spec("other", memory_mib=40960)))  # the room is free now
    with pytest.raises(grpc.RpcError) as e:  # and so starting "big" finds none
        vms.StartVm(vm_pb.StartVmRequest(name="big"))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert vm(c, "big").status.phase == pb.VM_PHASE_SHELVED

    vms.DeleteVm(vm_pb.DeleteVmRequest(name="other"))
    wait_until(lambda: not c.server.cache.node("h1").allocation.has("other"))  # type: ignore[union-attr]
    got = vms.StartVm(vm_pb.StartVmRequest(name="big")).vm
    assert got.placement.node == "h1" and got.spec.power_state == pb.POWER_STATE_ON
    wait_until(phase_is(c, "big", pb.VM_PHASE_RUNNING))
    assert alloc(c, "h1").has("big")
    wait_until(lambda: "vm.unshelved" in event_kinds(c, "big"))
    vms.DeleteVm(vm_pb.DeleteVmRequest(name="big"))


def test_ha_moves_a_stopped_vm_without_starting_it(cluster: Cluster) -> None:
    c = cluster
    c.add_node("h1", ttl=2)
    c.add_node("h2")
    c.create_on("h1", spec("up"))
    c.create_on("h1", spec("down"))
    c.client.vms.StopVm(vm_pb.StopVmRequest(name="down"))
    wait_until(phase_is(c, "down", pb.VM_PHASE_STOPPED))
    c.agents["h1"].stop()  # dies without revoking its lease

    wait_until(lambda: vm(c, "up").placement.node == "h2" and vm(c, "up").status.phase == pb.VM_PHASE_RUNNING,
               timeout=20)
    wait_until(lambda: vm(c, "down").placement.node == "h2" and vm(c, "down").status.phase == pb.VM_PHASE_STOPPED,
               timeout=20)
    assert domain_state(c, "h2", "down") is None and c.agents["h2"].created == ["up"]
    assert alloc(c, "h2").has("down"), "it keeps its reservation, on its new host"
    c.client.nodes.GetNode(node_pb.GetNodeRequest(name="h1"))


def test_console_refusals_name_the_reason(cluster: Cluster) -> None:
    c = cluster
    c.add_node("h1")
    c.create_on("h1", spec("web"))

    def console(*requests: vm_pb.ConsoleVmRequest) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as e:
            list(c.client.vms.ConsoleVm(iter(requests), timeout=10))
        return e.value

    e = console(vm_pb.ConsoleVmRequest(data=b"ls\n"))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "name" in (e.details() or "")
    assert console(vm_pb.ConsoleVmRequest(name="nope")).code() == grpc.StatusCode.NOT_FOUND
    assert console(vm_pb.ConsoleVmRequest(name="Bad Name!")).code() == grpc.StatusCode.INVALID_ARGUMENT
    e = console(vm_pb.ConsoleVmRequest(name="web"))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "without guest consoles" in (e.details() or "")
    c.client.vms.StopVm(vm_pb.StopVmRequest(name="web"))
    wait_until(phase_is(c, "web", pb.VM_PHASE_STOPPED))
    e = console(vm_pb.ConsoleVmRequest(name="web"))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "only a running VM" in (e.details() or "")


def test_resize_changes_the_reservation_quota_and_guest_together_or_nothing(cluster: Cluster) -> None:
    c = cluster
    c.add_node("h1")  # 16 vCPUs, 64 GiB (memory not overcommitted)
    vms, projects = c.client.vms, c.client.projects
    projects.CreateProject(proj_pb.CreateProjectRequest(project=proj_pb.Project(name="p")))
    projects.SetQuota(proj_pb.SetQuotaRequest(project="p", limits=proj_pb.QuotaAmounts(vcpus=6), set=["vcpus"]))
    c.create_on("h1", spec("web", project="p"))
    c.create_on("h1", spec("big", memory_mib=40960))
    gold = pb.QosPolicy(name="gold", qos_class=pb.QOS_CLASS_BURSTABLE, cpu_weight=400)
    c.client.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(policy=gold))
    agent = c.agents["h1"]

    def entry(name: str) -> AllocEntry:
        return next(e for e in alloc(c, "h1").entries if e.vm == name)

    def refused(req: vm_pb.ResizeVmRequest, code: grpc.StatusCode, words: str) -> None:
        before = c.store.get(keys.vm_spec(req.name))
        with pytest.raises(grpc.RpcError) as e:
            vms.ResizeVm(req)
        assert e.value.code() == code and words in (e.value.details() or ""), e.value.details()
        after = c.store.get(keys.vm_spec(req.name))
        assert before is not None and after is not None and after.mod_revision == before.mod_revision

    four = pb.Resources(vcpus=4, memory_mib=2048, disk_gib=1)
    refused(vm_pb.ResizeVmRequest(name="web", resources=four), grpc.StatusCode.FAILED_PRECONDITION, "restart")
    refused(vm_pb.ResizeVmRequest(name="web", resources=pb.Resources(vcpus=8, memory_mib=2048, disk_gib=1),
                                  restart=True), grpc.StatusCode.RESOURCE_EXHAUSTED, "quota vcpus")
    refused(vm_pb.ResizeVmRequest(name="big", resources=pb.Resources(vcpus=2, memory_mib=65536, disk_gib=1),
                                  restart=True), grpc.StatusCode.RESOURCE_EXHAUSTED, "does not fit on its host h1")
    refused(vm_pb.ResizeVmRequest(name="web", qos_policy="nope"), grpc.StatusCode.NOT_FOUND, "nope")
    refused(vm_pb.ResizeVmRequest(name="web", resources=pb.Resources(vcpus=1, memory_mib=32), restart=True),
            grpc.StatusCode.INVALID_ARGUMENT, "memory_mib")
    assert code_of(vms.ResizeVm, vm_pb.ResizeVmRequest(name="web")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(vms.ResizeVm, vm_pb.ResizeVmRequest(name="none", qos_policy="gold")) == grpc.StatusCode.NOT_FOUND

    # A new policy alone is applied live: same guest, new shares.
    got = vms.ResizeVm(vm_pb.ResizeVmRequest(name="web", qos_policy="gold")).vm
    assert got.spec.qos_policy == "gold" and got.placement.cpu_shares == 1024 * 2 * 4
    wait_until(lambda: next(d for d in agent.driver.list_domains() if d.name == "web").qos.cpu_shares == 8192)
    assert entry("web").policy == "gold" and agent.created.count("web") == 1

    # New vCPUs and memory: with restart, the guest is shut down, redefined and started again.
    got = vms.ResizeVm(vm_pb.ResizeVmRequest(name="web", resources=four, restart=True)).vm
    assert got.placement.reserved.vcpus == 4 and entry("web").reserved.vcpus == 4
    quota = projects.GetQuota(proj_pb.GetQuotaRequest(project="p")).quota
    assert quota.used.vcpus == 4 and quota.used.memory_mib == 2048
    wait_until(lambda: vm(c, "web").status.message == "resized to 4 vCPU, 2048 MiB")
    assert next(d for d in agent.driver.list_domains() if d.name == "web").size == (4, 2048)
    assert vm(c, "web").status.phase == pb.VM_PHASE_RUNNING

    # A stopped VM is re-specified now and started at its new size later.
    vms.StopVm(vm_pb.StopVmRequest(name="web"))
    wait_until(phase_is(c, "web", pb.VM_PHASE_STOPPED))
    vms.ResizeVm(vm_pb.ResizeVmRequest(name="web", resources=pb.Resources(vcpus=1, memory_mib=1024, disk_gib=1)))
    assert projects.GetQuota(proj_pb.GetQuotaRequest(project="p")).quota.used.vcpus == 1
    assert next(d for d in agent.driver.list_domains() if d.name == "web").size == (4, 2048)
    vms.StartVm(vm_pb.StartVmRequest(name="web"))
    wait_until(lambda: vm(c, "web").status.phase == pb.VM_PHASE_RUNNING and
               next(d for d in agent.driver.list_domains() if d.name == "web").size == (1, 1024))
