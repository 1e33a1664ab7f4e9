"""Live migration through the real API and etcd, on sim hosts: the reservation model (source held,
destination reserved, nothing lost or counted twice), limits, hard rules, cancel, bad input."""
from __future__ import annotations

import json
from dataclasses import replace

import grpc
import pytest

from tests.conftest import HOST, Cluster, details, wait_until
from vdcos.migration import records
from vdcos.model import (ActiveMigrations, Allocation, Migration, MigrationOptions, MigrationPhase, PlacementGroup,
                         decode)
from vdcos.nodeagent.agent import NodeAgent
from vdcos.nodeagent.sim import SimDriver
from vdcos.state import keys
from vdcos.state.store import Event
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import placement_service_pb2 as place_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

pytestmark = pytest.mark.etcd


def create(c: Cluster, name: str, node: str, group: str = "", policy: int = 0) -> None:
    c.create_on(node, pb.VmSpec(name=name, resources=pb.Resources(vcpus=2, memory_mib=4096, disk_gib=10,
                                                                  network_mbps=100),
                                placement_group=group, group_policy=policy))


def alloc(c: Cluster, node: str) -> Allocation:
    kv = c.store.get(keys.alloc(node))
    return decode(Allocation, json.loads(kv.value)) if kv else Allocation(node)


def migrate(c: Cluster, vm: str, to: str = "", **opts: int) -> mig_pb.Migration:
    return c.client.migrations.MigrateVm(mig_pb.MigrateVmRequest(
        vm=vm, target_node=to, options=mig_pb.MigrationOptions(**opts))).migration


def get(c: Cluster, mid: str) -> mig_pb.Migration:
    return c.client.migrations.GetMigration(mig_pb.GetMigrationRequest(id=mid)).migration


def nodes(c: Cluster, *names: str) -> None:
    for n in names:
        c.add_node(n, labels={"host": n})


def test_an_operators_target_passes_the_vms_node_selector(cluster: Cluster) -> None:
    nodes(cluster, "n1", "n2")
    spec = pb.VmSpec(name="held", resources=pb.Resources(vcpus=1, memory_mib=1024), node_selector={"host": "n1"})
    cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec))
    with pytest.raises(grpc.RpcError) as e:
        migrate(cluster, "held", "n2")
    assert e.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "selector" in e.value.details() or any("selector" in str(d) for d in details(e.value)), e.value.details()
    assert cluster.store.get(keys.vm_migration("held")) is None


def test_scheduler_chooses_and_the_vm_moves(cluster: Cluster) -> None:
    nodes(cluster, "n1", "n2")
    create(cluster, "web", "")
    src = cluster.client.vms.GetVm(vm_pb.GetVmRequest(name="web")).vm.placement.node
    m = migrate(cluster, "web")
    n1, n2 = src, ({"n1", "n2"} - {src}).pop()
    assert m.source_node == n1 and m.target_node == n2
    events = [e.migration for e in cluster.client.migrations.WatchMigration(mig_pb.WatchMigrationRequest(id=m.id),
                                                                             timeout=10)]
    assert events[-1].phase == mig_pb.MIGRATION_PHASE_COMPLETED
    vm = cluster.client.vms.GetVm(vm_pb.GetVmRequest(name="web")).vm
    assert vm.placement.node == n2
    assert not alloc(cluster, n1).entries and [e.vm for e in alloc(cluster, n2).entries] == ["web"]
    assert cluster.store.get(keys.assign(n1, "web")) is None
    assert cluster.store.get(keys.vm_migration("web")) is None
    assert decode(ActiveMigrations, json.loads(cluster.store.get(keys.ACTIVE_MIGRATIONS).value)).entries == ()
    wait_until(lambda: [d.name for d in cluster.agents[n2].driver.list_domains()] == ["web"])
    assert cluster.agents[n1].driver.list_domains() == []
    # The destination adopts it: running, reported from there, never created twice.
    wait_until(lambda: cluster.client.vms.GetVm(vm_pb.GetVmRequest(name="web")).vm.status.node == n2)
    assert "web" not in cluster.agents[n2].created


