"""The local datacenter survives the loss of its processes, driven through the CLI as an operator
would: `down` keeps the state and `up` brings the same datacenter back, `up` repairs what died,
and with 3 etcd members and 2 API replicas the CLI keeps working while one of each is killed."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import wait_until
from tests.e2e.test_local_datacenter import jq, vdcos
from vdcos.cli.localdc import LocalDatacenter
from vdcos.process import alive
from vdcos.state.etcd import member_status

pytestmark = pytest.mark.e2e


def _state(home: Path) -> LocalDatacenter:
    dc = LocalDatacenter.load(home)
    assert dc is not None
    return dc


def _kill(home: Path, name: str, sig: int = signal.SIGKILL) -> int:
    pid = _state(home).proc(name).pid
    os.kill(pid, sig)
    wait_until(lambda: not alive(pid))
    return pid


def _inventory(home: Path) -> dict[str, object]:
    vms = {v["spec"]["name"]: (v["placement"]["node"], v["status"]["phase"]) for v in jq(home, "vm", "list")["vms"]}
    return {
        "vms": vms,
        "policies": sorted(p["name"] for p in jq(home, "policy", "list").get("policies", [])),
        "networks": sorted((n["name"], n["cidr"]) for n in jq(home, "network", "list").get("networks", [])),
        "volumes": sorted((v["name"], v.get("vm", "")) for v in jq(home, "volume", "list").get("volumes", [])),
        "nodes": sorted(n["name"] for n in jq(home, "nodes")["nodes"]),
    }


def _all_running(home: Path) -> bool:
    return all(v["status"]["phase"] == "VM_PHASE_RUNNING" for v in jq(home, "vm", "list")["vms"])


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    h = tmp_path / "dc"
    yield h
    state = LocalDatacenter.load(h)
    vdcos(h, "down", "--purge", check=False)
    if state:
        assert not any(p.running() for p in state.procs), "vdcos down --purge left processes behind"
    assert not (h / "etcd").exists() and not (h / "cluster.json").exists()


def _populate(home: Path, tmp_path: Path) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text("name: gold\nqos_class: guaranteed\n")
    vdcos(home, "policy", "apply", "-f", str(pol))
    vdcos(home, "network", "create", "blue", "--cidr", "10.20.0.0/24")
    vdcos(home, "volume", "create", "data-1", "--size-gib", "5", "--pool", "shared")
    vdcos(home, "vm", "create", "db-1", "--policy", "gold", "--vcpus", "2")
    vdcos(home, "vm", "create", "web", "--count", "2", "--group", "web", "--group-policy", "anti-affinity")
    vdcos(home, "volume", "attach", "data-1", "db-1")
    wait_until(lambda: _all_running(home), timeout=20)


def test_down_keeps_the_datacenter_and_up_brings_it_back(home: Path, tmp_path: Path) -> None:
    vdcos(home, "up", "--hosts", "3", "--lease-ttl", "3")
    _populate(home, tmp_path)
    before = _inventory(home)
    procs = _state(home).procs

    out = vdcos(home, "down").stdout
    assert "state is kept" in out
    assert not any(p.running() for p in procs), "down left processes behind"
    assert (home / "etcd").is_dir() and (home / "hosts").is_dir()

    out = vdcos(home, "up").stdout
    assert "started again: " in out and "scheduler" in out and "host-1" in out
    after = _state(home)
    assert after.api == _state(home).api and all(p.running() for p in after.procs)
    wait_until(lambda: _all_running(home), timeout=30)
    assert _inventory(home) == before
    # And it still works: a new VM is placed next to the old ones.
    assert jq(home, "vm", "create", "after-restart")["placement"]["node"].startswith("host-")  # type: ignore[index]


def test_up_after_the_scheduler_was_killed_restarts_only_it(home: Path, tmp_path: Path) -> None:
    vdcos(home, "up", "--hosts", "2", "--lease-ttl", "3")
    _populate(home, tmp_path)
    before = _inventory(home)
    pids = {p.name: p.pid for p in _state(home).procs}
    _kill(home, "supervisor", signal.SIGTERM)  # so that `vdcos up` is what brings it back
    _kill(home, "scheduler")
    out = vdcos(home, "up").stdout
    assert "started again: scheduler, supervisor" in out, out
    now = {p.name: p.pid for p in _state(home).procs}
    assert {n for n in now if now[n] != pids[n]} == {"scheduler", "supervisor"}
    assert _inventory(home) == before


def test_the_supervisor_restarts_a_dead_scheduler(home: Path) -> None:
    vdcos(home, "up", "--hosts", "1")
    vdcos(home, "vm", "create", "v1")
    old = _kill(home, "scheduler")
    wait_until(lambda: (p := _state(home).proc("scheduler")).pid != old and p.running(), timeout=10)
    # Serving again (once it has loaded), on the address clients already have.
    wait_until(lambda: vdcos(home, "vm", "show", "v1", check=False).returncode == 0, timeout=30, every=0.5)
    assert jq(home, "vm", "show", "v1")["spec"]["name"] == "v1"  # type: ignore[index]


def test_replicas_and_etcd_members_fail_over_under_the_cli(home: Path) -> None:
    vdcos(home, "up", "--hosts", "2", "--etcd-members", "3", "--replicas", "2")
    state = _state(home)
    assert len(state.etcd) == 3 and len(state.api) == 2
    status = vdcos(home, "status").stdout
    assert "etcd-3" in status and "scheduler-2" in status
    _kill(home, "supervisor", signal.SIGTERM)  # what is killed stays dead
    vdcos(home, "vm", "create", "a1")

    _kill(home, "scheduler-1")
    for i in range(4):  # round robin would send every other call to the dead one
        assert jq(home, "vm", "create", f"b{i}")["spec"]["name"] == f"b{i}"  # type: ignore[index]
    assert len(jq(home, "vm", "list")["vms"]) == 5  # type: ignore[arg-type]

    tls = state.operator_tls()
    leader = next(m for m in (member_status(e, tls=tls) for e in state.etcd) if m is not None).leader
    victim = next(p.name for p, e in zip([p for p in state.procs if p.kind == "etcd"], state.etcd)
                  if (s := member_status(e, tls=tls)) is not None and s.header.member_id == leader)
    _kill(home, victim)
    for i in range(3):
        assert jq(home, "vm", "create", f"c{i}")["spec"]["name"] == f"c{i}"  # type: ignore[index]
    names = sorted(v["spec"]["name"] for v in jq(home, "vm", "list")["vms"])  # type: ignore[index]
    assert names == ["a1", "b0", "b1", "b2", "b3", "c0", "c1", "c2"]

    out = vdcos(home, "up").stdout  # repair
    assert victim in out and "scheduler-1" in out
    assert all(p.running() for p in _state(home).procs)
    assert json.loads(vdcos(home, "-o", "json", "vm", "show", "c2").stdout)["spec"]["name"] == "c2"
