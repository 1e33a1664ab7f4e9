"""etcd's role-based access (state/access.py) on a real TLS etcd: each node agent's certificate
writes its own records and no VM's spec, placement, assignment or allocation; and a VM still
goes through its whole life under it, a live migration included (the source agent reports the
outcome, the control plane applies it)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import secure_etcd, sim_agent, wait_until
from vdcos.apiserver.server import create_server
from vdcos.cli.client import Client
from vdcos.model import Resources
from vdcos.security.pki import Identity
from vdcos.state import keys
from vdcos.state.etcd import EtcdStore
from vdcos.state.store import StoreError
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

pytestmark = pytest.mark.etcd
HOST = Resources(vcpus=16, memory_mib=65536, disk_gib=500)


def test_each_node_writes_its_own_part_and_a_vm_lives_and_migrates_under_it(tmp_path: Path) -> None:
    with secure_etcd(tmp_path, "acl") as (ca, etcd, replica_store, replica):
        admin = EtcdStore(etcd.endpoint, tls=ca.issue(Identity("user", "admin")))
        try:
            admin.enable_access(["scheduler:scheduler-1"], ["h1", "h2"], "user:admin")
        finally:
            admin.close()
        server = create_server("127.0.0.1:0", replica_store, tls=replica)
        client = Client(f"127.0.0.1:{server.mtls_port}", ca.issue(Identity("user", "admin")))
        agents = [sim_agent(etcd, ca, name, HOST, tmp_path) for name in ("h1", "h2")]
        try:
            h1 = agents[0][1]
            h1.put(keys.vm_status("h1", "probe"), b"{}")
            h1.delete(keys.vm_status("h1", "probe"))
            for key in (keys.vm_status("h2", "probe"), keys.vm_placement("probe"), keys.vm_spec("probe"),
                        keys.alloc("h1"), keys.assign("h1", "probe"), keys.group("g"), keys.node_spec("h2"),
                        keys.quota("p"), keys.CONFIG):
                with pytest.raises(StoreError, match="PERMISSION_DENIED"):
                    h1.put(key, b"{}")
            for prefix in (keys.alloc("h2"), keys.assign_prefix("h2"), keys.TOKENS):
                with pytest.raises(StoreError, match="PERMISSION_DENIED"):
                    h1.get_prefix(prefix)

            # A VM's whole life under those roles: placed, running, moved, deleted.
            spec = pb.VmSpec(name="web", resources=pb.Resources(vcpus=1, memory_mib=512, disk_gib=5))
            src = client.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec)).vm.placement.node
            wait_until(lambda: client.vms.GetVm(vm_pb.GetVmRequest(name="web")).vm.status.phase
                       == pb.VM_PHASE_RUNNING, timeout=20)
            dst = "h2" if src == "h1" else "h1"
            m = client.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm="web", target_node=dst)).migration
            last = m
            for ev in client.migrations.WatchMigration(mig_pb.WatchMigrationRequest(id=m.id), timeout=30):
                last = ev.migration
            assert last.phase == mig_pb.MIGRATION_PHASE_COMPLETED, last.message
            wait_until(lambda: (v := client.vms.GetVm(vm_pb.GetVmRequest(name="web")).vm).placement.node == dst
                       and v.status.node == dst and v.status.phase == pb.VM_PHASE_RUNNING, timeout=20)
            assert replica_store.get(keys.vm_status(src, "web")) is None  # the source's word went with it
            client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="web"))
            wait_until(lambda: not replica_store.get_prefix(keys.VM_STATUSES)[0], timeout=20)
        finally:
            client.channel.close()
            for agent, store in agents:
                agent.stop()
                store.close()
            server.stop(0)
