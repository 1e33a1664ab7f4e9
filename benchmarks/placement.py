"""Placement throughput and latency through the real gRPC API.

    python -m benchmarks.placement --hosts 10000 --vms 20000 --json FILE

Starts its own etcd (data on tmpfs), registers N sim hosts (the agents' own registration
records, one shared lease: 10,000 agent processes do not fit on a 2-core machine), starts the
scheduler as its own process, and places VMs of mixed sizes and QoS classes from concurrent
clients in separate processes. Prints one JSON object.

The main run batches (VmService.BatchCreateVms: each client thread sends --batch VMs per call,
one call at a time; each VM's latency is its call's). Its clients keep 32 VMs in flight (2
processes x 1 thread x 16): by Little's law, 2,000 placements/s at a p99 of 20 ms leaves room
for about 30 (their mean latency is then 15 ms). The saturated run (`saturated_*`) doubles the
threads, 64 in flight: more per second, each VM waiting about twice as long. The paced run
(`paced_*`) is open loop: calls of --batch VMs fall due at --paced-rate VMs/s in all, sent
whether or not the earlier ones are answered, and each VM's latency counts from when its call
was due; it says what p99 a client sees at that rate, and a scheduler that cannot keep up shows
it as a queue, not as a lower rate with the same latency. In the same invocation, and for
comparison: the other two APIs (`stream_*`: CreateVms from the same threads, --inflight
requests in flight per stream; `unary_*`: one CreateVm call per VM from --unary-threads threads
per process), a single client placing one VM at a time (`baseline_serial_*`), and the unary
clients calling an empty RPC (health Check: `noop_unary_per_s`), which is what gRPC itself
allows on this machine. Then the latency-bound runs (`latency_bound_runs`): one client, one
BatchCreateVms call at a time, of 4, 8, 16 and 32 VMs; `per_s_at_p99_le_20ms` is the best rate
among those whose p99 stayed within --slo-p99-ms. Last, scaling out: --compare-vms VMs through
one scheduler replica, then as many through --scale-replicas replicas (`replicas_vs_one`), both
at the saturated run's load; each replica looks first in its own lane of the node ring
(vdcos/scheduler/replicas.py).

Everything runs as `vdcos up` runs it: etcd and the API in TLS, every process with a
certificate from a CA of the benchmark's own. The main run is also placed, from the same clients
and specs, on a second datacenter of the same hosts in plaintext (--insecure): in MAIN_PARTS
parts, each sent to both datacenters in alternating order, so that the noisy machine's phases
fall on both alike; `secure_vs_insecure` is the ratio of their placements per second.

Every replica serves its Prometheus metrics, as `vdcos up` runs it. `metrics_overhead` is the
ratio of placements/s between two fresh replicas on the same etcd, one with its metrics on and
scraped every second, one with them off, alternating parts of --metrics-vms VMs (ABBA), and
`metrics_cpu_ratio` the ratio of their CPU per placement over the whole comparison.

The schedulers hold the host's idle CPUs to a wake-up latency of --cpu-wakeup-latency-us (0:
they poll instead of halting; vdcos/host/wakeup.py), as an operator tunes the hosts of a
latency-sensitive control plane; `cpu_wakeup_latency_us` in the JSON says what was held (null:
nothing). On this 2-vCPU machine, 4 alternating pairs of main runs placed 2,445/s (p99 23.5 ms)
with 0 held against 2,083/s (p99 26.0 ms) with nothing held; -1 measures the latter.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import emit, issue, start_etcd, stop_etcd
from vdcos.security.pki import Identity, TlsFiles
from vdcos.security.tls import etcd_flags
from vdcos.state.etcd_server import EtcdServer

APIS = ("batch", "stream", "unary")
PACED_OUTSTANDING = 32  # calls one paced client process lets wait at once
HOST_FLAVORS = [(32, 131072, 2000, 25000), (64, 262144, 4000, 25000), (96, 393216, 8000, 50000)]
VM_FLAVORS = [(1, 2048, 20, 100), (2, 4096, 40, 200), (4, 8192, 80, 500), (8, 32768, 160, 1000),
              (16, 65536, 320, 2000)]
CLASSES = [("gold", 0.3), ("", 0.5), ("bronze", 0.2)]  # guaranteed, burstable (default), best-effort


def vm_specs(n: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        v, m, d, net = rng.choice(VM_FLAVORS)
        policy = rng.choices([c for c, _ in CLASSES], [w for _, w in CLASSES])[0]
        spec: dict[str, Any] = {"name": f"{prefix}{i}", "vcpus": v, "memory_mib": m, "disk_gib": d,
                                "network_mbps": net, "qos_policy": policy}
        if rng.random() < 0.1:
            spec["group"] = f"{prefix}ha-{rng.randrange(max(n // 50, 1))}"
        out.append(spec)
    return out


def _pb_spec(s: dict[str, Any]) -> Any:
    from vdcos.v1 import types_pb2 as pb
    return pb.VmSpec(
        name=s["name"], qos_policy=s["qos_policy"],
        resources=pb.Resources(vcpus=s["vcpus"], memory_mib=s["memory_mib"], disk_gib=s["disk_gib"],
                               network_mbps=s["network_mbps"]),
        placement_group=s.get("group", ""), group_policy=pb.AFFINITY_POLICY_ANTI_AFFINITY if "group" in s else 0,
        project=s.get("project", ""))


def _client_proc(addr: str, tls: TlsFiles | None, api: str, specs: list[dict[str, Any]], threads: int, per_call: int,
                 start_at: float, out: mp.Queue, rate: float = 0.0) -> None:  # type: ignore[type-arg]
    """api: "batch" (BatchCreateVms of `per_call` VMs), "stream" (CreateVms, `per_call` in
    flight per thread), "unary" (one CreateVm per VM), "noop" (an empty health Check per
    spec, for the floor) or "paced" (BatchCreateVms of `per_call` VMs, `rate` VMs/s from this
    process; one thread)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from google.rpc import code_pb2

    from vdcos.v1 import vm_service_pb2 as vm_pb
    from vdcos.v1 import vm_service_pb2_grpc as vm_grpc

    from vdcos.security.tls import secure_channel

    channel = grpc.insecure_channel(addr) if tls is None else secure_channel(addr, tls, [])
    stub = vm_grpc.VmServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    lat: list[float] = []
    codes: dict[str, int] = {}
    lock = threading.Lock()
    it = iter(specs)

    def count(code: str, dt: float) -> None:
        with lock:
            lat.append(dt)
            codes[code] = codes.get(code, 0) + 1

    def unary() -> None:
        while True:
            with lock:
                s = next(it, None)
            if s is None:
                return
            t0 = time.perf_counter()
            try:
                if api == "noop":
                    health.Check(health_pb2.HealthCheckRequest(), timeout=60)
                else:
                    stub.CreateVm(vm_pb.CreateVmRequest(spec=_pb_spec(s)), timeout=60)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            count(code, time.perf_counter() - t0)

    def batch() -> None:
        while True:
            with lock:
                chunk = [s for s in (next(it, None) for _ in range(per_call)) if s is not None]
            if not chunk:
                return
            t0 = time.perf_counter()
            try:
                got = stub.BatchCreateVms(vm_pb.BatchCreateVmsRequest(
                    requests=[vm_pb.CreateVmRequest(spec=_pb_spec(s)) for s in chunk]), timeout=60)
                answers = ["OK" if not a.HasField("error") else code_pb2.Code.Name(a.error.code) for a in got.results]
            except grpc.RpcError as e:
                answers = [e.code().name] * len(chunk)
            dt = time.perf_counter() - t0
            for code in answers:
                count(code, dt)

    def stream() -> None:
        room = threading.Semaphore(per_call)
        sent: dict[str, float] = {}

        def requests() -> Any:
            while True:
                room.acquire()
                with lock:
                    s = next(it, None)
                if s is None:
                    return
                sent[s["name"]] = time.perf_counter()
                yield vm_pb.CreateVmsRequest(spec=_pb_spec(s))

        for a in stub.CreateVms(requests(), timeout=600):
            count("OK" if not a.HasField("error") else code_pb2.Code.Name(a.error.code),
                  time.perf_counter() - sent.pop(a.name))
            room.release()

    def paced() -> None:
        """Open loop: a call is due every per_call/rate s whether or not the earlier ones are
        answered, and each VM's latency counts from when its call was due, so a server that falls
        behind is charged for the queue it causes (no coordinated omission). At most
        PACED_OUTSTANDING calls wait at once: a server far behind slows this process down."""
        room = threading.Semaphore(PACED_OUTSTANDING)
        answered = threading.Semaphore(0)
        interval = per_call / rate

        def done(f: Any, due: float, n: int) -> None:
            dt = time.perf_counter() - due
            try:
                answers = ["OK" if not a.HasField("error") else code_pb2.Code.Name(a.error.code)
                           for a in f.result().results]
            except grpc.RpcError as e:
                answers = [e.code().name] * n
            for code in answers:
                count(code, dt)
            room.release()
            answered.release()

        due = time.perf_counter()
        for req in prebuilt:
            time.sleep(max(0.0, due - time.perf_counter()))
            room.acquire()
            call = stub.BatchCreateVms.future(req, timeout=60)
            call.add_done_callback(lambda f, t=due, n=len(req.requests): done(f, t, n))
            due += interval
        for _ in prebuilt:
            answered.acquire()

    # The paced calls are built before the start: a load generator's own work is not the
    # scheduler's latency, and theirs counts from when they fall due.
    prebuilt = [vm_pb.BatchCreateVmsRequest(requests=[vm_pb.CreateVmRequest(spec=_pb_spec(s))
                                                      for s in specs[i:i + per_call]])
                for i in range(0, len(specs), per_call)] if api == "paced" else []
    time.sleep(max(0.0, start_at - time.time()))
    ts = [threading.Thread(target={"stream": stream, "batch": batch, "paced": paced}.get(api, unary))
          for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    channel.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.put((lat, codes, time.time(), ru.ru_utime + ru.ru_stime))


def run_clients(addr: str | list[str], api: str, specs: list[dict[str, Any]], procs: int, threads: int,
                per_call: int = 1, rate: float = 0.0, tls: TlsFiles | None = None) -> dict[str, Any]:
    """Client process i talks to scheduler replica i mod len(addr). `rate`: VMs/s in all, paced.
    `tls`: the CA (and client certificate) of a scheduler serving TLS; None: plaintext."""
    addrs = [addr] if isinstance(addr, str) else addr
    ctx = mp.get_context("spawn")  # no fork after gRPC is initialised
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    start_at = time.time() + 2.0
    # paced: the processes' calls interleave, process i starting i/procs of its interval late
    lag = per_call / rate if rate else 0.0
    workers = [ctx.Process(target=_client_proc, args=(addrs[i % len(addrs)], tls, api, specs[i::procs], threads,
                                                      per_call, start_at + i * lag, q, rate / procs))
               for i in range(procs)]
    for w in workers:
        w.start()
    results = [q.get() for _ in workers]
    for w in workers:
        w.join()
    lat = np.array([x for r in results for x in r[0]])
    codes: dict[str, int] = {}
    for r in results:
        for k, v in r[1].items():
            codes[k] = codes.get(k, 0) + v
    wall = max(r[2] for r in results) - start_at
    return {"lat": lat, "codes": codes, "wall": wall, "client_cpu_s": sum(r[3] for r in results)}


def cpu_seconds(pid: int) -> float:
    """User+system CPU a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def register_hosts(store: Any, n: int, seed: int) -> float:
    from vdcos.model import NodeSpec, Resources, pairs
    from vdcos.nodeagent.agent import node_records

    rng = random.Random(seed)
    t0 = time.perf_counter()
    lease = store.grant_lease(3600)
    batch: list[Any] = []
    for i in range(n):
        spec = NodeSpec(f"sim-{i:05d}", Resources(*rng.choice(HOST_FLAVORS)),
                        pairs({"rack": f"r{i // 40}", "zone": f"z{i % 3}"}))
        batch += node_records(spec, lease)
        if len(batch) >= 1000:
            store.txn([], batch)
            batch = []
    if batch:
        store.txn([], batch)
    return time.perf_counter() - t0


def create_policies(store: Any) -> None:
    """The policies CLASSES names ("" is the built-in default)."""
    from vdcos.model import QosClass, QosPolicy, dumps
    from vdcos.state import keys

    store.put(keys.policy("gold"), dumps(QosPolicy("gold", QosClass.GUARANTEED)))
    store.put(keys.policy("bronze"), dumps(QosPolicy("bronze", QosClass.BEST_EFFORT)))


def start_scheduler(etcd: EtcdServer, base: Path, *extra: str, metrics: bool = True
                    ) -> tuple[subprocess.Popen[bytes], str, str]:
    """The scheduler as its own process on `etcd`, in TLS with a certificate of its own if etcd
    is; returns it and its address once it serves (its log in base/scheduler.log): its
    mutual-TLS address then, where the benchmark's clients call with their certificates. With
    `metrics`, it serves them as `vdcos up` runs it (the third value: where; else "")."""
    log = open(base / "scheduler.log", "wb")
    tls = issue(etcd, Identity("scheduler", base.name))
    port_file = base / ("sched.port" if tls is None else "sched.mtls-port")
    flags = etcd_flags(tls) + ([] if tls is None else ["--mtls-port-file", str(port_file)])
    if metrics:
        flags += ["--metrics-listen", "127.0.0.1:0", "--metrics-port-file", str(base / "metrics.port")]
    sched = subprocess.Popen([sys.executable, "-m", "vdcos.apiserver", "--etcd", etcd.endpoint,
                              "--port-file", str(base / "sched.port"), *flags, *extra], stdout=log, stderr=log)
    while not port_file.exists():
        if sched.poll() is not None:
            raise RuntimeError((base / "scheduler.log").read_text()[-2000:])
        time.sleep(0.05)
    served = f"127.0.0.1:{(base / 'metrics.port').read_text().strip()}" if metrics else ""
    return sched, f"127.0.0.1:{port_file.read_text().strip()}", served


class Deployment:
    """An etcd of its own with `hosts` sim hosts and the scheduler replicas on it: in TLS with
    client certificates from a CA of its own, as `vdcos up` runs them, or in plaintext."""

    def __init__(self, base: Path, etcd: EtcdServer) -> None:
        from vdcos.state.etcd import EtcdStore

        self.base, self.etcd = base, etcd
        self.tls = issue(etcd, Identity("user", "admin"))  # the clients': the datacenter's admin
        self.store = EtcdStore(etcd.endpoint, timeout=60, tls=self.tls)
        self.scheds: list[subprocess.Popen[bytes]] = []
        self.addrs: list[str] = []
        self.metrics: list[str] = []
        self.started = 0  # replicas started in all (each has a folder of its own)
        self.register_s = self.scheduler_start_s = 0.0

    @classmethod
    def start(cls, hosts: int, seed: int, replicas: int, sched_args: tuple[str, ...], secure: bool) -> Deployment:
        base, etcd = start_etcd(secure)
        d = cls(base, etcd)
        try:
            create_policies(d.store)
            d.register_s = register_hosts(d.store, hosts, seed)
            t0 = time.perf_counter()
            for _ in range(replicas):
                d.add_replica(sched_args)
            d.scheduler_start_s = time.perf_counter() - t0
        except BaseException:
            d.stop()
            raise
        return d

    def add_replica(self, sched_args: tuple[str, ...], metrics: bool = True) -> None:
        folder = self.base / f"scheduler-{self.started}"
        self.started += 1
        folder.mkdir()
        sched, addr, served = start_scheduler(self.etcd, folder, *sched_args, metrics=metrics)
        self.scheds.append(sched)
        self.addrs.append(addr)
        self.metrics.append(served)

    def remove_replica(self, addr: str) -> None:
        from vdcos.process import stop_pid

        i = self.addrs.index(addr)
        stop_pid(self.scheds[i].pid, self.scheds[i])
        for lst in (self.scheds, self.addrs, self.metrics):
            lst.pop(i)

    def pids(self) -> dict[str, int]:
        return {"etcd": self.etcd.pid, **{f"scheduler{r or ''}": s.pid for r, s in enumerate(self.scheds)}}

    def stop(self) -> None:
        from vdcos.process import stop_pid

        self.store.close()
        for sched in self.scheds:
            stop_pid(sched.pid, sched)
        stop_etcd(self.base, self.etcd)


def _quota_compare(dep: Deployment, args: argparse.Namespace, measured: Any) -> dict[str, Any]:
    """VMs of a project with a quota (every create charges it in its placement's transaction)
    against as many VMs of no project, in alternating parts (ABBA) on the same deployment."""
    from vdcos.model.project import UNLIMITED
    from vdcos.projects import records as projects

    projects.create(dep.store, "bench")
    limit = args.project_vms + 10  # never reached: what is measured is the charge, not refusals
    projects.set_limits(dep.store, "bench", {"vms": limit, "vcpus": 64 * limit, "memory_mib": UNLIMITED})
    n = args.project_vms
    charged = [dict(s, project="bench") for s in vm_specs(n, args.seed + 60, "proj-")]
    plain = vm_specs(n, args.seed + 61, "noproj-")
    runs: dict[str, list[tuple[dict[str, Any], dict[str, float]]]] = {"project": [], "none": []}
    for i in range(MAIN_PARTS):
        part = slice(i * n // MAIN_PARTS, (i + 1) * n // MAIN_PARTS)
        for name, specs in (("project", charged), ("none", plain))[::1 if i % 2 else -1]:
            runs[name].append(measured(dep, args.api, specs[part]))
    proj, none = summary(merged(runs["project"])[0]), summary(merged(runs["none"])[0])
    used = projects.quota(dep.store, "bench").used
    return {"project_vms": n, "project_placed": proj["placed"], "project_quota_used_vms": used.vms,
            "project_per_s": proj["per_s"], "project_p99_ms": proj["p99_ms"], "no_project_per_s": none["per_s"],
            "quota_vs_no_project": round(proj["per_s"] / none["per_s"], 3) if none["per_s"] else None}


def _metrics_compare(dep: Deployment, args: argparse.Namespace, sched_args: tuple[str, ...]) -> dict[str, Any]:
    """Placements/s of a replica whose metrics are on (served, and scraped every second, three
    times as often as `vdcos up --prometheus` does) against one whose metrics are off: two fresh
    replicas on the same etcd, the same clients, parts in alternating order (ABBA)."""
    from vdcos.metrics.http import scrape

    dep.add_replica(sched_args, metrics=True)
    on, served = dep.addrs[-1], dep.metrics[-1]
    dep.add_replica(sched_args, metrics=False)
    off = dep.addrs[-1]
    pids = {"on": dep.scheds[-2].pid, "off": dep.scheds[-1].pid}
    time.sleep(2.5)  # every replica takes its lane at its next membership refresh
    # Each replica's CPU over the whole comparison (its own parts, the other's, every scrape):
    # less noisy on this shared machine than throughput, whose parts last seconds.
    cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
    stop = threading.Event()
    scrapes = {"ok": 0, "failed": 0, "series": 0}

    def scraper() -> None:
        while not stop.wait(1.0):
            try:
                text = scrape(served, dep.tls)
                scrapes["ok"] += 1
                scrapes["series"] = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
            except Exception:
                scrapes["failed"] += 1
    thread = threading.Thread(target=scraper, daemon=True)
    thread.start()
    n = args.metrics_vms
    specs = {"on": vm_specs(n, args.seed + 70, "mon-"), "off": vm_specs(n, args.seed + 71, "moff-")}
    runs: dict[str, list[tuple[dict[str, Any], dict[str, float]]]] = {"on": [], "off": []}
    try:
        for i in range(MAIN_PARTS):
            part = slice(i * n // MAIN_PARTS, (i + 1) * n // MAIN_PARTS)
            for name, addr in (("on", on), ("off", off))[::1 if i % 2 else -1]:
                runs[name].append((run_clients([addr], args.api, specs[name][part], args.procs, args.threads,
                                               {"batch": args.batch, "stream": args.inflight}.get(args.api, 1),
                                               tls=dep.tls), {}))
        cpu = {k: cpu_seconds(pid) - cpu0[k] for k, pid in pids.items()}
    finally:
        stop.set()
        thread.join(5)
        dep.remove_replica(off)
        dep.remove_replica(on)
    with_m, without = summary(merged(runs["on"])[0]), summary(merged(runs["off"])[0])
    per = {k: round(1000 * cpu[k] / placed, 3) if (placed := {"on": with_m, "off": without}[k]["placed"]) else None
           for k in cpu}
    return {"metrics_vms": n, "metrics_on_per_s": with_m["per_s"], "metrics_on_p99_ms": with_m["p99_ms"],
            "metrics_off_per_s": without["per_s"], "metrics_off_p99_ms": without["p99_ms"],
            "metrics_on_placed": with_m["placed"], "metrics_off_placed": without["placed"],
            "metrics_scrapes": scrapes["ok"], "metrics_scrape_failures": scrapes["failed"],
            "metrics_series": scrapes["series"],
            "metrics_on_cpu_ms_per_placement": per["on"], "metrics_off_cpu_ms_per_placement": per["off"],
            "metrics_cpu_ratio": round(per["on"] / per["off"], 3) if per["on"] and per["off"] else None,
            "metrics_overhead": round(with_m["per_s"] / without["per_s"], 3) if without["per_s"] else None}


def merged(parts: list[tuple[dict[str, Any], dict[str, float]]]) -> tuple[dict[str, Any], dict[str, float]]:
    """Runs made one after another, as one: their latencies, codes, walls and CPU added up."""
    codes: dict[str, int] = {}
    cpu: dict[str, float] = {}
    for run, c in parts:
        for k, v in run["codes"].items():
            codes[k] = codes.get(k, 0) + v
        for k, x in c.items():
            cpu[k] = cpu.get(k, 0.0) + x
    return ({"lat": np.concatenate([run["lat"] for run, _ in parts]), "codes": codes,
             "wall": sum(run["wall"] for run, _ in parts),
             "client_cpu_s": sum(run["client_cpu_s"] for run, _ in parts)}, cpu)


def core_decision_us(store: Any, samples: int, seed: int) -> float:
    from vdcos.model import Resources, VmSpec
    from vdcos.scheduler.cache import ClusterCache
    from vdcos.scheduler.core import PlacementRequest, schedule

    cache = ClusterCache(store).start()
    snap = cache.snapshot()
    reqs = [PlacementRequest(VmSpec(s["name"], Resources(s["vcpus"], s["memory_mib"], s["disk_gib"],
                                                         s["network_mbps"]), qos_policy=s["qos_policy"]))
            for s in vm_specs(samples, seed + 1, "probe-")]
    times = []
    for r in reqs:
        t0 = time.perf_counter()
        schedule(snap, r)
        times.append(time.perf_counter() - t0)
    cache.stop()
    return float(np.median(times) * 1e6)


# The main run's parts (see main): enough alternations that a phase of the machine falls on both
# datacenters; each part costs a client start (2 s).
MAIN_PARTS = 4


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q) * 1000) if a.size else 0.0


def summary(run: dict[str, Any]) -> dict[str, Any]:
    lat, codes = run["lat"], run["codes"]
    placed = codes.get("OK", 0)
    return {"placed": placed, "refused": {k: v for k, v in codes.items() if k != "OK"},
            "per_s": round(placed / run["wall"], 1) if run["wall"] > 0 else 0.0, "wall_s": round(run["wall"], 2),
            "p50_ms": round(pct(lat, 50), 2), "p90_ms": round(pct(lat, 90), 2), "p99_ms": round(pct(lat, 99), 2),
            "max_ms": round(pct(lat, 100), 2)}


def main(argv: list[str] | None = None) -> int:
    from vdcos.host.wakeup import DEVICE, MAX_US
    from vdcos.scheduler.worker import LINGER_MS, MAX_BATCH

    ap = argparse.ArgumentParser(prog="benchmarks.placement")
    ap.add_argument("--hosts", type=int, default=10000)
    ap.add_argument("--vms", type=int, default=20000)
    ap.add_argument("--api", choices=APIS, default="batch", help="of the main run")
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--threads", type=int, default=1,
                    help="client threads per process (batch and stream); the saturated and scale-out runs use twice as many")
    ap.add_argument("--batch", type=int, default=16, help="VMs per BatchCreateVms call")
    ap.add_argument("--inflight", type=int, default=8, help="requests in flight per CreateVms stream")
    ap.add_argument("--unary-threads", type=int, default=24, help="client threads per process, unary runs")
    ap.add_argument("--compare-vms", type=int, default=4000,
                    help="VMs placed with each of the other two APIs, for comparison (0 = skip)")
    ap.add_argument("--noop-calls", type=int, default=4000, help="empty RPCs of the gRPC floor run (0 = skip)")
    ap.add_argument("--baseline-vms", type=int, default=500, help="serial single-client VMs (0 = skip)")
    ap.add_argument("--slo-vms", type=int, default=2000,
                    help="VMs of each latency-bound run: one client, one call at a time, batches of "
                         "4, 8, 16 and 32 (0 = skip)")
    ap.add_argument("--slo-p99-ms", type=float, default=20.0, help="the p99 the latency-bound runs are held to")
    ap.add_argument("--paced-rate", type=float, default=2000.0,
                    help="VMs/s the paced run offers, open loop, in calls of --batch VMs")
    ap.add_argument("--paced-vms", type=int, default=8000, help="VMs of the paced run (0 = skip)")
    ap.add_argument("--max-batch", type=int, default=MAX_BATCH,
                    help="the scheduler's (see vdcos/scheduler/worker.py)")
    ap.add_argument("--linger-ms", type=float, default=LINGER_MS,
                    help="the scheduler's (see vdcos/scheduler/worker.py)")
    ap.add_argument("--replicas", type=int, default=1, help="scheduler processes on the one etcd")
    ap.add_argument("--scale-replicas", type=int, default=2,
                    help="after the other runs, --compare-vms VMs through one replica, then as many through "
                         "this many (the extra ones started then): replicas_vs_one (0 = skip)")
    ap.add_argument("--cpu-wakeup-latency-us", type=int, default=0,
                    help="the schedulers hold the host's idle CPUs to this wake-up latency while they serve "
                         "(vdcos/host/wakeup.py; -1: not held). Held only where /dev/cpu_dma_latency is "
                         "writable; the JSON says what was held")
    ap.add_argument("--insecure-compare", action=argparse.BooleanOptionalAction, default=True,
                    help="also place the main run's VMs on the same datacenter in plaintext, without "
                         "certificates, part by part in alternating order: secure_vs_insecure")
    ap.add_argument("--project-vms", type=int, default=4000,
                    help="VMs of a project under a quota, against as many of none, alternating (0 = skip)")
    ap.add_argument("--metrics-vms", type=int, default=4000,
                    help="VMs through a replica with metrics on (scraped every second), as many through one "
                         "with them off, alternating: metrics_overhead (0 = skip)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.paced_vms and args.paced_rate <= 0:
        ap.error("--paced-rate must be above 0 (VMs/s)")
    if args.linger_ms < 0:
        ap.error("--linger-ms must be 0 or more")
    if args.max_batch < 1:
        ap.error("--max-batch must be 1 or more")
    if not -1 <= args.cpu_wakeup_latency_us <= MAX_US:
        ap.error(f"--cpu-wakeup-latency-us must be -1 (not held) to {MAX_US}")
    wakeup_us = args.cpu_wakeup_latency_us if args.cpu_wakeup_latency_us >= 0 else None
    if wakeup_us is not None and not os.access(DEVICE, os.W_OK):
        print(f"{DEVICE} is not writable: the CPU wake-up latency is not held", file=sys.stderr)
        wakeup_us = None

    from vdcos.model import Allocation, decode
    from vdcos.scheduler.audit import over_capacity
    from vdcos.state import keys

    sched_args = ("--io-threads", "8", "--max-batch", str(args.max_batch), "--linger-ms", str(args.linger_ms),
                  *(("--cpu-wakeup-latency-us", str(wakeup_us)) if wakeup_us is not None else ()))
    dep = plain = None
    try:
        # The datacenter as `vdcos up` runs it (TLS, client certificates), and, for the main run
        # only, the same in plaintext: secure_vs_insecure.
        dep = Deployment.start(args.hosts, args.seed, args.replicas, sched_args, secure=True)
        plain = Deployment.start(args.hosts, args.seed, args.replicas, sched_args, secure=False) \
            if args.insecure_compare else None
        store = dep.store
        addrs = dep.addrs

        def threads_of(api: str) -> int:
            return args.unary_threads if api == "unary" else args.threads

        def per_call(api: str) -> int:
            return {"batch": args.batch, "stream": args.inflight}.get(api, 1)

        def measured(d: Deployment, api: str, specs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, float]]:
            """A run, and the CPU seconds each party spent on it."""
            pids = d.pids()
            cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
            run = run_clients(d.addrs, api, specs, args.procs, threads_of(api), per_call(api), tls=d.tls)
            cpu = {k: cpu_seconds(pid) - cpu0[k] for k, pid in pids.items()}
            cpu["clients"] = run["client_cpu_s"]
            return run, cpu

        def per_placement(run: dict[str, Any], cpu: dict[str, float]) -> dict[str, float]:
            n = max(run["codes"].get("OK", 0), 1)
            return {k: round(v * 1000 / n, 3) for k, v in cpu.items()}

        baseline = run_clients(addrs, "unary", vm_specs(args.baseline_vms, args.seed + 7, "base-"), 1, 1, tls=dep.tls) \
            if args.baseline_vms else None
        # The main run in MAIN_PARTS parts; with the plaintext datacenter, each part goes to
        # both, in alternating order (ABBA), so that the machine's phases fall on both alike.
        specs = vm_specs(args.vms, args.seed, "vm-")
        parts = [specs[i * len(specs) // MAIN_PARTS:(i + 1) * len(specs) // MAIN_PARTS] for i in range(MAIN_PARTS)]
        secure_parts, plain_parts = [], []
        for i, part in enumerate(parts):
            for d, into in ((dep, secure_parts), (plain, plain_parts))[::1 if i % 2 else -1]:
                if d is not None:
                    into.append(measured(d, args.api, part))
        main_run, main_cpu = merged(secure_parts)
        cpu = per_placement(main_run, main_cpu)
        plain_sum = summary(merged(plain_parts)[0]) if plain_parts else None
        if plain is not None:
            plain_over = len(over_capacity(plain.store))
            plain.stop()
            plain = None
        tls = dep.tls
        quota_part = _quota_compare(dep, args, measured) if args.project_vms else {}
        metrics_part = _metrics_compare(dep, args, sched_args) if args.metrics_vms else {}
        paced = summary(run_clients(addrs, "paced", vm_specs(args.paced_vms, args.seed + 50, "paced-"), args.procs,
                                    1, args.batch, args.paced_rate, tls=tls)) if args.paced_vms else None
        others = [a for a in APIS if a != args.api] if args.compare_vms else []
        compared = {}
        for i, a in enumerate(others):
            run, a_cpu = measured(dep, a, vm_specs(args.compare_vms, args.seed + 3 + i, f"{a}-"))
            compared[a] = (run, per_placement(run, a_cpu))
        # What a client can count on while keeping its p99 under the target: the best rate of a
        # lone caller whose batches answer within it (fewer in flight, shorter queues).
        slo = []
        for i, b in enumerate((4, 8, 16, 32) if args.slo_vms else ()):
            got = summary(run_clients(addrs, "batch", vm_specs(args.slo_vms, args.seed + 20 + i, f"slo{b}-"), 1, 1, b,
                                      tls=tls))
            slo.append({"batch": b, **{k: got[k] for k in ("per_s", "p50_ms", "p99_ms")}})
        saturated = summary(run_clients(addrs, "batch", vm_specs(args.compare_vms, args.seed + 40, "sat-"),
                                        args.procs, 2 * args.threads, args.batch, tls=tls)) if args.compare_vms else None
        noop = run_clients(addrs, "noop", [{"name": str(i)} for i in range(args.noop_calls)], args.procs,
                           args.unary_threads, tls=tls) if args.noop_calls else None
        scaled: dict[str, Any] = {}
        if args.scale_replicas > len(addrs) and args.compare_vms:
            one = summary(run_clients(addrs[:1], "batch", vm_specs(args.compare_vms, args.seed + 30, "one-"),
                                      args.procs, 2 * args.threads, args.batch, tls=tls))
            for r in range(len(addrs), args.scale_replicas):
                dep.add_replica(sched_args)
            # Every replica takes its lane at its next membership refresh (every 2 s).
            time.sleep(2.5)
            many = summary(run_clients(addrs, "batch", vm_specs(args.compare_vms, args.seed + 31, "many-"),
                                       args.procs, 2 * args.threads, args.batch, tls=tls))
            scaled = {"scale_replicas": args.scale_replicas, "one_replica_per_s": one["per_s"],
                      "one_replica_p99_ms": one["p99_ms"], "replicas_per_s": many["per_s"],
                      "replicas_p99_ms": many["p99_ms"],
                      "replicas_vs_one": round(many["per_s"] / one["per_s"], 2) if one["per_s"] else None}
        over = len(over_capacity(store))
        entries = sum(len(decode(Allocation, json.loads(kv.value)).entries) for kv in store.get_prefix(keys.ALLOC)[0])
        decision_us = core_decision_us(store, 300, args.seed)
        main_sum = summary(main_run)
        result: dict[str, Any] = {
            "benchmark": "placement",
            "hosts": args.hosts,
            "vms": args.vms,
            "api": args.api,
            "scheduler_replicas": args.replicas,
            "linger_ms": args.linger_ms,
            "cpu_wakeup_latency_us": wakeup_us,
            "placed": main_sum["placed"],
            "refused": main_sum["refused"],
            "clients": args.procs * threads_of(args.api),
            "in_flight": args.procs * threads_of(args.api) * per_call(args.api),
            "placements_per_s": main_sum["per_s"],
            **{k: main_sum[k] for k in ("wall_s", "p50_ms", "p90_ms", "p99_ms", "max_ms")},
            "decision_us_p50": round(decision_us, 1),
            "over_capacity_nodes": over,
            "allocation_entries": entries,
            # where the machine's CPU went, per placement: the budget for 2000/s on 2 cores is 1 ms
            "cpu_ms_per_placement": cpu,
            "register_hosts_s": round(dep.register_s, 2),
            "scheduler_start_s": round(dep.scheduler_start_s, 2),
            "transport": "TLS, client certificates from the datacenter CA (etcd and API)",
        }
        if plain_sum is not None:
            result.update({"insecure_placements_per_s": plain_sum["per_s"], "insecure_p99_ms": plain_sum["p99_ms"],
                           "insecure_placed": plain_sum["placed"], "insecure_over_capacity_nodes": plain_over,
                           "secure_vs_insecure": round(main_sum["per_s"] / plain_sum["per_s"], 3)
                           if plain_sum["per_s"] else None})
        if compared:
            result["compare_vms"] = args.compare_vms
        sums = {args.api: main_sum, **{a: summary(run) for a, (run, _) in compared.items()}}
        for a, (_, a_cpu) in compared.items():
            c = sums[a]
            result.update({f"{a}_per_s": c["per_s"], f"{a}_p50_ms": c["p50_ms"], f"{a}_p99_ms": c["p99_ms"],
                           f"{a}_cpu_ms_per_placement": a_cpu})
            if c["per_s"]:
                result[f"{args.api}_vs_{a}"] = round(main_sum["per_s"] / c["per_s"], 2)
        if saturated is not None:
            result.update({"saturated_in_flight": args.procs * 2 * args.threads * args.batch,
                           "saturated_per_s": saturated["per_s"], "saturated_p50_ms": saturated["p50_ms"],
                           "saturated_p99_ms": saturated["p99_ms"]})
        if paced is not None:
            result.update({"paced_offered_per_s": args.paced_rate, "paced_per_s": paced["per_s"],
                           "paced_refused": paced["refused"],
                           **{f"paced_{k}": paced[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")}})
        if noop is not None:
            n = summary(noop)
            result["noop_unary_per_s"] = n["per_s"]
            unary = sums.get("unary")
            if unary and unary["per_s"] and n["per_s"]:
                result["unary_vs_noop"] = round(unary["per_s"] / n["per_s"], 2)
        if baseline is not None:
            b = summary(baseline)
            result["baseline_serial_per_s"] = b["per_s"]
            result["baseline_serial_p50_ms"] = b["p50_ms"]
            result["speedup_vs_serial"] = round(main_sum["per_s"] / b["per_s"], 2) if b["per_s"] else None
        result.update(scaled)
        result.update(quota_part)
        result.update(metrics_part)
        if slo:
            within = [x["per_s"] for x in slo if x["p99_ms"] <= args.slo_p99_ms]
            result["latency_bound_runs"] = slo
            result[f"per_s_at_p99_le_{args.slo_p99_ms:g}ms"] = max(within, default=0.0)
        result["targets_met"] = (result["placements_per_s"] >= 2000 and result["p99_ms"] <= 20
                                 and over == 0)
        emit(result, args.json)
        return 0
    finally:
        for d in (plain, dep):
            if d is not None:
                d.stop()


if __name__ == "__main__":
    sys.exit(main())
