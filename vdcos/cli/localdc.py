"""A whole datacenter on one machine: etcd (one member or three), N API/scheduler replicas and
N node agents as processes in their own sessions, recorded in $VDCOS_HOME/cluster.json and
stopped by those PIDs only; a supervisor among them restarts any that dies. A libvirt host also
has its hypervisor and switch, its fencer (its watchdog) and its uplink to etcd.

State lives in the home folder and outlives the processes: `down` stops them and keeps etcd's
data, the hosts' folders, the pools and the images, and `up` brings the same datacenter back
(after `down`, after a crash, after a reboot), restarting only what is not running. Deleting
it all is `down --purge`."""
from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from vdcos.cli.client import Client
from vdcos.host import fencer, uplink
from vdcos.host.libvirtd import CGROUP_ROOT, LibvirtHost
from vdcos.host.netlink import netns_exists
from vdcos.host.network import HostNetwork, remove_fabric
from vdcos.metrics import prometheus
from vdcos.process import alive, start_time, stop_pid
from vdcos.security.pki import Authority, Identity, TlsFiles, issued
from vdcos.security.tls import etcd_flags
from vdcos.state.etcd_server import GOGC, EtcdCluster, answering, free_ports

# What `down --purge` deletes; `down` keeps it.
STATE = ("etcd", "hosts", "pools", "run", "pki", "prometheus", "datacenter-id", "cluster.json")
# The operator who ran `vdcos up`: admin of the datacenter, by this certificate (home/pki/).
OPERATOR = Identity("user", "admin")
# The datacenter's Prometheus: it may read every process's metrics and nothing else.
MONITOR = Identity("monitor", "prometheus")
DASHBOARD = Identity("dashboard", "dashboard")


def home_dir() -> Path:
    return Path(os.environ.get("VDCOS_HOME") or Path.home() / ".vdcos")


@dataclass
class Proc:
    name: str
    pid: int
    log: str
    # etcd | apiserver | agent | supervisor | libvirtd (a host's hypervisor and switch, started
    # and stopped through LibvirtHost and HostNetwork, not by PID alone) | fencer (a libvirt
    # host's watchdog, vdcos/host/fencer.py) | uplink (a libvirt host's link to etcd, vdcos/host/uplink.py)
    # | prometheus | discovery (its targets, vdcos/metrics/) | dashboard (vdcos/dashboard/)
    kind: str = ""
    root: str = ""
    argv: list[str] = field(default_factory=list)
    # The process's start time: a PID that a reboot gave to another process is not this one.
    started: int = 0

    def running(self) -> bool:
        if self.kind == "libvirtd":
            net = HostNetwork.load(Path(self.root))
            return (Path(self.root, "host.json").exists() and LibvirtHost.load(Path(self.root)).running()
                    and (net is None or netns_exists(net.netns)))
        return self.pid > 0 and alive(self.pid) and (not self.started or start_time(self.pid) == self.started)


@dataclass
class LocalDatacenter:
    home: str
    etcd: list[str]   # the members' client endpoints
    api: list[str]    # the API/scheduler replicas' addresses: TLS, bearer tokens (plaintext with --insecure)
    driver: str
    procs: list[Proc] = field(default_factory=list)
    hosts: int = 0
    # The datacenter CA's certificate (PEM): what clients check the API's and etcd's against.
    # Empty: a datacenter started with --insecure (plaintext everywhere).
    ca: str = ""
    # The replicas' mutual-TLS addresses: callers with certificates from the CA (the operator).
    api_mtls: list[str] = field(default_factory=list)
    # Each process's Prometheus metrics address, by process name (https://ADDR/metrics, mutual
    # TLS), etcd's members' included; and the datacenter's Prometheus (`up --prometheus`), "" if none.
    metrics: dict[str, str] = field(default_factory=dict)
    prometheus: str = ""
    # The web dashboard's URL (vdcos/dashboard/): a page that signs in with a vdcos token.
    dashboard: str = ""

    @property
    def insecure(self) -> bool:
        return not self.ca

    def client(self) -> Client:
        """An API client as the local operator, by its certificate."""
        return Client(self.api_mtls or self.api, tls=self.operator_tls())

    def operator_tls(self) -> TlsFiles | None:
        """The local operator's credentials, for etcd and the API alike."""
        if self.insecure:
            return None
        return issued(Path(self.ca).parent, OPERATOR)

    @property
    def scheduler(self) -> str:
        """Every replica, comma-separated, as clients take them."""
        return ",".join(self.api)

    @property
    def etcd_endpoint(self) -> str:
        return ",".join(self.etcd)

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
        return {p.name: p.running() for p in self.procs}

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)


