"""Metering on sim hosts through the real API and etcd: a VM's reserved vCPU-seconds follow
wall time within one metering period across a live migration and an agent restart (counted
once, no gap), its used CPU time keeps growing across both, and a deleted VM stops at its
deletion; per-project sums and bad input through UsageService."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from tests.conftest import Cluster, running_cluster, wait_until
from vdcos.nodeagent.agent import NodeAgent
from vdcos.state.etcd import EtcdStore
from vdcos.storagepool.pool import SimPools
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import usage_service_pb2 as use_pb
from vdcos.v1 import vm_service_pb2 as vm_pb

PERIOD = 0.5


@pytest.fixture
def metered(store: EtcdStore, tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(store, tmp_path, metering_period_s=PERIOD) as c:
        yield c


def usage(c: Cluster, vm: str) -> use_pb.VmUsage:
    """The VM's record (an empty one until metering has seen the VM)."""
    got = c.client.usage.GetUsage(use_pb.GetUsageRequest(vm=vm)).vms
    assert len(got) <= 1
    return got[0] if got else use_pb.VmUsage()


def test_a_vm_is_metered_once_across_a_move_and_an_agent_restart_and_stops_at_deletion(metered: Cluster) -> None:
    c = metered
    for n in ("h0", "h1"):
        c.add_node(n)
    spec = pb.VmSpec(name="m1", project="", resources=pb.Resources(vcpus=4, memory_mib=2048, disk_gib=10))
    c.create_on("h0", spec)
    placed = c.client.vms.GetVm(vm_pb.GetVmRequest(name="m1")).vm.placement.placed_at.ToNanoseconds() / 1e9
    wait_until(lambda: usage(c, "m1").amounts.vcpu_used_seconds > 0, timeout=15)

    def reserved_matches_wall_time() -> bool:
        u = usage(c, "m1")
        metered_to = u.metered_to.ToNanoseconds() / 1e9
        # Charged exactly for [placed, metered_to], which is within one period of now.
        return (abs(u.amounts.vcpu_reserved_seconds - 4 * (metered_to - placed)) < 0.01
                and time.time() - metered_to < PERIOD * 3
                and abs(u.amounts.memory_gib_seconds - 2 * (metered_to - placed)) < 0.01)
    assert wait_until(reserved_matches_wall_time, timeout=10)
    used_before = usage(c, "m1").amounts.vcpu_used_seconds
    # A live migration: two allocations for a moment, one charge; a new guest's counter from 0.
    m = c.client.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm="m1", target_node="h1")).migration
    wait_until(lambda: c.client.migrations.GetMigration(mig_pb.GetMigrationRequest(id=m.id)).migration.phase
               == mig_pb.MIGRATION_PHASE_COMPLETED, timeout=20)
    time.sleep(PERIOD * 3)
    assert wait_until(reserved_matches_wall_time, timeout=10)
    wait_until(lambda: usage(c, "m1").amounts.vcpu_used_seconds > used_before, timeout=15)
    # The agent of its host restarts: the same guest, its counter goes on.
    agent = c.agents["h1"]
    agent.stop(revoke=False)
    c.agents["h1"] = NodeAgent(c.store, agent.spec, agent.driver, lease_ttl=10, resync_s=0.5,
                               pools=SimPools("h1", agent.spec.capacity.disk_gib), emit=c.recorder.emit).start()
    time.sleep(PERIOD * 3)
    assert wait_until(reserved_matches_wall_time, timeout=10)
    # Deleted: charged up to its deletion, then never again.
    deleted_at = time.time()
    c.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="m1"))
    wait_until(lambda: usage(c, "m1").HasField("deleted_at") and abs(
        usage(c, "m1").metered_to.ToNanoseconds() / 1e9 - usage(c, "m1").deleted_at.ToNanoseconds() / 1e9) < 1e-3,
        timeout=10)
    final = usage(c, "m1")
    assert abs(final.deleted_at.ToNanoseconds() / 1e9 - deleted_at) < 1.0
    end = final.metered_to.ToNanoseconds() / 1e9
    assert abs(final.amounts.vcpu_reserved_seconds - 4 * (end - placed)) < 0.01
    time.sleep(PERIOD * 3)
    assert usage(c, "m1").amounts == final.amounts
    # Per project and class: the one VM's sums.
    (p,) = c.client.usage.GetUsage(use_pb.GetUsageRequest()).projects
    assert (p.project, p.qos_class, p.vms) == ("", "burstable", 1) and p.amounts == final.amounts


@pytest.mark.parametrize("request_", [use_pb.GetUsageRequest(project="Not OK"), use_pb.GetUsageRequest(vm="a/b")])
def test_bad_usage_requests_are_invalid_argument(metered: Cluster, request_: use_pb.GetUsageRequest) -> None:
    with pytest.raises(grpc.RpcError) as e:
        metered.client.usage.GetUsage(request_)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_stopped_vm_is_charged_its_reservation_and_a_shelved_one_nothing(metered: Cluster) -> None:
    c = metered
    c.add_node("h0")
    c.create_on("h0", pb.VmSpec(name="s1", resources=pb.Resources(vcpus=2, memory_mib=1024, disk_gib=1)))
    wait_until(lambda: usage(c, "s1").amounts.vcpu_reserved_seconds > 0, timeout=15)
    c.client.vms.StopVm(vm_pb.StopVmRequest(name="s1"))
    wait_until(lambda: c.client.vms.GetVm(vm_pb.GetVmRequest(name="s1")).vm.status.phase == pb.VM_PHASE_STOPPED)
    before = usage(c, "s1").amounts.vcpu_reserved_seconds
    wait_until(lambda: usage(c, "s1").amounts.vcpu_reserved_seconds > before, timeout=10)  # stopped: still held
    shelved_at = time.time()
    c.client.vms.ShelveVm(vm_pb.ShelveVmRequest(name="s1"))
    time.sleep(PERIOD * 3)
    held = usage(c, "s1").amounts.vcpu_reserved_seconds
    time.sleep(PERIOD * 4)
    after = usage(c, "s1")
    assert after.amounts.vcpu_reserved_seconds == held, "a shelved VM holds nothing, so nothing is charged"
    # Charged its 2 vCPUs from its placement up to the shelve, exactly (the shelve stamps it).
    charged_for = after.amounts.vcpu_reserved_seconds / 2
    assert abs(after.metered_from.ToNanoseconds() / 1e9 + charged_for - shelved_at) < 0.5
