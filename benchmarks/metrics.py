"""What a node agent's per-VM metrics cost, on a real libvirt host with --vms guests.

    python -m benchmarks.metrics --vms 100 --rounds 12 --json FILE

Starts a libvirtd of its own (vdcos.host.libvirtd, no network namespace) and --vms guests of the
project's image, each with a disk, started paused (a paused QEMU answers libvirt's statistics queries like
a running one, and leaves this 2-core machine to the measurement instead of booting 100 kernels
under TCG). The rounds are what the agent does: every status period (5 s) it reads each guest's
CPU time and memory (LibvirtDriver.all_stats, with the cgroup's throttled time), once a minute
also its disks' and NICs' counters, and keeps the sample its metrics serve (metrics/agent.py);
Prometheus scrapes every 15 s (prometheus-client's generate_latest formats it). Its cost is the CPU time of
every process the round makes work: this one (the agent's part), libvirtd, and each QEMU whose
monitor answers. `core_percent` is that per minute, in percent of one core; the target is under
2. In the same invocation, alternating with it, the baseline: what the agent read before it had
metrics (its domains' list, then one `stats` call per domain, CPU and memory only, every status
period): `core_percent_before_metrics`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from benchmarks.common import emit

STATUS_PERIOD_S = 5.0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.metrics")
    ap.add_argument("--vms", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=12, help="measured rounds of each kind, alternating")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.vms < 1 or args.rounds < 1:
        ap.error("--vms and --rounds must be 1 or more")

    import libvirt
    from prometheus_client import generate_latest

    from vdcos.host.libvirtd import LibvirtHost
    from vdcos.images import ensure
    from vdcos.metrics.agent import DEVICE_PERIOD_S, AgentMetrics, HostSample, VmSample
    from vdcos.metrics.prometheus import SCRAPE_INTERVAL_S
    from vdcos.model import Disk, QosClass, QosSettings, Resources, VmSpec
    from vdcos.nodeagent.libvirt.driver import LibvirtDriver

    root = Path(tempfile.mkdtemp(prefix="vdcos-metrics-bench-", dir="/dev/shm"))
    # (no migration leaves it, but libvirt refuses 127.0.0.1 as a migration address)
    host = LibvirtHost.create(root, "bench-1", f"{os.getpid() % 256:02x}", "127.0.0.2")
    capacity = Resources(4 * args.vms, 64 * args.vms + 4096, 100, 1000)
    image = ensure()
    started = failed_starts = 0
    try:
        host.start()
        driver = LibvirtDriver(host.uri, capacity, image, root)
        conn = libvirt.open(host.uri)
        qos = QosSettings(QosClass.BURSTABLE, 1024, cpu_quota_us=50_000, cpu_period_us=100_000)
        t0 = time.perf_counter()
        for i in range(args.vms):
            name = f"m-{i:03d}"
            disk = root / f"{name}.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
            driver.define(VmSpec(name, Resources(1, 64)), qos, (), (Disk(name, str(disk), "vda", 1),))
            try:
                conn.lookupByName(name).createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
                started += 1
            except libvirt.libvirtError as e:
                failed_starts += 1
                print(f"{name} did not start: {e}", file=sys.stderr)
        start_s = time.perf_counter() - t0
        conn.close()
        metrics = AgentMetrics("bench-1")
        me = os.getpid()

        def pids() -> list[int]:
            return [me, host.pid(), *host.qemus().values()]

        def sample(devices: bool) -> Callable[[], int]:
            def read() -> int:
                stats = driver.all_stats(devices=devices)
                metrics.sample = HostSample(capacity.vcpus, capacity.memory_mib, capacity.disk_gib, len(stats),
                                            sum(s.memory_used_mib for s in stats.values()), {
                    vm: VmSample("", s.cpu_time_ns, s.memory_used_mib, {d[0]: d[1:] for d in s.disks},
                                 {n[0]: n[1:] for n in s.nics}, s.throttled_ns) for vm, s in stats.items()})
                return sum(len(s.disks) for s in stats.values()) if devices else len(stats)
            return read

        def scrape() -> int:
            return len(generate_latest(metrics.registry))

        def before() -> int:
            """What the agent read per status period before its metrics: the domains, then each
            running one's CPU time and memory."""
            n = 0
            for d in driver.list_domains():
                driver.stats(d.name)
                n += 1
            return n

        def measure(fn: Callable[[], int]) -> dict[str, float]:
            ps = pids()
            cpu0 = {p: cpu_seconds(p) for p in ps}
            w0 = time.perf_counter()
            seen = fn()
            wall = time.perf_counter() - w0
            cpu = sum(cpu_seconds(p) - c for p, c in cpu0.items())
            return {"wall_ms": wall * 1000, "cpu_ms": cpu * 1000, "seen": seen}

        kinds = {"status": sample(False), "devices": sample(True), "scrape": scrape, "before": before}
        for fn in kinds.values():
            measure(fn)  # warm: connections, the device lists
        rows: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            order = list(kinds.items())
            for name, fn in order[::1 if r % 2 else -1]:
                rows[name].append(measure(fn))
                time.sleep(0.1)
        text = generate_latest(metrics.registry).decode()
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))

        def med(name: str, key: str = "cpu_ms") -> float:
            return round(statistics.median(x[key] for x in rows[name]), 2)
        complete = (all(x["seen"] == started for x in rows["status"])
                    and all(x["seen"] == started for x in rows["devices"]))  # one disk each
        per = DEVICE_PERIOD_S / STATUS_PERIOD_S
        # In each device period: one read with devices, the other status periods' without, and
        # Prometheus's scrapes.
        period_ms = (per - 1) * med("status") + med("devices") + DEVICE_PERIOD_S / SCRAPE_INTERVAL_S * med("scrape")
        before_ms = per * med("before")
        result: dict[str, Any] = {
            "benchmark": "metrics",
            "vms": args.vms,
            "guests_started": started,
            "guests_failed_to_start": failed_starts,
            "guest_devices": "one qcow2 disk each, no NIC (a NIC's counters are a /proc/net/dev read)",
            "start_s": round(start_s, 1),
            "rounds": args.rounds,
            "status_period_s": STATUS_PERIOD_S,
            "device_period_s": DEVICE_PERIOD_S,
            **{f"{k}_cpu_ms_median": med(k) for k in kinds},
            **{f"{k}_wall_ms_median": med(k, "wall_ms") for k in kinds},
            "every_guest_sampled": complete,
            "series_per_scrape": series,
            "cpu_us_per_vm_per_device_period": round(period_ms * 1000 / started, 1) if started else None,
            # The agent's whole per-VM collection, and what the metrics added to what it read before.
            "core_percent": round(period_ms / (DEVICE_PERIOD_S * 1000) * 100, 3),
            "core_percent_before_metrics": round(before_ms / (DEVICE_PERIOD_S * 1000) * 100, 3),
            "added_core_percent": round((period_ms - before_ms) / (DEVICE_PERIOD_S * 1000) * 100, 3),
            "cpu_counted": "this process + libvirtd + every QEMU (/proc, clock ticks of 10 ms: medians over rounds)",
        }
        result["targets_met"] = complete and result["core_percent"] < 2.0
        emit(result, args.json)
        return 0
    finally:
        host.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
