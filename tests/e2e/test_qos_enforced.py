"""QoS is enforced on the host, and measured: CPU shares between two CPU-bound guests that share
one CPU, and a CPU limit on another. The values come from QoS policies through the same resolve
function the scheduler uses; libvirt applies them through the host's own cgroup root."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import wait_until
from vdcos.host.libvirtd import LibvirtHost
from vdcos.images import counters, ensure
from vdcos.model import QosClass, QosPolicy, Resources, VmSpec
from vdcos.nodeagent.libvirt.driver import LibvirtDriver
from vdcos.model import qos

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]
WINDOW_S = 10.0


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LibvirtDriver, LibvirtDriver]]:
    image = ensure()
    base = tmp_path_factory.mktemp("qos")
    # One machine CPU each, so that the guests on a host really compete for it.
    a = LibvirtHost.create(base / "a", "qos-a", "qt", "127.78.0.1", cpus="1")
    b = LibvirtHost.create(base / "b", "qos-b", "qt", "127.78.0.2", cpus="0")
    try:
        for h in (a, b):
            h.start()
        cap = Resources(4, 4096, 10, 100)
        da, db = (LibvirtDriver(h.uri, cap, image, Path(h.root)) for h in (a, b))
        yield da, db
        da.close()
        db.close()
    finally:
        a.stop()
        b.stop()


def boot(d: LibvirtDriver, name: str, policy: QosPolicy) -> None:
    spec = VmSpec(name, Resources(1, 128, 0, 0), image="cpu-burn")
    d.define(spec, qos.resolve(spec, policy))
    d.start(name)


def booted(d: LibvirtDriver, name: str) -> bool:
    f = d.console_file(name)
    return f is not None and f.exists() and bool(counters(f.read_text(errors="replace")))


def cpu_seconds(d: LibvirtDriver, names: list[str]) -> dict[str, float]:
    t0 = {n: d.stats(n).cpu_time_ns for n in names}
    time.sleep(WINDOW_S)
    return {n: (d.stats(n).cpu_time_ns - t0[n]) / 1e9 for n in names}


def test_cpu_shares_and_limit_hold_under_load(hosts: tuple[LibvirtDriver, LibvirtDriver]) -> None:
    a, b = hosts
    boot(a, "hi", QosPolicy("hi", QosClass.BURSTABLE, cpu_weight=200))
    boot(a, "lo", QosPolicy("lo", QosClass.BURSTABLE, cpu_weight=100))
    boot(b, "capped", QosPolicy("capped", QosClass.BURSTABLE, cpu_limit_percent=25))
    wait_until(lambda: all(booted(d, n) for d, n in ((a, "hi"), (a, "lo"), (b, "capped"))), timeout=120, every=0.5)
    shared = cpu_seconds(a, ["hi", "lo"])
    ratio = shared["hi"] / shared["lo"]
    capped = cpu_seconds(b, ["capped"])["capped"] / WINDOW_S
    print(f"shares 2048:1024 -> CPU {shared['hi']:.2f}s : {shared['lo']:.2f}s = {ratio:.2f}; "
          f"25% limit -> {capped * 100:.1f}%")
    assert 1.7 <= ratio <= 2.3
    assert shared["hi"] + shared["lo"] > 0.5 * WINDOW_S  # they did compete for a busy CPU
    assert 0.15 <= capped <= 0.28
