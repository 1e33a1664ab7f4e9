"""`vdcos up --log-json`: every daemon logs JSON lines, and one call's request id is found in
the API's line for the call, the scheduler's for its placement and the agent's for the guest
it started; a migration's in both agents' lines for the move."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import wait_until
from vdcos.cli.localdc import LocalDatacenter
from vdcos.process import alive
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

pytestmark = pytest.mark.e2e


@pytest.fixture
def dc(tmp_path: Path) -> Iterator[LocalDatacenter]:
    home = tmp_path / "dc"
    p = subprocess.run([sys.executable, "-m", "vdcos.cli.main", "--home", str(home), "up", "--hosts", "2",
                        "--log-json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    state = LocalDatacenter.load(home)
    assert state is not None
    yield state
    subprocess.run([sys.executable, "-m", "vdcos.cli.main", "--home", str(home), "down", "--purge"],
                   capture_output=True, timeout=120)
    assert not any(alive(p.pid) for p in state.procs)


def lines(dc: LocalDatacenter, proc: str) -> list[dict[str, Any]]:
    """Every line of a process's log, each one JSON (a line that is not fails the test)."""
    text = Path(dc.proc(proc).log).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def with_id(dc: LocalDatacenter, proc: str, rid: str) -> list[str]:
    return [f"{e['logger']}: {e['msg']}" for e in lines(dc, proc) if e.get("request_id") == rid]


def test_one_calls_request_id_is_in_every_daemons_lines_about_it(dc: LocalDatacenter) -> None:
    client = dc.client()
    spec = pb.VmSpec(name="traced", resources=pb.Resources(vcpus=1, memory_mib=512, disk_gib=1))
    node = client.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec), metadata=(("x-request-id", "req-create-1"),)
                               ).vm.placement.node
    wait_until(lambda: with_id(dc, node, "req-create-1"), timeout=20)
    api = with_id(dc, "scheduler", "req-create-1")
    assert any(m.startswith("vdcos.apiserver.calls: CreateVm traced: OK") for m in api), api
    assert any(m.startswith("vdcos.scheduler.worker: placed traced on " + node) for m in api), api
    assert any("started traced" in m for m in with_id(dc, node, "req-create-1"))
    # A move, under its own id, in the source's lines for it.
    other = next(n for n in ("host-1", "host-2") if n != node)
    m = client.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm="traced", target_node=other),
                                    metadata=(("x-request-id", "req-move-1"),)).migration
    wait_until(lambda: client.migrations.GetMigration(mig_pb.GetMigrationRequest(id=m.id)).migration.phase
               == mig_pb.MIGRATION_PHASE_COMPLETED, timeout=30)
    assert any(msg.startswith("vdcos.apiserver.calls: MigrateVm traced: OK")
               for msg in with_id(dc, "scheduler", "req-move-1"))
    assert any(f"migrating traced to {other}" in msg for msg in with_id(dc, node, "req-move-1"))
    # A request id that is not one is not taken: the call gets one of its own.
    client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="traced"), metadata=(("x-request-id", "forged id; rm -rf /"),))
    deleted = [e for e in lines(dc, "scheduler") if e["msg"].startswith("DeleteVm traced")]
    assert deleted and deleted[0]["request_id"].startswith("req-") and "forged" not in deleted[0]["request_id"]
    # Every line of every daemon is JSON (lines() fails otherwise), with what the format promises.
    for proc in ("scheduler", "host-1", "host-2", "supervisor"):
        assert all({"ts", "level", "process", "logger", "msg"} <= set(e) for e in lines(dc, proc))
