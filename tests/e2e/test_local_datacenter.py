"""`vdcos up` with several agent processes, driven through the CLI as an operator would."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import wait_until
from vdcos.cli.localdc import LocalDatacenter
from vdcos.host.wakeup import DEVICE, current
from vdcos.process import alive

pytestmark = pytest.mark.e2e


def vdcos(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "vdcos.cli.main", "--home", str(home), *args],
                       capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"vdcos {' '.join(args)} failed ({p.returncode}): {p.stderr}{p.stdout}")
    return p


def jq(home: Path, *args: str) -> object:
    return json.loads(vdcos(home, "-o", "json", *args).stdout)


@pytest.fixture
def dc(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "dc"
    vdcos(home, "up", "--hosts", "3", "--lease-ttl", "2", "--host-vcpus", "8", "--host-memory-mib", "16384")
    yield home
    state = LocalDatacenter.load(home)
    vdcos(home, "down", "--purge", check=False)
    if state:
        assert not any(alive(p.pid) for p in state.procs), "vdcos down left processes behind"


def test_up_is_idempotent_and_down_stops_everything(dc: Path) -> None:
    before = LocalDatacenter.load(dc)
    out = vdcos(dc, "up", "--hosts", "3").stdout
    assert "datacenter up" in out
    assert LocalDatacenter.load(dc) == before
    status = vdcos(dc, "status").stdout
    assert "nodes: 3/3 ready" in status and "scheduler" in status
    nodes = jq(dc, "nodes")["nodes"]  # type: ignore[index]
    assert sorted(n["name"] for n in nodes) == ["host-1", "host-2", "host-3"]


@pytest.mark.skipif(not DEVICE.exists(), reason="no /dev/cpu_dma_latency on this kernel")
def test_up_holds_the_cpu_wakeup_latency_until_down(tmp_path: Path) -> None:
    home, before = tmp_path / "dc", current()
    try:
        assert "datacenter up" in vdcos(home, "up", "--hosts", "1", "--cpu-wakeup-latency-us", "4").stdout
        assert current() <= 4
        _, argv = _agent(home, "scheduler")
        assert argv[-2:] == ["--cpu-wakeup-latency-us", "4"]
    finally:
        vdcos(home, "down", "--purge", check=False)
    assert current() == before


@pytest.mark.parametrize("value", ["-1", "2000000001"])
def test_up_refuses_a_bad_cpu_wakeup_latency_and_starts_nothing(tmp_path: Path, value: str) -> None:
    home = tmp_path / "dc"
    p = vdcos(home, "up", "--cpu-wakeup-latency-us", value, check=False)
    assert p.returncode == 2 and "--cpu-wakeup-latency-us" in p.stderr, p.stderr
    assert LocalDatacenter.load(home) is None


def test_cli_vm_policy_explain_roundtrip(dc: Path, tmp_path: Path) -> None:
    pol = tmp_path / "p.yaml"
    pol.write_text("name: gold\nqos_class: guaranteed\ncpu_weight: 300\n---\nname: spot\nqos_class: best-effort\n")
    assert "qospolicy/gold created" in vdcos(dc, "policy", "apply", "-f", str(pol)).stdout
    assert "qospolicy/gold configured" in vdcos(dc, "policy", "apply", "-f", str(pol)).stdout
    vm = jq(dc, "vm", "create", "db-1", "--vcpus", "4", "--memory-mib", "8192", "--policy", "gold",
            "--group", "db", "--group-policy", "anti-affinity")
    assert vm["placement"]["qos_class"] == "QOS_CLASS_GUARANTEED" and vm["placement"]["cpu_shares"] == "12288"  # type: ignore[index]
    wait_until(lambda: jq(dc, "vm", "show", "db-1")["status"]["phase"] == "VM_PHASE_RUNNING", timeout=15)  # type: ignore[index]
    table = vdcos(dc, "vm", "list").stdout
    assert "db-1" in table and "guaranteed" in table and "running" in table
    ex = vdcos(dc, "explain", "x", "--vcpus", "2").stdout
    assert "would go to host-" in ex and "CANDIDATE" in ex
    # Refusals name the dimension and the numbers, exit non-zero.
    p = vdcos(dc, "vm", "create", "big", "--vcpus", "6", "--memory-mib", "17000", "--policy", "gold", check=False)
    assert p.returncode == 1
    assert "RESOURCE_EXHAUSTED" in p.stderr or "FAILED_PRECONDITION" in p.stderr
    assert "memory_mib" in p.stderr and "largest free" in p.stderr
    vdcos(dc, "vm", "delete", "db-1")
    assert "db-1" not in vdcos(dc, "vm", "list").stdout


def test_cli_creates_many_and_says_which_could_not_go(dc: Path) -> None:
    # Hard anti-affinity over 3 hosts: the fourth member has nowhere to go, the others do.
    p = vdcos(dc, "vm", "create", "web", "--count", "4", "--group", "web", "--group-policy", "anti-affinity",
              check=False)
    assert p.returncode == 1 and "3 of 4 created" in p.stderr
    assert "hard anti-affinity" in p.stderr and "RESOURCE_EXHAUSTED" in p.stderr
    listed = vdcos(dc, "vm", "list").stdout
    placed = [f"web-{i}" for i in range(1, 5) if f"web-{i} " in listed]
    assert len(placed) == 3
    for name in placed:
        vdcos(dc, "vm", "delete", name)


def test_cli_creates_more_than_one_call_takes(dc: Path) -> None:
    # 1001 VMs are two BatchCreateVms calls (one takes at most 1000); none can ever fit here.
    p = vdcos(dc, "vm", "create", "huge", "--count", "1001", "--vcpus", "1024", check=False)
    assert p.returncode == 1 and "0 of 1001 created" in p.stderr, p.stderr[-2000:]
    assert p.stderr.count("FAILED_PRECONDITION") == 1001 and "huge-1001: " in p.stderr


@pytest.mark.parametrize("args,needle", [
    (["vm", "create", "Bad_Name"], "spec.name"),
    (["vm", "create", "ok", "--vcpus", "0"], "spec.resources.vcpus"),
    (["vm", "create", "ok", "--selector", "novalue"], "--selector"),
    (["vm", "show", "no-such-vm"], "NOT_FOUND"),
    (["vm", "create", "ok", "--count", "0"], "--count"),
    (["vm", "create", "a" * 60, "--count", "1000"], "NAME with --count 1000"),
], ids=["name", "vcpus", "selector", "missing", "count", "count-name"])
def test_cli_errors_name_the_field(dc: Path, args: list[str], needle: str) -> None:
    p = vdcos(dc, *args, check=False)
    assert p.returncode != 0 and needle in p.stderr, p.stderr


def test_policy_file_errors_name_the_field(dc: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nqos_class: platinum\n")
    p = vdcos(dc, "policy", "apply", "-f", str(bad), check=False)
    assert p.returncode == 2 and "qos_class" in p.stderr
    bad.write_text("name: x\nqos_class: burstable\ncpu_wieght: 3\n")
    p = vdcos(dc, "policy", "apply", "-f", str(bad), check=False)
    assert p.returncode == 2 and "cpu_wieght: unknown field" in p.stderr
    bad.write_text("name: x\nqos_class: burstable\ncpu_limit_percent: 400\n")
    p = vdcos(dc, "policy", "apply", "-f", str(bad), check=False)
    assert p.returncode == 1 and "policy.cpu_limit_percent" in p.stderr
    assert "x" not in [q["name"] for q in jq(dc, "policy", "list").get("policies", [])]  # type: ignore[union-attr]


def _agent(home: Path, name: str) -> tuple[int, list[str]]:
    state = LocalDatacenter.load(home)
    assert state is not None
    proc = next(p for p in state.procs if p.name == name)
    cmd = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    return proc.pid, [c.decode() for c in cmd]


def test_agent_restart_adopts_running_vms_and_creates_nothing_twice(dc: Path) -> None:
    for i in range(3):
        vdcos(dc, "vm", "create", f"v{i}", "--selector", "rack=rack-1")
    node = jq(dc, "vm", "show", "v0")["placement"]["node"]  # type: ignore[index]
    domains = Path(dc) / "hosts" / node / "domains.json"
    wait_until(lambda: domains.exists() and len(json.loads(domains.read_text())) >= 1, timeout=15)
    before = {d["name"]: d["uuid"] for d in json.loads(domains.read_text())}
    pid, cmd = _agent(dc, node)
    os.kill(pid, signal.SIGKILL)
    # The supervisor starts it again, with the same command line.
    new_pid = wait_until(lambda: (p := _agent(dc, node)[0]) != pid and alive(p) and p, timeout=10)
    assert _agent(dc, node)[1] == cmd
    wait_until(lambda: jq(dc, "vm", "show", "v0")["status"]["phase"] == "VM_PHASE_RUNNING", timeout=15)  # type: ignore[index]
    time.sleep(1.0)  # a few reconcile rounds
    after = {d["name"]: d["uuid"] for d in json.loads(domains.read_text())}
    assert after == before, "restart re-created or lost domains"
    assert _agent(dc, node)[0] == new_pid, "the restarted agent died"


def test_a_dead_agent_makes_its_node_not_ready_within_the_ttl(dc: Path) -> None:
    # An agent gone for good (its host is down): no supervisor brings it back.
    os.kill(_agent(dc, "supervisor")[0], signal.SIGTERM)
    pid, _ = _agent(dc, "host-2")
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    wait_until(lambda: any(n["name"] == "host-2" and n["state"] == "NODE_STATE_NOT_READY"
                           for n in jq(dc, "nodes")["nodes"]), timeout=10)  # type: ignore[index]
    assert time.monotonic() - t0 < 6
    for i in range(4):
        assert jq(dc, "vm", "create", f"after-{i}")["placement"]["node"] != "host-2"  # type: ignore[index]
    assert "2/3 ready" in vdcos(dc, "status").stdout


def test_a_vanished_domain_is_reported_and_restarted(dc: Path) -> None:
    vdcos(dc, "vm", "create", "fragile")
    node = jq(dc, "vm", "show", "fragile")["placement"]["node"]  # type: ignore[index]
    domains = Path(dc) / "hosts" / node / "domains.json"
    wait_until(lambda: domains.exists() and json.loads(domains.read_text()), timeout=15)
    wait_until(lambda: jq(dc, "vm", "show", "fragile")["status"]["phase"] == "VM_PHASE_RUNNING", timeout=15)  # type: ignore[index]
    old = json.loads(domains.read_text())
    domains.write_text(json.dumps([d for d in old if d["name"] != "fragile"]))
    wait_until(lambda: "disappeared" in jq(dc, "vm", "show", "fragile")["status"].get("message", ""), timeout=15)  # type: ignore[index]
    now = {d["name"]: d["uuid"] for d in json.loads(domains.read_text())}
    assert "fragile" in now and now["fragile"] != {d["name"]: d["uuid"] for d in old}["fragile"]


def test_capacity_planning_from_the_cli(dc: Path, tmp_path: Path) -> None:
    """What-if, the report as a picture and JSON, a drain and a consolidation, as an operator types them."""
    vdcos(dc, "config", "set", "--strategy", "spread")
    for i in range(3):
        vdcos(dc, "vm", "create", f"v{i}", "--vcpus", "2", "--memory-mib", "2048")
    wait_until(lambda: all(v["status"]["phase"] == "VM_PHASE_RUNNING"
                           for v in jq(dc, "vm", "list")["vms"]), 30)  # type: ignore[index]
    head = jq(dc, "capacity", "headroom", "--vcpus", "2", "--memory-mib", "4096")["headroom"]  # type: ignore[index]
    assert head[0]["count"] == 9  # 14 GiB free per host -> 3 each
    assert "3 hosts (optimal" in vdcos(dc, "capacity", "hosts", "--vm", "6x4:8192", "--host-vcpus", "8",
                                       "--host-memory-mib", "16384").stdout
    mixed = vdcos(dc, "capacity", "hosts", "--vm", "5x2:32768", "--host-type", "std=16:65536",
                  "--host-type", "big=32:131072:1").stdout
    assert mixed.startswith("2 hosts (big 1, std 1)"), mixed
    assert "1 re-placed, 0 lost" in vdcos(dc, "capacity", "lose", "host-1").stdout
    png, js = tmp_path / "report.png", tmp_path / "report.json"
    out = vdcos(dc, "capacity", "report", "-o", str(png), "--json", str(js)).stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "headroom: small" in out
    assert len(json.loads(js.read_text())["nodes"]) == 3

    drained = vdcos(dc, "node", "drain", "host-1").stdout
    assert "host-1 cordoned" in drained and "state completed" in drained
    assert all(v["placement"]["node"] != "host-1" for v in jq(dc, "vm", "list")["vms"])  # type: ignore[index]
    vdcos(dc, "uncordon", "host-1")
    plan = vdcos(dc, "rebalance", "plan", "consolidate").stdout
    assert "hosts in use 2 -> 1" in plan and "plan only" in plan
    done = jq(dc, "rebalance", "run", "consolidate")["steps"]  # type: ignore[index]
    assert [s["state"] for s in done] == ["done"]
    assert len({v["placement"]["node"] for v in jq(dc, "vm", "list")["vms"]}) == 1  # type: ignore[index]
    bad = vdcos(dc, "capacity", "hosts", "--vm", "6x4", "--host-vcpus", "8", "--host-memory-mib", "1", check=False)
    assert bad.returncode == 2 and "--vm[0]" in bad.stderr
    bad = vdcos(dc, "rebalance", "plan", "balance", "--threshold", "3", check=False)
    assert bad.returncode == 1 and "imbalance_threshold" in bad.stderr
