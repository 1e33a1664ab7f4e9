"""Input validation at the API edge: every violation is collected with its field path, and
nothing is written unless the list is empty."""
from __future__ import annotations

import math
import re
from typing import Iterable

from vdcos.errors import InvalidArgument
from vdcos.images import CATALOG, DEFAULT_PROFILE
from vdcos.lifecycle.power import DEFAULT_STOP_TIMEOUT_S, MAX_STOP_TIMEOUT_S
from vdcos.storagepool.volumes import MAX_DISKS
from vdcos.v1 import capacity_service_pb2 as cap_pb
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import volume_service_pb2 as vol_pb

# Every pattern is matched whole (fullmatch): with re.match, "$" also matches before a final
# newline, and "web\n" passed as a VM name into libvirt domain names, file names and etcd keys.
NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?")
LABEL_VALUE_RE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?")
NAME_RULE = "must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"

LIMITS = {"vcpus": (1, 1024), "memory_mib": (16, 16 * 1024 * 1024), "disk_gib": (0, 1024 * 1024),
          "network_mbps": (0, 1_000_000), "disk_iops": (0, 10_000_000)}

Violations = list[tuple[str, str]]

# Checked for every VM of every create: the enum's value list is built once, not per spec.
AFFINITY_POLICIES = frozenset(pb.AffinityPolicy.values())
RESTART_POLICIES = frozenset(pb.RestartPolicy.values())
RESTART_PRIORITIES = frozenset(pb.RestartPriority.values())


def check(violations: Violations) -> None:
    if violations:
        summary = "; ".join(f"{f}: {d}" for f, d in violations)
        raise InvalidArgument(f"invalid request: {summary}", details=violations)


def name(value: str, field: str, out: Violations, *, required: bool = True) -> None:
    if not value:
        if required:
            out.append((field, "is required"))
        return
    if not NAME_RE.fullmatch(value):
        out.append((field, f"{value[:80]!r} {NAME_RULE}"))


def names(values: Iterable[str], field: str, out: Violations) -> None:
    for i, v in enumerate(values):
        name(v, f"{field}[{i}]", out)


def labels(mapping: dict[str, str], field: str, out: Violations) -> None:
    if len(mapping) > 64:
        out.append((field, "at most 64 labels"))
    for k, v in mapping.items():
        if not LABEL_KEY_RE.fullmatch(k):
            out.append((f"{field}[{k[:40]!r}]", "key must be 1-63 characters of A-Z, a-z, 0-9, '.', '_', '/', '-'"))
        if not LABEL_VALUE_RE.fullmatch(v):
            out.append((f"{field}[{k[:40]!r}]", "value must be 0-63 characters of A-Z, a-z, 0-9, '.', '_', '-'"))


def resources(m: pb.Resources, field: str, out: Violations) -> None:
    for dim, (lo, hi) in LIMITS.items():
        v = getattr(m, dim)
        if not lo <= v <= hi:
            out.append((f"{field}.{dim}", f"must be between {lo} and {hi}, got {v}"))


