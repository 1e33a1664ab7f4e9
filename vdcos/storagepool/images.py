"""Base disk images a volume can start from: built once per machine, cached, and shared
read-only by every volume made from them (each volume is a qcow2 overlay on its base)."""
from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vdcos.images import cache_dir

BLOCK = 4096


@dataclass(frozen=True, slots=True)
class DiskImage:
    name: str
    description: str
    size_mib: int
    version: int = 1

    def block(self, n: int) -> bytes:
        """Block n of the image: a header naming it and a digest chain, so any misplaced or
        corrupted 4 KiB block is detected by reading it back."""
        head = f"vdcos {self.name} v{self.version} block {n:08d}\n".encode()
        body = hashlib.sha256(head).digest() * ((BLOCK - len(head)) // 32 + 1)
        return (head + body)[:BLOCK]


CATALOG: dict[str, DiskImage] = {i.name: i for i in (
    DiskImage("pattern", "64 MiB of self-describing 4 KiB blocks (integrity checks)", 64),
)}


def path(name: str) -> Path:
    img = CATALOG[name]
    return cache_dir() / "disks" / f"{img.name}-v{img.version}.qcow2"


def ensure(name: str) -> Path:
    """The cached base image, built on first use (a lock keeps concurrent agents from racing)."""
    img, out = CATALOG[name], path(name)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists():
            return out
        raw = out.with_suffix(".raw.tmp")
        with open(raw, "wb") as f:
            for n in range(img.size_mib * 1024 * 1024 // BLOCK):
                f.write(img.block(n))
        tmp = out.with_suffix(".qcow2.tmp")
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(tmp)],
                       check=True, timeout=120)
        raw.unlink()
        os.chmod(tmp, 0o444)
        tmp.rename(out)
    return out


def content_digest(disk: Path | str, scratch: Path | None = None) -> str:
    """SHA-256 of what a guest sees on this qcow2 disk (its whole backing chain, zeros where
    nothing was written), read with force-share so a running VM's disk can be checked."""
    with tempfile.TemporaryDirectory(dir=scratch) as d:
        raw = Path(d) / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-U", "-q", "-f", "qcow2", "-O", "raw", str(disk), str(raw)],
                       check=True, timeout=600)
        h = hashlib.sha256()
        with open(raw, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        return h.hexdigest()
