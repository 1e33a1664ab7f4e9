"""HA restarts on real libvirt hosts: `python -m benchmarks.failover --runs 10 --json FILE`.

A local datacenter (`vdcos up`) of 3 libvirt hosts with their switches and the shared pool,
the agents' lease TTL 5 s, the supervisor stopped (a lost host stays lost until the run mends
it). Three VMs share one host: `ha-disk` (its counter kept on a shared volume, restart policy
always, priority high), `ha-plain` (restart always, priority low) and `never` (restart never).
Each run loses the host that runs the HA VMs, by one kind in turn:
  crash    every process of the host SIGKILLed (agent, fencer, uplink, libvirtd, QEMUs, OVS);
  freeze   the host's agent SIGSTOPped while its guests run, SIGCONT once the VMs run elsewhere;
  isolate  the host's uplink to etcd stopped and its underlay and migration cables unplugged
           while everything on it runs; mended once the VMs run elsewhere.
Then the host is mended (repair: what died is started again) and the run waits until the HA
controller sees it back.

A sampler lists every host's running QEMUs (libvirt's pid files, checked live) every 100 ms
for the whole benchmark; a VM seen on two hosts at once is a double run. Per run:
  detect_s       host loss -> the HA controller declares the host failed (its record's time)
  restart_s      host loss -> every HA VM's QEMU runs on another host
  guest_resume_s host loss -> ha-disk's counter moves again on its new host, from the value it
                 had on its disk (its console's DISKCNT-FROM), not from zero
A run fails if an HA VM is not running elsewhere within 60 s, if ha-disk's counter starts
over, if the `never` VM runs anywhere else, or if the host does not come back. Every failed
run counts; a figure a run could not measure is null.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import emit, med, p95, wait
from vdcos.cli.localdc import LocalDatacenter, crash_host, down, freeze_agent, host_root, isolate_host, repair, up
from vdcos.host.libvirtd import LibvirtHost
from vdcos.images import counters, ensure
from vdcos.model import HostFailure, decode
from vdcos.nodeagent.libvirt.domain import read_console
from vdcos.process import alive
from vdcos.state import keys
from vdcos.state.etcd import EtcdStore
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import volume_service_pb2 as vol_pb

KINDS = ("crash", "freeze", "isolate")
HA_VMS = ("ha-disk", "ha-plain")
NEVER = "never"
LEASE_TTL = 5
CAPACITY = {"vcpus": 4, "memory_mib": 4096, "disk_gib": 50, "network_mbps": 1000}
_FROM = re.compile(r"^DISKCNT-FROM (\d+)", re.M)


def qemus(home: Path, node: str) -> dict[str, int]:
    return LibvirtHost.load(host_root(home, node)).qemus()


class Sampler(threading.Thread):
    """Every host's running QEMUs every `every` s; any VM on two hosts at once is recorded."""

    def __init__(self, home: Path, hosts: list[str], every: float = 0.1) -> None:
        super().__init__(name="sampler", daemon=True)
        self.home, self.hosts, self.every = home, hosts, every
        self.doubles: list[tuple[float, str, list[str]]] = []
        self.now: dict[str, list[str]] = {}
        self.samples = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.every):
            seen: dict[str, list[str]] = {}
            for h in self.hosts:
                for vm in qemus(self.home, h):
                    seen.setdefault(vm, []).append(h)
            self.now = seen
            self.samples += 1
            for vm, on in seen.items():
                if len(on) > 1:
                    self.doubles.append((time.time(), vm, on))

    def stop(self) -> None:
        self._done.set()
        self.join(5)


