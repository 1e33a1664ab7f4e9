"""The CPU wake-up latency request (vdcos/host/wakeup.py) on the real kernel device: held while
asked for, gone when released or when its process dies, and the scheduler daemon's flag."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_until
from vdcos.host.wakeup import DEVICE, MAX_US, CpuWakeupLatency, current
from vdcos.state.etcd_server import EtcdServer

pytestmark = pytest.mark.skipif(not DEVICE.exists(), reason="no /dev/cpu_dma_latency on this kernel")


def test_a_request_holds_while_open_and_ends_on_release() -> None:
    before = current()
    with CpuWakeupLatency(7) as w:
        assert w.held and current() <= 7
    assert not w.held
    assert current() == before


def test_a_request_ends_with_the_process_that_held_it() -> None:
    before = current()
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from vdcos.host.wakeup import CpuWakeupLatency\n"
                               "CpuWakeupLatency(5).hold(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert current() <= 5
    finally:
        holder.kill()  # no release: the kernel withdraws it as the file closes
        holder.wait(10)
    assert current() == before


@pytest.mark.parametrize("us", [-1, MAX_US + 1])
def test_out_of_range_is_refused_before_anything_is_held(us: int) -> None:
    with pytest.raises(ValueError, match="0 to 2000000000"):
        CpuWakeupLatency(us)


def test_a_missing_device_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        CpuWakeupLatency(0, tmp_path / "nothing").hold()


def _daemon(etcd: EtcdServer, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vdcos.apiserver", "--etcd", etcd.endpoint,
                             "--port-file", str(tmp_path / "port"), "--insecure", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_scheduler_holds_it_while_it_serves(etcd_server: EtcdServer, tmp_path: Path) -> None:
    before = current()
    sched = _daemon(etcd_server, tmp_path, "--cpu-wakeup-latency-us", "3")
    try:
        wait_until(lambda: (tmp_path / "port").exists() or sched.poll() is not None, timeout=30)
        assert sched.poll() is None
        assert current() <= 3
    finally:
        sched.send_signal(signal.SIGTERM)
        out, _ = sched.communicate(timeout=20)
    assert sched.returncode == 0, out[-2000:]
    assert "CPU wake-up latency held at 3 µs" in out
    assert current() == before


@pytest.mark.parametrize("value", ["-1", "2000000001", "soon"])
def test_the_scheduler_refuses_a_bad_value_by_name(etcd_server: EtcdServer, tmp_path: Path, value: str) -> None:
    before = current()
    sched = _daemon(etcd_server, tmp_path, "--cpu-wakeup-latency-us", value)
    out, _ = sched.communicate(timeout=30)
    assert sched.returncode == 2
    assert "--cpu-wakeup-latency-us" in out
    assert not (tmp_path / "port").exists()
    assert current() == before