@contextmanager
def locked(home: Path) -> Iterator[None]:
    """One of `up`, `down` and the supervisor changes the datacenter at a time."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _spawn(p: Proc, env: dict[str, str] | None = None) -> None:
    Path(p.log).parent.mkdir(parents=True, exist_ok=True)
    with open(p.log, "ab") as f:
        child = subprocess.Popen(p.argv, stdout=f, stderr=f, stdin=subprocess.DEVNULL, start_new_session=True,
                                 env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
    p.pid, p.started = child.pid, start_time(child.pid)


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


def uplink_socket(root: Path) -> Path:
    return root / "uplink.sock"


def host_procs(dc: LocalDatacenter, node: str) -> list[Proc]:
    """Every recorded process of one host: its agent, fencer, uplink and hypervisor."""
    return [p for p in dc.procs if p.name == node or p.name.endswith(f"-{node}")]


def _port_file(home: Path, name: str) -> Path:
    return home / "run" / f"{name}.port"


def up(home: Path, hosts: int, driver: str, capacity: dict[str, int], lease_ttl: int = 10,
       timeout: float = 60.0, cpu_wakeup_latency_us: int | None = None, etcd_members: int = 1,
       replicas: int = 1, insecure: bool = False, with_prometheus: bool = False) -> LocalDatacenter:
    """A new datacenter, or the one in `home` with whatever is not running started again.

    A new one gets its own CA (home/pki) and a certificate for every etcd member, replica,
    agent and the operator; etcd and the API then take TLS clients with those certificates
    only. `insecure` (developers only) runs all of it in plaintext instead. Every process serves
    its metrics; `with_prometheus` also runs a Prometheus that scrapes them all."""
    if LocalDatacenter.load(home) is not None:
        return repair(home, timeout)
    with locked(home):
        dc = _create(home, hosts, driver, capacity, lease_ttl, cpu_wakeup_latency_us, etcd_members, replicas,
                     insecure, with_prometheus)
    try:
        _wait_nodes(dc, hosts, time.monotonic() + timeout)
    except BaseException:
        down(home, purge=True)
        raise
    return dc


def _etcd_flags(pki: Authority | None, who: Identity) -> list[str]:
    return etcd_flags(None if pki is None else pki.issue(who))


def _create(home: Path, hosts: int, driver: str, capacity: dict[str, int], lease_ttl: int,
            cpu_wakeup_latency_us: int | None, etcd_members: int, replicas: int, insecure: bool,
            with_prometheus: bool = False) -> LocalDatacenter:
    (home / "logs").mkdir(parents=True, exist_ok=True)
    (home / "run").mkdir(parents=True, exist_ok=True)
    dc_id = _datacenter_id(home)
    pki = None if insecure else Authority.ensure(home / "pki", dc_id)
    etcd = EtcdCluster(home / "etcd", etcd_members, log_dir=home / "logs",
                       tls={} if pki is None else {i: pki.issue(Identity("etcd", f"etcd-{i}"))
                                                   for i in range(1, etcd_members + 1)})
    dc = LocalDatacenter(str(home), [], [], driver, hosts=hosts, ca="" if pki is None else str(pki.cert_path))
    if pki is not None:
        pki.issue(OPERATOR)
    try:
        etcd.start()
        if pki is not None:
            names = ["scheduler"] if replicas == 1 else [f"scheduler-{i}" for i in range(1, replicas + 1)]
            etcd.enable_access(pki.issue(OPERATOR), [f"scheduler:{n}" for n in names],
                               [host_name(i) for i in range(1, hosts + 1)], OPERATOR.common_name)
        dc.etcd = etcd.endpoints
        for m in etcd.members:
            dc.procs.append(Proc("etcd" if etcd_members == 1 else f"etcd-{m.name.rpartition('-')[2]}", m.pid,
                                 str(m.log_path), "etcd", argv=m.argv(), started=start_time(m.pid)))
        # etcd serves its own metrics on its client address.
        dc.metrics = {p.name: member for p, member in zip([p for p in dc.procs if p.kind == "etcd"], dc.etcd)}
        # Fixed ports (picked free now): a process restarted by the supervisor serves where
        # cluster.json and Prometheus already look.
        ports = iter(free_ports(replicas + hosts))
        dc.save()
        py = sys.executable
        for i in range(1, replicas + 1):
            name = "scheduler" if replicas == 1 else f"scheduler-{i}"
            dc.metrics[name] = f"127.0.0.1:{next(ports)}"
            argv = [py, "-m", "vdcos.apiserver", "--etcd", dc.etcd_endpoint, "--listen", "127.0.0.1:0",
                    "--port-file", str(_port_file(home, name)), "--metrics-listen", dc.metrics[name],
                    *_etcd_flags(pki, Identity("scheduler", name))]
            if pki is not None:
                argv += ["--listen-mtls", "127.0.0.1:0", "--mtls-port-file", str(_port_file(home, f"{name}.mtls")),
                         "--ca-dir", str(pki.folder)]
                _port_file(home, f"{name}.mtls").unlink(missing_ok=True)
            if cpu_wakeup_latency_us is not None:
                argv += ["--cpu-wakeup-latency-us", str(cpu_wakeup_latency_us)]
            p = Proc(name, 0, str(home / "logs" / f"{name}.log"), "apiserver", argv=argv)
            _port_file(home, name).unlink(missing_ok=True)
            _spawn(p)
            dc.procs.append(p)
        dc.save()
        for i in range(1, hosts + 1):
            name = host_name(i)
            root = host_root(home, name)
            dc.metrics[name] = f"127.0.0.1:{next(ports)}"
            argv = [py, "-m", "vdcos.nodeagent", "--etcd", dc.etcd_endpoint, "--name", name, "--driver", driver,
                    "--state-dir", str(root), "--lease-ttl", str(lease_ttl), "--metrics-listen", dc.metrics[name],
                    "--label", f"rack=rack-{(i - 1) % 2 + 1}", *_etcd_flags(pki, Identity("node", name))]
            if driver == "libvirt":
                # One host = one namespace set: its network namespace with its own Open vSwitch,
                # and its libvirtd in that namespace. Recorded before it starts: a failed start
                # is still cleaned up by down().
                lv_proc = Proc(f"libvirtd-{name}", 0, str(root / "log" / "libvirtd.log"), "libvirtd", str(root))
                dc.procs.append(lv_proc)
                dc.save()
                net = HostNetwork(dc_id, name, i, str(root)).start()
                # Its certificate names it and its address: what a peer migrating to it checks.
                tls = None if pki is None else pki.issue(Identity("node", name), names=(name, net.mgmt_ip))
                lv = LibvirtHost.create(root, name, dc_id, net.mgmt_ip, netns=net.netns,
                                        lockspace=str(home / "pools" / "locks"), tls=tls)
                lv.start()
                lv_proc.pid = lv.pid()
                link = Proc(f"uplink-{name}", 0, str(home / "logs" / f"uplink-{name}.log"), "uplink", str(root),
                            argv=[py, "-m", "vdcos.host.uplink", "--socket", str(uplink_socket(root)),
                                  "--etcd", dc.etcd_endpoint])
                _spawn(link)
                dc.procs.append(link)
                dc.save()
                argv[argv.index("--etcd") + 1] = uplink.endpoint(uplink_socket(root))
                argv += ["--libvirt-uri", lv.uri, "--shared-pool", str(home / "pools" / "shared"), "--fence",
                         *(["--migrate-tls"] if tls is not None else [])]
            for k, v in capacity.items():
                argv += [f"--{k.replace('_', '-')}", str(v)]
            p = Proc(name, 0, str(home / "logs" / f"{name}.log"), "agent", argv=argv)
            _spawn(p)
            dc.procs.append(p)
            if driver == "libvirt":
                # The watchdog lives in the host's own network namespace, apart from its agent.
                f = Proc(f"fencer-{name}", 0, str(home / "logs" / f"fencer-{name}.log"), "fencer", str(root),
                         argv=["nsenter", f"--net=/run/netns/{net.netns}", py, "-m", "vdcos.host.fencer",
                               "--root", str(root)])
                _spawn(f)
                dc.procs.append(f)
        dc.save()
        deadline = time.monotonic() + 60
        for p in dc.procs:
            if p.kind == "apiserver":
                port = _wait_port(p, _port_file(home, p.name), deadline)
                dc.api.append(f"127.0.0.1:{port}")
                # A restart listens where clients already look.
                p.argv[p.argv.index("--listen") + 1] = f"127.0.0.1:{port}"
                if "--listen-mtls" in p.argv:  # written before the token port's file
                    mtls = int(_port_file(home, f"{p.name}.mtls").read_text())
                    dc.api_mtls.append(f"127.0.0.1:{mtls}")
                    p.argv[p.argv.index("--listen-mtls") + 1] = f"127.0.0.1:{mtls}"
        if with_prometheus:
            _start_prometheus(dc, pki)
        _start_dashboard(dc, pki)
        dc.procs.append(_supervisor(home))
        dc.save()
        return dc
    except BaseException:
        dc.save()
        _stop_all(dc)
        _purge(home)
        raise


def _start_prometheus(dc: LocalDatacenter, pki: Authority | None) -> None:
    """Debian's Prometheus, scraping every vdcos process and etcd member as `monitor:prometheus`,
    and the discovery process that keeps its targets equal to what runs (metrics/discovery.py)."""
    home = Path(dc.home)
    folder = home / "prometheus"
    tls = None if pki is None else pki.issue(MONITOR)
    prometheus.configure(folder, tls)
    listen = f"127.0.0.1:{free_ports(1)[0]}"
    p = Proc("prometheus", 0, str(home / "logs" / "prometheus.log"), "prometheus",
             argv=prometheus.argv(folder, listen))
    _spawn(p)
    dc.procs.append(p)
    d = Proc("discovery", 0, str(home / "logs" / "discovery.log"), "discovery",
             argv=[sys.executable, "-m", "vdcos.metrics.discovery", "--etcd", dc.etcd_endpoint, "--folder", str(folder),
                   *_etcd_flags(pki, OPERATOR)])
    _spawn(d)
    dc.procs.append(d)
    dc.prometheus = f"{'http' if pki is None else 'https'}://{listen}"


def _start_dashboard(dc: LocalDatacenter, pki: Authority | None) -> None:
    """The web dashboard, beside the replicas: it calls them as each browser's token, and reads
    VMs' history from the datacenter's Prometheus, if any, with its own certificate."""
    home = Path(dc.home)
    listen = f"127.0.0.1:{free_ports(1)[0]}"  # fixed: a restart serves where cluster.json points
    argv = [sys.executable, "-m", "vdcos.dashboard", "--api", dc.scheduler, "--listen", listen]
    if pki is None:
        argv.append("--insecure")
    else:
        tls = pki.issue(DASHBOARD)
        argv += ["--ca", str(tls.ca), "--cert", str(tls.cert), "--key", str(tls.key)]
    if dc.prometheus:
        argv += ["--prometheus", dc.prometheus]
    p = Proc("dashboard", 0, str(home / "logs" / "dashboard.log"), "dashboard", argv=argv)
    _spawn(p)
    dc.procs.append(p)
    dc.dashboard = f"{'http' if pki is None else 'https'}://{listen}/"
    # `up` returns once the URL it prints answers.
    deadline = time.monotonic() + 30
    while not _listening(listen):
        if time.monotonic() > deadline or not p.running():
            raise RuntimeError(f"the dashboard did not start; see {p.log}")
        time.sleep(0.05)


def _listening(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def _supervisor(home: Path) -> Proc:
    p = Proc("supervisor", 0, str(home / "logs" / "supervisor.log"), "supervisor",
             argv=[sys.executable, "-m", "vdcos.cli.supervisor", "--home", str(home)])
    _spawn(p)
    return p


def _wait_port(p: Proc, port_file: Path, deadline: float) -> int:
    while not port_file.exists():
        if time.monotonic() > deadline or not p.running():
            raise RuntimeError(f"{p.name} did not start; see {p.log}")
        time.sleep(0.05)
    return int(port_file.read_text().strip())


def restart(dc: LocalDatacenter, p: Proc) -> None:
    """Starts one recorded process again, as it was started first."""
    if p.kind == "libvirtd":
        root = Path(p.root)
        net = HostNetwork.load(root)
        if net is not None:
            net.start()  # its namespace, switch daemons and bridges: each only if missing
        lv = LibvirtHost.load(root)
        lv.start()
        p.pid = lv.pid()
        return
    if p.kind == "fencer":
        _wait_pet(dc, p)
    _spawn(p, {"GOGC": os.environ.get("GOGC", GOGC)} if p.kind == "etcd" else None)


def _wait_pet(dc: LocalDatacenter, fencer_proc: Proc, timeout: float = 15.0) -> None:
    """A fencer that starts while its deadline is past kills the host's QEMUs (its agent may be
    gone for good): when its agent is starting again too, the fencer waits for the agent's
    first pet, so that guests the HA controller found running are not killed for nothing."""
    agent = dc.proc(fencer_proc.name.removeprefix("fencer-"))
    deadline = time.monotonic() + timeout
    while agent.running() and time.monotonic() < deadline:
        pet = fencer.read_deadline(Path(fencer_proc.root))
        if pet is not None and pet > time.monotonic():
            return
        time.sleep(0.1)


def repair(home: Path, timeout: float = 60.0) -> LocalDatacenter:
    """Starts again every recorded process that is not running (etcd first, agents last), and
    deletes nothing. What runs is left alone."""
    with locked(home):
        dc = LocalDatacenter.load(home)
        if dc is None:
            raise RuntimeError(f"no datacenter under {home}")
        order = ("etcd", "uplink", "libvirtd", "apiserver", "agent", "fencer", "prometheus", "discovery", "dashboard",
                 "supervisor")
        dead = sorted((p for p in dc.procs if not p.running()),
                      key=lambda p: order.index(p.kind) if p.kind in order else order.index("agent"))
        for p in dead:
            restart(dc, p)
            dc.save()
            if p.kind == "etcd" and not any(q.kind == "etcd" for q in dead[dead.index(p) + 1:]):
                wait_etcd(dc, timeout)
        if not any(p.kind == "supervisor" for p in dc.procs):  # a datacenter from before supervisors
            dc.procs.append(_supervisor(home))
            dc.save()
    if dead:
        _wait_nodes(dc, dc.hosts or sum(p.kind == "agent" for p in dc.procs), time.monotonic() + timeout)
    return dc


def wait_etcd(dc: LocalDatacenter, timeout: float) -> None:
    if not answering(dc.etcd_endpoint, timeout, tls=dc.operator_tls()):
        raise RuntimeError(f"etcd ({dc.etcd_endpoint}) did not answer within {timeout:.0f} s")


def _wait_nodes(dc: LocalDatacenter, hosts: int, deadline: float) -> None:
    from vdcos.v1 import node_service_pb2 as npb
    from vdcos.v1 import types_pb2 as pb

    with dc.client() as c:
        while True:
            try:
                nodes = c.nodes.ListNodes(npb.ListNodesRequest(), timeout=5).nodes
                if sum(n.state == pb.NODE_STATE_READY for n in nodes) >= hosts:
                    return
            except Exception as e:  # the API may still be starting
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not answer: {e}; logs in {dc.home}/logs") from e
            dead = [p.name for p in dc.procs if not p.running()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"nodes did not register (dead: {dead or 'none'}); logs in {dc.home}/logs")
            time.sleep(0.1)


def _stop_all(dc: LocalDatacenter) -> list[str]:
    # The supervisor first (it would start the others again), then agents and schedulers, etcd
    # last, so nothing writes into a dying store; each host's agent stops before its hypervisor,
    # so it does not restart the guests being stopped.
    stopped: list[str] = []
    procs = sorted(dc.procs, key=lambda p: p.kind != "supervisor")
    for p in [procs[0], *reversed(procs[1:])] if procs else []:
        if p.kind == "libvirtd":
            if Path(p.root, "host.json").exists():
                LibvirtHost.load(Path(p.root)).stop()
                stopped.append(f"{p.name} (pid {p.pid})")
            net = HostNetwork.load(Path(p.root))
            if net is not None:
                net.stop()
                stopped.append(f"switch of {net.name} (netns {net.netns})")
        elif p.running():
            stop_pid(p.pid)
            stopped.append(f"{p.name} (pid {p.pid})")
    dc_id = Path(dc.home) / "datacenter-id"
    if dc_id.exists():
        remove_fabric(dc_id.read_text().strip())  # the namespace joining the hosts' switches
    return stopped


def _purge(home: Path) -> None:
    for sub in STATE:
        path = home / sub
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def down(home: Path, *, purge: bool = False, keep_logs: bool = True) -> list[str]:
    """Stops every process and keeps the state; with `purge`, deletes the datacenter too."""
    with locked(home):
        dc = LocalDatacenter.load(home)
        stopped = _stop_all(dc) if dc is not None else []
        if purge:
            _purge(home)
            if not keep_logs:
                shutil.rmtree(home / "logs", ignore_errors=True)
    if purge:
        (home / ".lock").unlink(missing_ok=True)
    return stopped


# --- host loss, for tests, the failover benchmark and the demo ----------------------------
# Each acts on one host's recorded processes only. Stop the supervisor first when the host
# must stay lost (it would start them again: a host that reboots at once).

def crash_host(dc: LocalDatacenter, node: str) -> None:
    """Every process of the host SIGKILLed at once (agent, fencer, uplink, libvirtd, its
    guests, its switch daemons); its namespaces are left as a dead host's would be."""
    root = host_root(Path(dc.home), node)
    pids = [p.pid for p in host_procs(dc, node) if p.kind != "libvirtd" and p.running()]
    if root.joinpath("host.json").exists():  # a libvirt host
        lv = LibvirtHost.load(root)
        pids += [lv.pid(), lv.lockd_pid(), *lv.qemus().values()]
        try:
            pids.append(int(root.joinpath("run", "libvirtd.pid").read_text()))
        except (OSError, ValueError):
            pass
    net = HostNetwork.load(root)
    if net is not None:
        pids += net.daemon_pids()
    for pid in pids:
        if pid > 0:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def freeze_agent(dc: LocalDatacenter, node: str, frozen: bool) -> None:
    """SIGSTOP (or SIGCONT) the host's agent: its guests keep running, it renews nothing."""
    os.kill(dc.proc(node).pid, signal.SIGSTOP if frozen else signal.SIGCONT)


def isolate_host(dc: LocalDatacenter, node: str, cut: bool) -> None:
    """Cut (or mend) the host's link to etcd (its uplink stops, as a dead switch port) and its
    underlay and migration cables; everything on the host keeps running."""
    os.kill(dc.proc(f"uplink-{node}").pid, signal.SIGSTOP if cut else signal.SIGCONT)
    net = HostNetwork.load(host_root(Path(dc.home), node))
    if net is not None:
        net.set_cables(not cut)