class Bench:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.dc = up(home, 3, "libvirt", CAPACITY, lease_ttl=LEASE_TTL)
        self.client = self.dc.client()
        self.store = EtcdStore(self.dc.etcd, tls=self.dc.operator_tls())
        self.hosts = sorted(p.name for p in self.dc.procs if p.kind == "agent")
        self._stop_supervisor()
        self.sampler = Sampler(home, self.hosts)
        self.sampler.start()

    def _stop_supervisor(self) -> None:
        p = self.dc.proc("supervisor")
        if p.running():
            os.kill(p.pid, signal.SIGTERM)
            wait(lambda: not alive(p.pid), 10, "supervisor stopped")

    def close(self) -> None:
        self.sampler.stop()
        self.client.channel.close()
        self.store.close()

    def vm(self, name: str) -> pb.Vm:
        return self.client.vms.GetVm(vm_pb.GetVmRequest(name=name)).vm

    def console(self, node: str, vm: str) -> str:
        return read_console(host_root(self.home, node), vm)

    def create(self) -> None:
        """The three VMs on one host (the others cordoned meanwhile)."""
        self.client.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
            name="ha-disk-vol", pool=vol_pb.POOL_KIND_SHARED, size_gib=1)))
        wait(lambda: self.client.volumes.GetVolume(vol_pb.GetVolumeRequest(name="ha-disk-vol")).volume.state
             == vol_pb.VOLUME_STATE_AVAILABLE, 60, "volume")
        target = self.hosts[0]
        for h in self.hosts[1:]:
            self.client.nodes.CordonNode(node_pb.CordonNodeRequest(name=h, reason="failover benchmark: one host"))
        try:
            for name, image, vols, policy, prio in (
                    ("ha-disk", "disk-counter", ["ha-disk-vol"], pb.RESTART_POLICY_ALWAYS, pb.RESTART_PRIORITY_HIGH),
                    ("ha-plain", "counter", [], pb.RESTART_POLICY_ALWAYS, pb.RESTART_PRIORITY_LOW),
                    (NEVER, "counter", [], pb.RESTART_POLICY_NEVER, pb.RESTART_PRIORITY_MEDIUM)):
                self.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(
                    name=name, image=image, volumes=vols, resources=pb.Resources(vcpus=1, memory_mib=128),
                    ha=pb.HaSettings(restart_policy=policy, priority=prio))))
        finally:
            for h in self.hosts[1:]:
                self.client.nodes.UncordonNode(node_pb.UncordonNodeRequest(name=h))
        for name in (*HA_VMS, NEVER):
            wait(lambda: len(counters(self.console(target, name))) > 3, 180, f"{name} booted")

    def failure(self, node: str) -> HostFailure | None:
        kv = self.store.get(keys.ha_host(node))
        return decode(HostFailure, json.loads(kv.value)) if kv else None

    def run_once(self, kind: str) -> dict[str, Any]:
        """One host loss of `kind`, measured, then mended."""
        victim = self.vm("ha-disk").placement.node
        row: dict[str, Any] = {"kind": kind, "host": victim, "ok": False, "detect_s": None, "restart_s": None,
                               "guest_resume_s": None, "error": ""}
        for name in HA_VMS:
            wait(lambda: self.vm(name).status.phase == pb.VM_PHASE_RUNNING, 120, f"{name} running before")
        wait(lambda: len(counters(self.console(victim, "ha-disk"))) > 3, 120, "ha-disk counting")
        wait(lambda: max(counters(self.console(victim, "ha-disk")) or [0]) >= 20, 120, "ha-disk's counter at 20")
        before = {h: self.console(h, "ha-disk") for h in self.hosts}
        # The VMs of the victim, as they run there now.
        moving = [v for v in HA_VMS if self.vm(v).placement.node == victim]
        never_there = self.vm(NEVER).placement.node == victim
        doubles_before = len(self.sampler.doubles)
        dc = LocalDatacenter.load(self.home)
        assert dc is not None
        last = max(counters(self.console(victim, "ha-disk")) or [0])
        t0, wall0 = time.monotonic(), time.time()
        if kind == "crash":
            crash_host(dc, victim)
        elif kind == "freeze":
            freeze_agent(dc, victim, True)
        else:
            isolate_host(dc, victim, True)
        try:
            def elsewhere() -> bool:
                now = self.sampler.now
                return all(any(h != victim for h in now.get(v, [])) for v in moving)
            try:
                wait(lambda: (f := self.failure(victim)) is not None and f.declared_at, 60, "host declared failed")
                f = self.failure(victim)
                row["detect_s"] = round(f.declared_at - wall0, 2) if f else None
                wait(elsewhere, 60, "HA VMs running elsewhere")
                row["restart_s"] = round(time.monotonic() - t0, 2)
                new = self.vm("ha-disk").placement.node
                text = lambda: since(self.console(new, "ha-disk"), before[new])  # noqa: E731
                wait(lambda: _FROM.search(text()) and len(counters(text())) >= 2, 60, "ha-disk counting again")
                row["guest_resume_s"] = round(time.monotonic() - t0, 2)
                started_from = int(_FROM.findall(text())[-1])
                row.update(counter_before=last, counter_from=started_from, new_host=new,
                           epoch=self.vm("ha-disk").placement.epoch)
                never_elsewhere = [h for h in self.sampler.now.get(NEVER, []) if h != victim]
                f = self.failure(victim)
                row.update(vms_restarted=len(f.restarted) if f else 0, vms_lost=len(f.lost) if f else 0)
                if started_from < max(last - 1, 1):
                    row["error"] = f"ha-disk's counter started over: from {started_from}, had {last}"
                elif never_there and never_elsewhere:
                    row["error"] = f"the never VM runs on {never_elsewhere}"
                else:
                    row["ok"] = True
            except TimeoutError as e:
                row["error"] = f"timed out waiting for: {e}"
        finally:
            self.mend(kind, victim, dc)
        row["doubles"] = self.sampler.doubles[doubles_before:]
        if row["doubles"]:
            row["ok"], row["error"] = False, f"double run: {row['doubles'][:3]}"
        return row

    def agent_down_once(self) -> dict[str, Any]:
        """Not a host loss: the host's agent and fencer die (SIGKILL) while its libvirtd and
        guests run on. Its lease goes; its hypervisor still answers with the guests running, so
        none may be restarted elsewhere. Then the agent comes back and adopts them."""
        victim = self.vm("ha-disk").placement.node
        on = [v for v in (*HA_VMS, NEVER) if self.vm(v).placement.node == victim]
        epochs = {v: self.vm(v).placement.epoch for v in on}
        before = qemus(self.home, victim)
        doubles_before = len(self.sampler.doubles)
        dc = LocalDatacenter.load(self.home)
        assert dc is not None
        for name in (victim, f"fencer-{victim}"):
            os.kill(dc.proc(name).pid, signal.SIGKILL)
        row: dict[str, Any] = {"host": victim, "vms": on, "ok": False, "error": ""}
        try:
            wait(lambda: (f := self.failure(victim)) is not None and f.phase.value == "agent-down", 60,
                 "the host found agent-down")
            time.sleep(3)  # more resyncs: still nothing is restarted
            f = self.failure(victim)
            row.update(phase=f.phase.value if f else None, still_running=list(f.still_running) if f else [],
                       placed_on=[self.vm(v).placement.node for v in on],
                       epochs_kept=all(self.vm(v).placement.epoch == epochs[v] for v in on),
                       qemus_kept=qemus(self.home, victim) == before)
        except TimeoutError as e:
            row["error"] = f"timed out waiting for: {e}"
        finally:
            repair(self.home)
            self._stop_supervisor()
            wait(lambda: self.failure(victim) is None, 60, f"{victim} back")
            time.sleep(2)
        row["qemus_after_return"] = qemus(self.home, victim) == before
        row["doubles"] = self.sampler.doubles[doubles_before:]
        row["ok"] = bool(not row["error"] and not row["doubles"] and row.get("epochs_kept") and row.get("qemus_kept")
                         and row["qemus_after_return"] and set(row.get("placed_on", [])) == {victim})
        return row

    def mend(self, kind: str, victim: str, dc: LocalDatacenter) -> None:
        if kind == "freeze":
            freeze_agent(dc, victim, False)
        elif kind == "isolate":
            isolate_host(dc, victim, False)
        repair(self.home)  # what the fencer or the crash killed comes back
        self.dc = LocalDatacenter.load(self.home) or self.dc
        self._stop_supervisor()
        wait(lambda: self.failure(victim) is None, 60, f"{victim} back")
        time.sleep(2)  # the returning agent's first rounds run under the sampler's eye