def vm_spec(m: pb.VmSpec, field: str = "spec") -> Violations:
    out: Violations = []
    name(m.name, f"{field}.name", out)
    if not m.HasField("resources"):
        out.append((f"{field}.resources", "is required"))
    else:
        resources(m.resources, f"{field}.resources", out)
    name(m.qos_policy, f"{field}.qos_policy", out, required=False)
    name(m.placement_group, f"{field}.placement_group", out, required=False)
    name(m.project, f"{field}.project", out, required=False)
    if m.group_policy not in AFFINITY_POLICIES:
        out.append((f"{field}.group_policy", f"unknown value {m.group_policy}"))
    elif m.placement_group and m.group_policy == pb.AFFINITY_POLICY_UNSPECIFIED:
        out.append((f"{field}.group_policy", "is required with placement_group"))
    elif not m.placement_group and m.group_policy != pb.AFFINITY_POLICY_UNSPECIFIED:
        out.append((f"{field}.placement_group", "is required with group_policy"))
    labels(dict(m.node_selector), f"{field}.node_selector", out)
    names(m.networks, f"{field}.networks", out)
    if len(set(m.networks)) != len(m.networks):
        out.append((f"{field}.networks", "lists a network twice (a VM has one NIC per network)"))
    if len(m.networks) > 8:
        out.append((f"{field}.networks", "at most 8 networks"))
    names(m.volumes, f"{field}.volumes", out)
    if len(m.volumes) > MAX_DISKS:  # each a virtio disk: a PCI slot and a device name (vda-vdp)
        out.append((f"{field}.volumes", f"at most {MAX_DISKS} volumes"))
    if len(set(m.volumes)) != len(m.volumes):
        out.append((f"{field}.volumes", "lists a volume twice"))
    if m.ha.restart_policy not in RESTART_POLICIES:
        out.append((f"{field}.ha.restart_policy", f"unknown value {m.ha.restart_policy}"))
    if m.ha.priority not in RESTART_PRIORITIES:
        out.append((f"{field}.ha.priority", f"unknown value {m.ha.priority}"))
    if m.power_state not in (pb.POWER_STATE_UNSPECIFIED, pb.POWER_STATE_ON, pb.POWER_STATE_OFF):
        out.append((f"{field}.power_state", "a VM is created on or off"))
    if m.image and m.image not in CATALOG:
        out.append((f"{field}.image", f"unknown image {m.image[:80]!r}; one of {', '.join(sorted(CATALOG))}"))
    elif m.HasField("resources"):
        need = CATALOG[m.image or DEFAULT_PROFILE].min_memory_mib
        if 0 < m.resources.memory_mib < need:
            out.append((f"{field}.resources.memory_mib", f"image {m.image or DEFAULT_PROFILE} needs at least {need} MiB"))
    return out


def resize(m: vm_pb.ResizeVmRequest) -> Violations:
    out: Violations = []
    name(m.name, "name", out)
    name(m.qos_policy, "qos_policy", out, required=False)
    if m.HasField("resources"):
        resources(m.resources, "resources", out)
    elif not m.qos_policy:
        out.append(("resources", "resources or qos_policy is required"))
    return out


def stop_timeout(seconds: int) -> Violations:
    if not 0 <= seconds <= MAX_STOP_TIMEOUT_S:
        return [("timeout_s", f"must be between 0 (the default, {DEFAULT_STOP_TIMEOUT_S} s) and "
                              f"{MAX_STOP_TIMEOUT_S} seconds, got {seconds}")]
    return []


MIGRATION_LIMITS = {"max_downtime_ms": (0, 60_000), "max_bandwidth_mibps": (0, 100_000),
                    "postcopy_after_iterations": (0, 1000)}


def migrate(m: mig_pb.MigrateVmRequest) -> Violations:
    out: Violations = []
    name(m.vm, "vm", out)
    name(m.target_node, "target_node", out, required=False)
    for f, (lo, hi) in MIGRATION_LIMITS.items():
        v = getattr(m.options, f)
        if not lo <= v <= hi:
            out.append((f"options.{f}", f"must be between {lo} and {hi}, got {v}"))
    return out


MIGRATION_ID_RE = re.compile(r"mig-[0-9a-f]{12}")


def migration_id(value: str, field: str = "id") -> Violations:
    if not value:
        return [(field, "is required")]
    if not MIGRATION_ID_RE.fullmatch(value):
        return [(field, f"{value[:80]!r} is not a migration id (mig- and 12 hex digits)")]
    return []