def test_destination_reserved_and_source_held_until_it_ends(cluster: Cluster) -> None:
    nodes(cluster, "n1", "n2")
    create(cluster, "web", "n1")
    cluster.agents["n1"].stop()  # the source agent never starts it: the migration stays pending
    m = migrate(cluster, "web", "n2")
    assert m.phase == mig_pb.MIGRATION_PHASE_PENDING
    src, dst = alloc(cluster, "n1"), alloc(cluster, "n2")
    assert [(e.vm, e.held_by) for e in src.entries] == [("web", m.id)]
    assert [(e.vm, e.held_by) for e in dst.entries] == [("web", "")]
    # Deleting a VM mid-move is refused rather than leaking the reservation.
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="web"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        migrate(cluster, "web", "n2")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "already migrating" in e.value.details()
    got = cluster.client.migrations.CancelMigration(mig_pb.CancelMigrationRequest(id=m.id)).migration
    assert got.phase == mig_pb.MIGRATION_PHASE_CANCELLED
    assert [(e.vm, e.held_by) for e in alloc(cluster, "n1").entries] == [("web", "")]
    assert alloc(cluster, "n2").entries == ()
    assert cluster.client.vms.GetVm(vm_pb.GetVmRequest(name="web")).vm.placement.node == "n1"


def test_per_host_limit(cluster: Cluster) -> None:
    nodes(cluster, "n1", "n2", "n3")
    cluster.client.placement.UpdateSchedulerConfig(place_pb.UpdateSchedulerConfigRequest(
        config=pb.SchedulerConfig(max_migrations_per_host=1)))
    create(cluster, "a", "n1")
    create(cluster, "b", "n1")
    cluster.agents["n1"].stop()
    migrate(cluster, "a", "n2")
    with pytest.raises(grpc.RpcError) as e:
        migrate(cluster, "b", "n3")
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit 1 per host" in e.value.details()


def test_anti_affinity_holds_during_and_after_moves(cluster: Cluster) -> None:
    nodes(cluster, "n1", "n2", "n3")
    anti = pb.AFFINITY_POLICY_ANTI_AFFINITY
    create(cluster, "a", "n1", "ha", anti)
    create(cluster, "b", "n2", "ha", anti)
    with pytest.raises(grpc.RpcError) as e:
        migrate(cluster, "a", "n2")
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "anti-affinity" in e.value.details()
    cluster.agents["n1"].stop()
    cluster.agents["n2"].stop()
    m = migrate(cluster, "a", "n3")
    # While a moves to n3 it holds its place there: b cannot go to n3 too.
    with pytest.raises(grpc.RpcError) as e:
        migrate(cluster, "b", "n3")
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    group = decode(PlacementGroup, json.loads(cluster.store.get(keys.group("ha")).value))
    assert sorted(n for _, n in group.members) == ["n1", "n2", "n3"]
    cluster.client.migrations.CancelMigration(mig_pb.CancelMigrationRequest(id=m.id))
    group = decode(PlacementGroup, json.loads(cluster.store.get(keys.group("ha")).value))
    assert sorted(group.members) == [("a", "n1"), ("b", "n2")]


def test_no_feasible_destination_explains_itself(cluster: Cluster) -> None:
    nodes(cluster, "n1")
    create(cluster, "web", "n1")
    with pytest.raises(grpc.RpcError) as e:
        migrate(cluster, "web")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "avoid_nodes" in str(details(e.value)) or "runs there already" in e.value.details()


