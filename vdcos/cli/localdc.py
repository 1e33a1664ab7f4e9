"""A whole datacenter on one machine: etcd, a scheduler and N node agents as child processes of
nobody (own sessions), recorded in $VDCOS_HOME/cluster.json and stopped by those PIDs only."""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vdcos.host.libvirtd import CGROUP_ROOT, LibvirtHost
from vdcos.host.network import HostNetwork, remove_fabric
from vdcos.process import alive, stop_pid
from vdcos.state.etcd_server import EtcdServer


def home_dir() -> Path:
    return Path(os.environ.get("VDCOS_HOME") or Path.home() / ".vdcos")


@dataclass
class Proc:
    name: str
    pid: int
    log: str
    # "libvirtd": a host's hypervisor, stopped through LibvirtHost (guests, cgroups) not by PID alone
    kind: str = ""
    root: str = ""


@dataclass
class LocalDatacenter:
    home: str
    etcd: str
    scheduler: str
    driver: str
    procs: list[Proc] = field(default_factory=list)

    @property
    def state_file(self) -> Path:
        return Path(self.home) / "cluster.json"

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.state_file)

    @classmethod
    def load(cls, home: Path) -> LocalDatacenter | None:
        f = home / "cluster.json"
        if not f.exists():
            return None
        d = json.loads(f.read_text())
        d["procs"] = [Proc(**p) for p in d["procs"]]
        return cls(**d)

    def alive(self) -> dict[str, bool]:
        return {p.name: p.pid > 0 and alive(p.pid) for p in self.procs}


def _spawn(home: Path, name: str, argv: list[str]) -> Proc:
    log = home / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        p = subprocess.Popen(argv, stdout=f, stderr=f, stdin=subprocess.DEVNULL, start_new_session=True,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return Proc(name, p.pid, str(log))


def _datacenter_id(home: Path) -> str:
    """Short, stable per home: names this datacenter's cgroups and migration addresses."""
    f = home / "datacenter-id"
    if not f.exists():
        # Not one whose cgroups another datacenter on this machine is using.
        free = [n for n in range(1, 255) if not list(CGROUP_ROOT.joinpath("cpu").glob(f"vdcos-{n:02x}-*"))]
        f.write_text(f"{random.choice(free):02x}")
    return f.read_text().strip()


def host_name(i: int) -> str:
    return f"host-{i}"


def host_root(home: Path, node: str) -> Path:
    """A host's own folder: agent state and, for libvirt hosts, the daemon's directories."""
    return home / "hosts" / node


def up(home: Path, hosts: int, driver: str, capacity: dict[str, int], lease_ttl: int = 10,
       timeout: float = 60.0, cpu_wakeup_latency_us: int | None = None) -> LocalDatacenter:
    existing = LocalDatacenter.load(home)
    if existing is not None:
        if all(existing.alive().values()):
            return existing  # idempotent: it is up already
        down(home)
    home.mkdir(parents=True, exist_ok=True)
    etcd = EtcdServer(home / "etcd", log_path=home / "logs" / "etcd.log")
    (home / "logs").mkdir(parents=True, exist_ok=True)
    etcd.start()
    dc = LocalDatacenter(str(home), etcd.endpoint, "", driver, [Proc("etcd", etcd.pid, str(etcd.log_path))])
    dc.save()
    try:
        port_file = home / "scheduler.port"
        port_file.unlink(missing_ok=True)
        py = sys.executable
        argv = [py, "-m", "vdcos.apiserver", "--etcd", etcd.endpoint, "--listen", "127.0.0.1:0",
                "--port-file", str(port_file)]
        if cpu_wakeup_latency_us is not None:
            argv += ["--cpu-wakeup-latency-us", str(cpu_wakeup_latency_us)]
        dc.procs.append(_spawn(home, "scheduler", argv))
        dc.save()
        dc_id = _datacenter_id(home)
        for i in range(1, hosts + 1):
            name = host_name(i)
            root = host_root(home, name)
            argv = [py, "-m", "vdcos.nodeagent", "--etcd", etcd.endpoint, "--name", name, "--driver", driver,
                    "--state-dir", str(root), "--lease-ttl", str(lease_ttl),
                    "--label", f"rack=rack-{(i - 1) % 2 + 1}"]
            if driver == "libvirt":
                # One host = one namespace set: its network namespace with its own Open vSwitch,
                # and its libvirtd in that namespace. Recorded before it starts: a failed start
                # is still cleaned up by down().
                dc.procs.append(Proc(f"libvirtd-{name}", 0, str(root / "log" / "libvirtd.log"), "libvirtd", str(root)))
                dc.save()
                net = HostNetwork(dc_id, name, i, str(root)).start()
                lv = LibvirtHost.create(root, name, dc_id, net.mgmt_ip, netns=net.netns)
                lv.start()
                dc.procs[-1].pid = lv.pid()
                dc.save()
                argv += ["--libvirt-uri", lv.uri, "--shared-pool", str(home / "pools" / "shared")]
            for k, v in capacity.items():
                argv += [f"--{k.replace('_', '-')}", str(v)]
            dc.procs.append(_spawn(home, name, argv))
        dc.save()
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if time.monotonic() > deadline or not alive(dc.procs[1].pid):
                raise RuntimeError(f"scheduler did not start; see {dc.procs[1].log}")
            time.sleep(0.05)
        dc.scheduler = f"127.0.0.1:{port_file.read_text().strip()}"
        dc.save()
        _wait_nodes(dc, hosts, deadline)
        return dc
    except BaseException:
        down(home)
        raise


def _wait_nodes(dc: LocalDatacenter, hosts: int, deadline: float) -> None:
    from vdcos.cli.client import Client
    from vdcos.v1 import node_service_pb2 as npb
    from vdcos.v1 import types_pb2 as pb

    with Client(dc.scheduler) as c:
        while True:
            nodes = c.nodes.ListNodes(npb.ListNodesRequest(), timeout=5).nodes
            if sum(n.state == pb.NODE_STATE_READY for n in nodes) >= hosts:
                return
            dead = [p.name for p in dc.procs if not alive(p.pid)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"nodes did not register (dead: {dead or 'none'}); logs in {dc.home}/logs")
            time.sleep(0.1)


def down(home: Path, *, keep_logs: bool = True) -> list[str]:
    dc = LocalDatacenter.load(home)
    stopped: list[str] = []
    if dc is None:
        return stopped
    # Agents and scheduler first, etcd last, so nothing writes into a dying store; each host's
    # agent stops before its hypervisor, so it does not restart the guests being destroyed.
    for p in reversed(dc.procs):
        if p.kind == "libvirtd":
            if Path(p.root, "host.json").exists():
                LibvirtHost.load(Path(p.root)).stop()
                stopped.append(f"{p.name} (pid {p.pid})")
            net = HostNetwork.load(Path(p.root))
            if net is not None:
                net.stop()
                stopped.append(f"switch of {net.name} (netns {net.netns})")
        elif alive(p.pid):
            stop_pid(p.pid)
            stopped.append(f"{p.name} (pid {p.pid})")
    if (home / "datacenter-id").exists():
        remove_fabric((home / "datacenter-id").read_text().strip())
    for sub in ("etcd", "hosts"):
        shutil.rmtree(home / sub, ignore_errors=True)
    for f in ("cluster.json", "scheduler.port"):
        (home / f).unlink(missing_ok=True)
    if not keep_logs:
        shutil.rmtree(home / "logs", ignore_errors=True)
    return stopped