def since(text: str, before: str) -> str:
    """What a console shows of a boot after `before` was read: QEMU starts its log file over
    when the domain starts again, so an earlier boot's text is not this one's."""
    new = text[len(before):] if text.startswith(before) else text
    boot = new.rfind("GUEST-BOOTED")
    return new[boot:] if boot >= 0 else ""



def run(runs: int, keep_logs: bool = False) -> dict[str, Any]:
    ensure()
    home = Path(tempfile.mkdtemp(prefix="vdcos-failover-"))
    bench = None
    rows: list[dict[str, Any]] = []
    try:
        bench = Bench(home)
        bench.create()
        for i in range(runs):
            kind = KINDS[i % len(KINDS)]
            try:
                row = bench.run_once(kind)
            except Exception as e:  # a run that broke is a failed run, and the next one goes on
                row = {"kind": kind, "ok": False, "error": f"{type(e).__name__}: {e}", "detect_s": None,
                       "restart_s": None, "guest_resume_s": None, "doubles": []}
            rows.append(row)
            print(json.dumps(row), flush=True)
        doubles = bench.sampler.doubles
        samples = bench.sampler.samples
    finally:
        try:
            if bench is not None:
                bench.close()
        finally:
            down(home, purge=True, keep_logs=keep_logs)
            if not keep_logs:
                shutil.rmtree(home, ignore_errors=True)
    ok = [r for r in rows if r["ok"]]
    result = {
        "runs": len(rows), "failures": len(rows) - len(ok), "double_runs": len(doubles), "sampler_samples": samples,
        "lease_ttl_s": LEASE_TTL,
        "detect_s_median": med(rows, "detect_s", 2), "restart_s_median": med(rows, "restart_s", 2),
        "restart_s_p95": p95(rows, "restart_s", 2), "guest_resume_s_median": med(rows, "guest_resume_s", 2),
        "vms_restarted": sum(r.get("vms_restarted", 0) for r in rows),
        "vms_lost": sum(r.get("vms_lost", 0) for r in rows),
        "per_kind": {k: {"runs": sum(r["kind"] == k for r in rows), "failures": sum(r["kind"] == k and not r["ok"]
                                                                                   for r in rows),
                         "restart_s_median": med([r for r in rows if r["kind"] == k], "restart_s", 2)}
                     for k in KINDS},
        "rows": rows,
    }
    worst = result["restart_s_p95"]
    result["targets_met"] = bool(result["failures"] == 0 and result["double_runs"] == 0 and worst is not None
                                 and worst <= 15)
    if keep_logs:
        result["logs"] = str(home / "logs")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.failover", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not 1 <= args.runs <= 100:
        ap.error("--runs: between 1 and 100")
    emit(run(args.runs, args.keep_logs), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
