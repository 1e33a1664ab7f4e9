"""Guest images: one small Debian-kernel + busybox guest, built once and cached, and a catalog
of named boot profiles over it. A client names a profile; it never sends kernel arguments."""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

BUILD_SCRIPT = Path(__file__).with_name("build-guest.sh")


def cache_dir() -> Path:
    return Path(os.environ.get("VDCOS_IMAGES") or "/var/cache/vdcos/images")


@dataclass(frozen=True, slots=True)
class GuestImage:
    kernel: Path
    initrd: Path


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str
    min_memory_mib: int

    def cmdline(self, vcpus: int) -> str:
        base = "console=ttyS0 panic=-1 quiet"
        if self.name == "cpu-burn":
            return f"{base} burn={max(vcpus, 1)}"
        if self.name == "mem-dirty":
            return f"{base} dirty=64"
        if self.name == "disk-read":
            return f"{base} diskread=vda"
        if self.name == "disk-fill":
            return f"{base} diskfill=vda"
        if self.name == "disk-counter":
            return f"{base} diskcount=vda"
        return base


# The Debian kernel hangs below 96 MiB of guest RAM (seen in the libvirt recipe).
CATALOG: dict[str, Profile] = {p.name: p for p in (
    Profile("counter", "idle guest printing a counter on its console every 100 ms", 96),
    Profile("cpu-burn", "one busy loop per vCPU (QoS measurements)", 96),
    Profile("mem-dirty", "rewrites 64 MiB of memory in a loop (migration convergence)", 160),
    Profile("disk-read", "reads its first disk in a loop, 4 KiB O_DIRECT (disk QoS)", 96),
    Profile("disk-fill", "writes random data over the first half of its first disk once, then prints "
            "that half's md5 in a loop (disk integrity)", 96),
    Profile("disk-counter", "keeps its counter on its first disk, so a restarted guest goes on from its last "
            "value (HA: the same disk, not a blank one)", 96),
)}
DEFAULT_PROFILE = "counter"

# What every profile prints on its serial console (build-guest.sh's /init), every ~100 ms.
_COUNTER = re.compile(r"^CNT (\d+) ", re.M)


def counters(console: str) -> list[int]:
    """The guest's counter values in console text: they go on across a live migration."""
    return [int(n) for n in _COUNTER.findall(console)]


# disk-fill: a read of the filled half starts, then its md5 follows (other lines in between).
_DISKSUM = re.compile(r"^DISKSUM-START\s*$.*?^DISKSUM ([0-9a-f]{32})\s*$", re.M | re.S)


def disk_sums(console: str) -> list[str]:
    """md5 of the disk-fill guest's written half, from reads that started within this text."""
    return _DISKSUM.findall(console)


def ensure(directory: Path | None = None) -> GuestImage:
    """Build the guest if it is missing (a lock inside the script serializes builders)."""
    d = directory or cache_dir()
    img = GuestImage(d / "vmlinuz", d / "initrd.gz")
    version = d / "version"
    if not (img.kernel.exists() and img.initrd.exists() and version.exists()
            and f"VERSION={version.read_text().strip()}\n" in BUILD_SCRIPT.read_text()):
        r = subprocess.run(["bash", str(BUILD_SCRIPT), str(d)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"guest image build failed: {r.stderr[-2000:]}")
    return img
