"""A node agent's metrics: its host's capacity and use, and per VM its CPU time, memory, disk
and NIC counters (one bulk read of the hypervisor's statistics per status period, which the
agent takes for the VM statuses anyway), the CPU time its QoS cap throttled, the migrations
leaving the host with their remaining bytes, and reconcile errors by item kind.

A scrape reads the last sample; it never calls the hypervisor itself, so that Prometheus's
interval adds nothing to the agent's cost and a hung hypervisor cannot hang a scrape."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True)
class VmSample:
    """One VM's counters at one read (vdcos.nodeagent.driver.DomainStats), with who owns it."""
    project: str
    cpu_time_ns: int
    memory_used_mib: int
    disks: Mapping[str, tuple[int, int, int, int]] = field(default_factory=dict)  # rd bytes, wr bytes, rd ops, wr ops
    nics: Mapping[str, tuple[int, int, int, int]] = field(default_factory=dict)   # rx bytes, tx bytes, rx pkts, tx pkts
    throttled_ns: int | None = None  # None: the kernel reports none for this guest


@dataclass(frozen=True)
class HostSample:
    capacity_vcpus: int
    capacity_memory_mib: int
    capacity_disk_gib: int
    used_vcpus: int
    used_memory_mib: int
    vms: Mapping[str, VmSample]


@dataclass(frozen=True)
class MigrationSample:
    id: str
    vm: str
    destination: str
    remaining_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class SwitchSample:
    """The host's switch controller (vswitch/controller.py) since its agent started."""
    tunnels: int
    ports: int
    flows: int
    syncs: int
    sync_failures: int
    flow_pushes: int
    flow_push_seconds: float


# How often the disk and NIC counters are read: once a minute (a disk's counters cost a QMP round
# trip to its QEMU, ~3 ms of CPU here; CPU time and memory are read every status period, 5 s).
# Ceilometer polls every 5 minutes by default.
DEVICE_PERIOD_S = 60.0


class AgentMetrics:
    def __init__(self, node: str, registry: CollectorRegistry | None = None,
                 period_s: float = DEVICE_PERIOD_S) -> None:
        self.node = node
        self.period_s = period_s
        self.registry = registry or CollectorRegistry()
        self.reconcile_errors = Counter("vdcos_agent_reconcile_errors", "Reconcile failures, by kind of item",
                                        ["node", "kind"], registry=self.registry)
        self._collector = _Collector(self)
        self.registry.register(self._collector)
        self.sample: HostSample | None = None
        self.migrations: Callable[[], list[MigrationSample]] = list
        self.switch: Callable[[], SwitchSample | None] = lambda: None

    def error(self, kind: str) -> None:
        self.reconcile_errors.labels(self.node, kind).inc()