def policy(m: pb.QosPolicy, field: str = "policy") -> Violations:
    out: Violations = []
    name(m.name, f"{field}.name", out)
    if m.qos_class not in (pb.QOS_CLASS_GUARANTEED, pb.QOS_CLASS_BURSTABLE, pb.QOS_CLASS_BEST_EFFORT):
        out.append((f"{field}.qos_class", "must be guaranteed, burstable or best-effort"))
    if not 0 <= m.cpu_weight <= 10_000:
        out.append((f"{field}.cpu_weight", f"must be between 1 and 10000 (0 = 100), got {m.cpu_weight}"))
    if not 0 <= m.cpu_limit_percent <= 100:
        out.append((f"{field}.cpu_limit_percent", f"must be between 0 and 100, got {m.cpu_limit_percent}"))
    r = m.memory_limit_ratio
    if not math.isfinite(r) or not (r == 0 or 1.0 <= r <= 16.0):
        out.append((f"{field}.memory_limit_ratio", f"must be 0 or between 1 and 16, got {r}"))
    elif r and m.qos_class == pb.QOS_CLASS_GUARANTEED:
        out.append((f"{field}.memory_limit_ratio", "a guaranteed policy's limit is its reservation"))
    for f in ("disk_iops_limit", "disk_mbps_limit", "network_mbps_limit", "disk_iops_reservation"):
        if not 0 <= getattr(m, f) <= 10_000_000:
            out.append((f"{field}.{f}", f"must be between 0 and 10000000, got {getattr(m, f)}"))
    if m.disk_iops_reservation and m.qos_class == pb.QOS_CLASS_BEST_EFFORT:
        out.append((f"{field}.disk_iops_reservation", "a best-effort policy reserves nothing"))
    elif 0 < m.disk_iops_limit < m.disk_iops_reservation:
        out.append((f"{field}.disk_iops_reservation",
                    f"must not exceed disk_iops_limit ({m.disk_iops_limit}), got {m.disk_iops_reservation}"))
    if len(m.description) > 256:
        out.append((f"{field}.description", "at most 256 characters"))
    return out


def config(m: pb.SchedulerConfig, field: str = "config") -> Violations:
    out: Violations = []
    for dim in LIMITS:
        v = getattr(m.overcommit, dim)
        if not math.isfinite(v) or not (v == 0 or 0.1 <= v <= 64):
            out.append((f"{field}.overcommit.{dim}", f"must be between 0.1 and 64 (0 = unchanged), got {v}"))
    if m.strategy not in pb.Strategy.values():
        out.append((f"{field}.strategy", f"unknown value {m.strategy}"))
    known = {"most_allocated", "alignment", "least_allocated", "group"}
    for k, v in m.scorer_weights.items():
        if k not in known:
            out.append((f"{field}.scorer_weights[{k[:40]!r}]", f"unknown scorer; known: {', '.join(sorted(known))}"))
        elif not math.isfinite(v) or not 0 <= v <= 1000:
            out.append((f"{field}.scorer_weights[{k!r}]", f"must be between 0 and 1000, got {v}"))
    for f in ("max_migrations_per_host", "max_migrations", "rebalance_max_moves"):
        if not 0 <= getattr(m, f) <= 1000:
            out.append((f"{field}.{f}", f"must be between 1 and 1000 (0 = unchanged), got {getattr(m, f)}"))
    if m.rebalance_mode not in pb.RebalanceMode.values():
        out.append((f"{field}.rebalance_mode", f"unknown value {m.rebalance_mode}"))
    if not math.isfinite(m.imbalance_threshold) or not 0 <= m.imbalance_threshold <= 1:
        out.append((f"{field}.imbalance_threshold", f"must be between 0 and 1 (0 = unchanged), got {m.imbalance_threshold}"))
    if not 0 <= m.rebalance_interval_s <= 86400:
        out.append((f"{field}.rebalance_interval_s", f"must be between 1 and 86400 (0 = unchanged), got {m.rebalance_interval_s}"))
    if not 0 <= m.percentage_of_nodes_to_score <= 100:
        out.append((f"{field}.percentage_of_nodes_to_score",
                    f"must be between 1 and 100, or 0 for adaptive, got {m.percentage_of_nodes_to_score}"))
    if not 0 <= m.ha_host_failures_to_tolerate <= 32:
        out.append((f"{field}.ha_host_failures_to_tolerate",
                    f"must be between 0 (off) and 32, got {m.ha_host_failures_to_tolerate}"))
    return out


