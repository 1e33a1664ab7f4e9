"""The quota rule (model/project.py): what a charge would exceed, that a release always goes
through, and that use never goes below zero."""
from __future__ import annotations

import pytest

from vdcos.model.project import UNLIMITED, Limits, Quota, Usage, vm_usage, volume_usage


@pytest.mark.parametrize("limits, used, more, exceeded", [
    (Limits(), Usage(), vm_usage(64, 1 << 20, 1000), []),                          # no limits
    (Limits(vms=10), Usage(vms=9), vm_usage(1, 1, 1), []),                          # the last one
    (Limits(vms=10), Usage(vms=10), vm_usage(1, 1, 1), ["vms"]),                    # one too many
    (Limits(vcpus=8, memory_mib=4096), Usage(vcpus=6), vm_usage(4, 8192, 0), ["vcpus", "memory_mib"]),
    (Limits(disk_gib=30), Usage(disk_gib=20), volume_usage(10), []),
    (Limits(disk_gib=30, volumes=1), Usage(disk_gib=20, volumes=1), volume_usage(11), ["disk_gib", "volumes"]),
    (Limits(vms=0), Usage(), vm_usage(1, 1, 1), ["vms"]),                           # zero: none at all
    (Limits(vms=2), Usage(vms=5), -vm_usage(1, 1, 1), []),                          # over (lowered): a release goes
    (Limits(vms=UNLIMITED), Usage(vms=5), vm_usage(1, 1, 1), []),
])
def test_violations(limits: Limits, used: Usage, more: Usage, exceeded: list[str]) -> None:
    q = Quota("p", limits, used)
    got = q.violations(more)
    assert [v.quota for v in got] == exceeded
    for v in got:
        assert (v.limit, v.used, v.wanted) == (getattr(limits, v.quota), getattr(used, v.quota), getattr(more, v.quota))
        assert f"quota {v.quota} is {v.limit}" in str(v)


def test_charge_and_release() -> None:
    q = Quota("p").charged(vm_usage(2, 1024, 10)).charged(volume_usage(5))
    assert q.used == Usage(vcpus=2, memory_mib=1024, disk_gib=15, vms=1, volumes=1)
    assert q.charged(-vm_usage(2, 1024, 10)).charged(-volume_usage(5)).used.empty
    assert q.charged(-vm_usage(9, 9, 9)).used.vcpus == 0  # never below zero
    assert q.with_limits(vms=3).limits.vms == 3 and q.with_limits(vms=3).used == q.used