@pytest.mark.parametrize("req,field", [
    (mig_pb.MigrateVmRequest(vm="Bad_Name"), "vm"),
    (mig_pb.MigrateVmRequest(vm="ok", target_node="no way"), "target_node"),
    (mig_pb.MigrateVmRequest(vm="ok", options=mig_pb.MigrationOptions(max_downtime_ms=-1)), "options.max_downtime_ms"),
    (mig_pb.MigrateVmRequest(vm="ok", options=mig_pb.MigrationOptions(max_bandwidth_mibps=10**9)),
     "options.max_bandwidth_mibps"),
])
def test_bad_requests_name_the_field_and_change_nothing(cluster: Cluster, req: mig_pb.MigrateVmRequest,
                                                        field: str) -> None:
    before = cluster.store.get_prefix(keys.ROOT)[0]
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.migrations.MigrateVm(req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in str(details(e.value))
    assert cluster.store.get_prefix(keys.ROOT)[0] == before


def test_unknown_or_malformed_migration_ids(cluster: Cluster) -> None:
    for mid, code in (("mig-000000000000", grpc.StatusCode.NOT_FOUND), ("../etc", grpc.StatusCode.INVALID_ARGUMENT)):
        for call in (lambda: cluster.client.migrations.GetMigration(mig_pb.GetMigrationRequest(id=mid)),
                     lambda: cluster.client.migrations.CancelMigration(mig_pb.CancelMigrationRequest(id=mid)),
                     lambda: list(cluster.client.migrations.WatchMigration(mig_pb.WatchMigrationRequest(id=mid),
                                                                            timeout=5))):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == code


def test_a_restarted_source_agent_finishes_what_it_started(cluster: Cluster) -> None:
    """The agent died mid-move: on restart it finds the record RUNNING and settles it from where the
    guest is now (here: already on the destination), so nothing stays reserved twice."""
    nodes(cluster, "n1", "n2")
    create(cluster, "web", "n1")
    src = cluster.agents["n1"]
    src.stop()
    m = migrate(cluster, "web", "n2")
    records.update(cluster.store, m.id, lambda x: replace(x, phase=MigrationPhase.RUNNING))
    # What libvirt did while the agent was away: the guest moved.
    src.driver.migrate("web", f"sim://{cluster.tmp / 'n2.json'}", MigrationOptions())
    restarted = cluster.add_node("n1", labels={"host": "n1"})
    assert restarted is not src
    got = wait_until(lambda: (g := get(cluster, m.id)).phase == mig_pb.MIGRATION_PHASE_COMPLETED and g)
    assert "agent restarted" in got.message  # type: ignore[union-attr]
    assert alloc(cluster, "n1").entries == () and [e.vm for e in alloc(cluster, "n2").entries] == ["web"]


@pytest.mark.parametrize("completion_first", [True, False], ids=["completion-first", "assignment-first"])
def test_the_destination_wants_a_moved_vms_nics_whichever_watch_delivers_first(cluster: Cluster,
                                                                                completion_first: bool) -> None:
    """The completion and the new assignment are one transaction but reach the destination's
    agent through two watches. Its switch must want the guest's NICs all along: a sync between
    the two deliveries that did not would delete the tap the guest's QEMU has open (a CI run
    lost every ping after the move). The records a real move wrote, replayed in either order."""
    nodes(cluster, "n1", "n2")
    create(cluster, "web", "n1")
    m = migrate(cluster, "web", "n2")
    wait_until(lambda: get(cluster, m.id).phase == mig_pb.MIGRATION_PHASE_COMPLETED)
    done_kv, assign_kv = cluster.store.get(keys.migration(m.id)), cluster.store.get(keys.assign("n2", "web"))
    assert done_kv is not None and assign_kv is not None
    assert done_kv.mod_revision == assign_kv.mod_revision
    done = decode(Migration, json.loads(done_kv.value))
    # n2's agent as it was while the guest moved: the migration running, nothing assigned yet.
    dest = NodeAgent(cluster.store, cluster.agents["n2"].spec, SimDriver(HOST))
    dest._on_migration_records([(replace(done, phase=MigrationPhase.RUNNING), done_kv.create_revision)])
    assert "web" in dest._switch_wanted() and "web" in dest.migrating()
    deliveries = [lambda: dest._on_migration_records([(done, done_kv.mod_revision)]),
                  lambda: dest._on_assign([Event("put", assign_kv)], assign_kv.mod_revision)]
    for deliver in deliveries if completion_first else deliveries[::-1]:
        deliver()
        assert "web" in dest._switch_wanted()
    assert "web" not in dest.migrating()  # settled: the reconcile loop has it as its own again