def network(m: net_pb.Network, field: str = "network") -> Violations:
    import ipaddress

    from vdcos.vswitch.networks import PREFIX_MAX, PREFIX_MIN, VNI_MAX, VNI_MIN

    out: Violations = []
    name(m.name, f"{field}.name", out)
    name(m.project, f"{field}.project", out, required=False)
    if m.vni and not VNI_MIN <= m.vni <= VNI_MAX:
        out.append((f"{field}.vni", f"must be 0 (allocated by vdcos) or between {VNI_MIN} and {VNI_MAX}, got {m.vni}"))
    if not m.cidr:
        out.append((f"{field}.cidr", "is required"))
    else:
        try:
            net = ipaddress.IPv4Network(m.cidr[:64], strict=True)
            if not PREFIX_MIN <= net.prefixlen <= PREFIX_MAX:
                out.append((f"{field}.cidr", f"prefix length must be between /{PREFIX_MIN} and /{PREFIX_MAX}"))
        except ValueError as e:
            out.append((f"{field}.cidr", f"{m.cidr[:64]!r} is not an IPv4 network: {e}"))
    return out


def port(m: net_pb.CreatePortRequest) -> Violations:
    import ipaddress

    out: Violations = []
    name(m.network, "network", out)
    name(m.name, "name", out)
    name(m.host, "host", out)
    if m.ip:
        try:
            ipaddress.IPv4Address(m.ip[:64])
        except ValueError:
            out.append(("ip", f"{m.ip[:64]!r} is not an IPv4 address"))
    if m.max_mbps > 1_000_000:
        out.append(("max_mbps", f"must be at most 1000000, got {m.max_mbps}"))
    return out


def volume_size(size_gib: int, field: str) -> Violations:
    from vdcos.storagepool.volumes import MAX_SIZE_GIB

    if not 1 <= size_gib <= MAX_SIZE_GIB:
        return [(field, f"must be between 1 and {MAX_SIZE_GIB}, got {size_gib}")]
    return []


def volume(m: vol_pb.Volume, field: str = "volume") -> Violations:
    from vdcos.storagepool import images

    out: Violations = []
    name(m.name, f"{field}.name", out)
    name(m.project, f"{field}.project", out, required=False)
    if m.snapshot:
        # A restore takes pool, host and base image from the snapshot; size 0 = the snapshot's.
        name(m.snapshot, f"{field}.snapshot", out)
    if m.pool == vol_pb.POOL_KIND_UNSPECIFIED and not m.snapshot:
        out.append((f"{field}.pool", "is required: POOL_KIND_LOCAL or POOL_KIND_SHARED"))
    elif m.pool not in (vol_pb.POOL_KIND_UNSPECIFIED, vol_pb.POOL_KIND_LOCAL, vol_pb.POOL_KIND_SHARED):
        out.append((f"{field}.pool", f"unknown pool kind {m.pool}"))
    if m.size_gib or not m.snapshot:
        out += volume_size(m.size_gib, f"{field}.size_gib")
    if m.host:
        name(m.host, f"{field}.host", out)
    if m.image and m.image not in images.CATALOG:
        out.append((f"{field}.image", f"unknown image {m.image[:64]!r}; known: {', '.join(sorted(images.CATALOG))}"))
    if m.image and m.snapshot:
        out.append((f"{field}.image", "a volume restored from a snapshot starts from the snapshot's image"))
    for f in ("vm", "path", "message", "migration", "moving_to", "target_path", "snapshotting"):
        if getattr(m, f):
            out.append((f"{field}.{f}", "is set by vdcos, not by a request"))
    return out


def snapshot(m: vol_pb.Snapshot, field: str = "snapshot") -> Violations:
    out: Violations = []
    name(m.name, f"{field}.name", out)
    name(m.volume, f"{field}.volume", out)
    for f in ("host", "path", "message", "image", "project"):
        if getattr(m, f):
            out.append((f"{field}.{f}", "is set by vdcos, not by a request"))
    if m.pool or m.size_gib or m.state or m.live:
        out.append((field, "only name and volume are set by a request"))
    return out