class _Collector(Collector):
    def __init__(self, m: AgentMetrics) -> None:
        self.m = m

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        node, s = self.m.node, self.m.sample
        if s is not None:
            for name, doc, value in (
                    ("vdcos_node_capacity_vcpus", "vCPUs the host offers (before overcommit)", s.capacity_vcpus),
                    ("vdcos_node_capacity_memory_bytes", "Memory the host offers", s.capacity_memory_mib * MIB),
                    ("vdcos_node_capacity_disk_bytes", "Disk the host offers", s.capacity_disk_gib * GIB),
                    ("vdcos_node_used_vcpus", "vCPUs of the guests running on the host", s.used_vcpus),
                    ("vdcos_node_memory_used_bytes", "Memory the host's guests use (their QEMUs' RSS)",
                     s.used_memory_mib * MIB),
                    ("vdcos_node_vms", "Guests running on the host", len(s.vms))):
                yield _gauge(name, doc, node, value)
            yield from _vm_families(node, s.vms)
        rem = GaugeMetricFamily("vdcos_migration_remaining_bytes", "Memory a live migration leaving this host "
                                "has still to send", labels=["node", "vm", "migration", "destination"])
        tot = GaugeMetricFamily("vdcos_migration_total_bytes", "Guest memory a live migration leaving this host "
                                "sends in one pass", labels=["node", "vm", "migration", "destination"])
        migrations = self.m.migrations()
        for mg in migrations:
            rem.add_metric([node, mg.vm, mg.id, mg.destination], mg.remaining_bytes)
            tot.add_metric([node, mg.vm, mg.id, mg.destination], mg.total_bytes)
        yield _gauge("vdcos_migrations_in_progress", "Live migrations leaving this host", node, len(migrations))
        yield rem
        yield tot
        if (sw := self.m.switch()) is not None:
            for name, doc, value in (("vdcos_switch_tunnels", "VXLAN tunnels from this host's switch", sw.tunnels),
                                     ("vdcos_switch_ports", "Guest and endpoint ports plugged here", sw.ports),
                                     ("vdcos_switch_flows", "OpenFlow rules the controller keeps", sw.flows)):
                yield _gauge(name, doc, node, value)
            counters: tuple[tuple[str, str, float], ...] = (
                    ("vdcos_switch_syncs", "Times the controller brought the switch to what etcd says", sw.syncs),
                    ("vdcos_switch_sync_failures", "Syncs that failed (retried)", sw.sync_failures),
                    ("vdcos_switch_flow_pushes", "Flow tables pushed (replace-flows, one bundle each)",
                     sw.flow_pushes),
                    ("vdcos_switch_flow_push_seconds", "Time spent pushing flow tables", sw.flow_push_seconds))
            for name, doc, total in counters:
                c = CounterMetricFamily(name, doc, labels=["node"])
                c.add_metric([node], total)
                yield c


def _gauge(name: str, doc: str, node: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=["node"])
    g.add_metric([node], value)
    return g


def _vm_families(node: str, vms: Mapping[str, VmSample]) -> Iterable[Any]:
    vm_labels = ["node", "vm", "project"]
    cpu = CounterMetricFamily("vdcos_vm_cpu_seconds", "CPU time the guest's vCPUs used", labels=vm_labels)
    mem = GaugeMetricFamily("vdcos_vm_memory_used_bytes", "Memory the guest's QEMU holds (RSS)", labels=vm_labels)
    thr = CounterMetricFamily("vdcos_vm_cpu_throttled_seconds", "CPU time the guest's QoS cap withheld "
                              "(cgroup cpu.stat throttled_time)", labels=vm_labels)
    disk = [CounterMetricFamily(f"vdcos_vm_disk_{what}", doc, labels=[*vm_labels, "device"]) for what, doc in (
        ("read_bytes", "Bytes the guest read from the disk"), ("write_bytes", "Bytes the guest wrote to the disk"),
        ("read_ops", "Read requests of the guest to the disk"), ("write_ops", "Write requests of the guest to the disk"))]
    nic = [CounterMetricFamily(f"vdcos_vm_network_{what}", doc, labels=[*vm_labels, "interface"]) for what, doc in (
        ("receive_bytes", "Bytes the guest's NIC received"), ("transmit_bytes", "Bytes the guest's NIC sent"),
        ("receive_packets", "Packets the guest's NIC received"), ("transmit_packets", "Packets the guest's NIC sent"))]
    for vm, v in vms.items():
        lv = [node, vm, v.project]
        cpu.add_metric(lv, v.cpu_time_ns / 1e9)
        mem.add_metric(lv, v.memory_used_mib * MIB)
        if v.throttled_ns is not None:
            thr.add_metric(lv, v.throttled_ns / 1e9)
        for dev, counters in v.disks.items():
            for fam, value in zip(disk, counters):
                fam.add_metric([*lv, dev], value)
        for ifname, counters in v.nics.items():
            for fam, value in zip(nic, counters):
                fam.add_metric([*lv, ifname], value)
    yield from (cpu, mem, thr, *disk, *nic)
