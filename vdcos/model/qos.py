"""From a QoS policy and a VM's request to what counts against a node and what the host enforces."""
from __future__ import annotations

import math
from dataclasses import replace

from vdcos.model import QosClass, QosPolicy, QosSettings, Resources, VmSpec

CPU_PERIOD_US = 100_000
# Same floor as Kubernetes' BestEffort (cpu.shares=2): it only runs on idle CPU.
BEST_EFFORT_SHARES = 2


def _with_iops(resources: Resources, iops: int) -> Resources:
    return replace(resources, disk_iops=iops) if iops > resources.disk_iops else resources


def request(spec: VmSpec, policy: QosPolicy) -> Resources:
    """What the VM asks of a node: its resources, with at least the IOPS its policy reserves."""
    return _with_iops(spec.resources, policy.disk_iops_reservation)


def placed_request(spec: VmSpec, reserved: Resources) -> Resources:
    """`request` where the policy was resolved already: what the placement reserved says it all.
    For commit validation, migration and agent admission, which check the same fit again."""
    return _with_iops(spec.resources, reserved.disk_iops)


def reservation(spec: VmSpec, policy: QosPolicy) -> Resources:
    """What the VM holds on its node: its request, or nothing for best-effort."""
    if policy.qos_class is QosClass.BEST_EFFORT:
        return Resources()
    return request(spec, policy)


def resolve(spec: VmSpec, policy: QosPolicy) -> QosSettings:
    vcpus = max(spec.resources.vcpus, 1)
    if policy.qos_class is QosClass.BEST_EFFORT:
        shares = BEST_EFFORT_SHARES
    else:
        shares = max(BEST_EFFORT_SHARES, math.ceil(1024 * vcpus * policy.cpu_weight / 100))
    if policy.cpu_limit_percent:
        quota = math.ceil(CPU_PERIOD_US * vcpus * policy.cpu_limit_percent / 100)
    elif policy.qos_class is QosClass.GUARANTEED:
        # A guaranteed VM gets exactly what it reserved and no more (no noisy neighbour).
        quota = CPU_PERIOD_US * vcpus
    else:
        quota = 0
    if policy.qos_class is QosClass.GUARANTEED or not policy.memory_limit_ratio:
        mem_limit = spec.resources.memory_mib
    else:
        mem_limit = math.ceil(spec.resources.memory_mib * policy.memory_limit_ratio)
    net_limit = policy.network_mbps_limit
    iops_limit = policy.disk_iops_limit
    if policy.qos_class is QosClass.GUARANTEED:
        # What it reserved is also its ceiling, so it cannot eat a neighbour's reservation.
        net_limit = net_limit or spec.resources.network_mbps
        iops_limit = iops_limit or request(spec, policy).disk_iops
    return QosSettings(
        qos_class=policy.qos_class,
        cpu_shares=shares,
        cpu_period_us=CPU_PERIOD_US,
        cpu_quota_us=quota,
        memory_limit_mib=mem_limit,
        disk_iops_limit=iops_limit,
        disk_mbps_limit=policy.disk_mbps_limit,
        network_mbps_limit=net_limit,
    )