def host_capacity(m: pb.Resources, field: str, out: Violations) -> None:
    for dim in LIMITS:
        v = getattr(m, dim)
        if not 0 <= v <= 1 << 40:
            out.append((f"{field}.{dim}", f"must be between 0 and {1 << 40}, got {v}"))
    if m.vcpus < 1 or m.memory_mib < 1:
        out.append((field, "a host needs vcpus and memory_mib"))


def plan_hosts(m: cap_pb.PlanHostsRequest) -> Violations:
    out: Violations = []
    if not m.vms:
        out.append(("vms", "at least one VM shape is required"))
    if len(m.vms) > 1000:
        out.append(("vms", f"at most 1000 shapes, got {len(m.vms)}"))
    total = 0
    for i, v in enumerate(m.vms[:1000]):
        if not v.HasField("resources"):
            out.append((f"vms[{i}].resources", "is required"))
        else:
            resources(v.resources, f"vms[{i}].resources", out)
        name(v.qos_policy, f"vms[{i}].qos_policy", out, required=False)
        if not 1 <= v.count <= 20000:
            out.append((f"vms[{i}].count", f"must be between 1 and 20000, got {v.count}"))
        total += max(v.count, 0)
    if total > 20000:
        out.append(("vms", f"at most 20000 VMs in all, got {total}"))
    if m.host_types:
        if m.HasField("host"):
            out.append(("host", "give host or host_types, not both"))
        if len(m.host_types) > 16:
            out.append(("host_types", f"at most 16 types, got {len(m.host_types)}"))
        seen = set()
        for i, t in enumerate(m.host_types[:16]):
            name(t.name, f"host_types[{i}].name", out)
            if t.name in seen:
                out.append((f"host_types[{i}].name", f"{t.name!r} given twice"))
            seen.add(t.name)
            host_capacity(t.capacity, f"host_types[{i}].capacity", out)
            if not 0 <= t.available <= 20000:
                out.append((f"host_types[{i}].available", f"must be between 0 (as many as needed) and 20000, "
                                                          f"got {t.available}"))
    elif not m.HasField("host"):
        out.append(("host", "is required (or host_types)"))
    else:
        host_capacity(m.host, "host", out)
    if not math.isfinite(m.time_limit_s) or not 0 <= m.time_limit_s <= 120:
        out.append(("time_limit_s", f"must be between 0 and 120 seconds, got {m.time_limit_s}"))
    return out


def headroom(m: cap_pb.GetHeadroomRequest) -> Violations:
    out: Violations = []
    if not m.HasField("shape"):
        out.append(("shape", "is required"))
    else:
        resources(m.shape, "shape", out)
    name(m.qos_policy, "qos_policy", out, required=False)
    labels(dict(m.node_selector), "node_selector", out)
    return out


def report(m: cap_pb.GetCapacityReportRequest) -> Violations:
    out: Violations = []
    if len(m.shapes) > 32:
        out.append(("shapes", f"at most 32 shapes, got {len(m.shapes)}"))
    for i, v in enumerate(m.shapes[:32]):
        resources(v.resources, f"shapes[{i}].resources", out)
    return out


def rebalance(m: cap_pb.PlanRebalanceRequest) -> Violations:
    out: Violations = []
    if m.goal not in (cap_pb.REBALANCE_GOAL_CONSOLIDATE, cap_pb.REBALANCE_GOAL_BALANCE):
        out.append(("goal", "must be consolidate or balance (evacuate a node with DrainNode)"))
    if not 0 <= m.max_migrations <= 1000:
        out.append(("max_migrations", f"must be between 1 and 1000 (0 = the configured cap), got {m.max_migrations}"))
    if not math.isfinite(m.imbalance_threshold) or not 0 <= m.imbalance_threshold <= 1:
        out.append(("imbalance_threshold", f"must be between 0 and 1 (0 = the configured one), got {m.imbalance_threshold}"))
    return out


REBALANCE_ID_RE = re.compile(r"rb-[0-9a-f]{12}")


def rebalance_id(value: str, field: str = "id") -> Violations:
    if not REBALANCE_ID_RE.fullmatch(value):
        return [(field, f"{value[:80]!r} is not a rebalance id (rb- and 12 hex digits)")]
    return []
