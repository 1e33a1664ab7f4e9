"""A host's storage pools, and the agent-side reconciler that makes etcd's volume records true
on disk.

`StoragePools` is the small protocol the reconciler needs; `LibvirtPools` implements it with the
host's own libvirtd (dir pools: `local` in the host's folder, `shared` in a folder every host of
the datacenter sees), `SimPools` without any file for the `sim` driver's simulated hosts.
"""
from __future__ import annotations

import logging
import math
import os
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from vdcos.model import PoolKind, PoolStatus, Snapshot, Volume, VolumeState, dumps
from vdcos.state import keys
from vdcos.state.store import Put, Store
from vdcos.storagepool import images, snapshots, volumes

log = logging.getLogger("vdcos.storagepool")
GIB = 1024 ** 3
# A copy's temporary file untouched for longer than any copy may run (qemu-img gets 1800 s) is
# what a crashed agent left behind.
STALE_TEMPORARY_S = 3600


class PoolError(Exception):
    pass


class StoragePools(Protocol):
    def status(self) -> list[PoolStatus]: ...
    def make(self, vol: Volume) -> str: ...
    def remove(self, path: str) -> None: ...
    def files(self, pool: PoolKind) -> dict[str, str]: ...   # volume name -> path
    def sweep(self) -> list[str]: ...                         # crashed copies' temporary files, removed
    def grow(self, vol: Volume) -> None: ...                  # a file no QEMU has open
    def snapshot_path(self, snap: Snapshot) -> str: ...
    def snapshot(self, vol: Volume, snap: Snapshot) -> str: ...  # from a file no QEMU has open
    def restore(self, vol: Volume, snap: Snapshot) -> str: ...   # the volume's file, from the snapshot's
    def snapshot_files(self, pool: PoolKind) -> dict[str, str]: ...  # snapshot name -> path


class GuestDisks(Protocol):
    """The hypervisor driver's part in a snapshot: copying a disk a running guest has open."""

    def backup_disk(self, name: str, path: str, target: str) -> bool: ...


def volume_file(directory: Path, name: str) -> Path:
    return directory / f"{name}.qcow2"


def snapshot_file(directory: Path, name: str) -> Path:
    # Not *.qcow2: a snapshot is never mistaken for a volume's file (nor removed as one).
    return directory / f"{name}.snapshot"


def sweep_temporaries(dirs: list[Path], now: float | None = None) -> list[str]:
    """Remove the temporary files of copies that can no longer be running (see `_convert`).
    Age, not ownership, decides: in a shared folder another host may be copying right now."""
    now = time.time() if now is None else now
    gone = []
    for d in dirs:
        for p in d.glob(".*.tmp"):
            try:
                if now - p.stat().st_mtime > STALE_TEMPORARY_S:
                    p.unlink()
                    gone.append(str(p))
            except FileNotFoundError:
                pass
    return gone


def _convert(source: str, out: Path, base: str, size_gib: int = 0) -> None:
    """qemu-img convert into `out` (through a temporary file, so a crash leaves no half file
    under the real name): as a diff against `base` when the disk has one, so only what the
    guest wrote is stored."""
    tmp = out.with_name(f".{out.name}.tmp")
    cmd = ["qemu-img", "convert", "-q", "-O", "qcow2"]
    if base:
        cmd += ["-B", str(images.ensure(base)), "-F", "qcow2"]
    try:
        subprocess.run([*cmd, source, str(tmp)], check=True, capture_output=True, text=True, timeout=1800)
        if size_gib:
            subprocess.run(["qemu-img", "resize", "-q", "-f", "qcow2", str(tmp), f"{size_gib}G"],
                           check=True, capture_output=True, text=True, timeout=60)
        os.replace(tmp, out)
    except subprocess.CalledProcessError as e:
        tmp.unlink(missing_ok=True)
        raise PoolError(f"qemu-img: {e.stderr.strip() or e}") from e
    except (OSError, subprocess.TimeoutExpired) as e:
        tmp.unlink(missing_ok=True)
        raise PoolError(f"qemu-img: {e}") from e


class LibvirtPools:
    def __init__(self, host: str, connect: Callable[[], Any], local_dir: Path, shared_dir: Path | None) -> None:
        self.host = host
        self.connect = connect  # the host's libvirtd, the hypervisor driver's own connection
        self.dirs = {PoolKind.LOCAL: local_dir, **({PoolKind.SHARED: shared_dir} if shared_dir else {})}

    def _pool(self, kind: PoolKind):  # type: ignore[no-untyped-def]
        import libvirt  # only hosts with libvirt import it
        conn = self.connect()
        name = f"vdcos-{kind.value}"
        try:
            pool = conn.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            d = self.dirs[kind]
            d.mkdir(parents=True, exist_ok=True)
            xml = f"<pool type='dir'><name>{name}</name><target><path>{d}</path></target></pool>"
            pool = conn.storagePoolDefineXML(xml, 0)
            pool.setAutostart(True)
        if not pool.isActive():
            pool.create(0)
        return pool

    def status(self) -> list[PoolStatus]:
        out = []
        for kind, d in self.dirs.items():
            pool = self._pool(kind)
            pool.refresh(0)
            _, capacity, _, available = pool.info()
            out.append(PoolStatus(self.host, kind, str(d), round(capacity / GIB, 2), round(available / GIB, 2),
                                  pool.numOfVolumes()))
        return out

    def make(self, vol: Volume) -> str:
        import libvirt
        pool = self._pool(vol.pool)
        path = volume_file(self.dirs[vol.pool], vol.name)
        try:
            return str(pool.storageVolLookupByName(path.name).path())
        except libvirt.libvirtError:
            pass
        v = ET.Element("volume")
        ET.SubElement(v, "name").text = path.name
        ET.SubElement(v, "capacity", unit="G").text = str(vol.size_gib)
        ET.SubElement(v, "allocation").text = "0"
        ET.SubElement(ET.SubElement(v, "target"), "format", type="qcow2")
        if vol.image:
            back = ET.SubElement(v, "backingStore")
            ET.SubElement(back, "path").text = str(images.ensure(vol.image))
            ET.SubElement(back, "format", type="qcow2")
        try:
            return str(pool.createXML(ET.tostring(v, encoding="unicode"), 0).path())
        except libvirt.libvirtError as e:
            raise PoolError(f"creating {path}: {e}") from e

    def remove(self, path: str) -> None:
        import libvirt
        for kind, d in self.dirs.items():
            if Path(path).parent == d:
                pool = self._pool(kind)
                try:
                    pool.storageVolLookupByName(Path(path).name).delete(0)
                except libvirt.libvirtError:
                    Path(path).unlink(missing_ok=True)
                return

    def grow(self, vol: Volume) -> None:
        import libvirt
        try:
            v = self._pool(vol.pool).storageVolLookupByName(Path(vol.path).name)
            if v.info()[1] < vol.size_gib * GIB:
                v.resize(vol.size_gib * GIB, 0)
        except libvirt.libvirtError as e:
            raise PoolError(f"growing {vol.path}: {e}") from e

    def files(self, kind: PoolKind) -> dict[str, str]:
        return self._glob(kind, ".qcow2")

    def sweep(self) -> list[str]:
        return sweep_temporaries([d for d in self.dirs.values() if d.exists()])

    def snapshot_files(self, kind: PoolKind) -> dict[str, str]:
        return self._glob(kind, ".snapshot")

    def _glob(self, kind: PoolKind, suffix: str) -> dict[str, str]:
        d = self.dirs.get(kind)
        if d is None or not d.exists():
            return {}
        return {p.name[:-len(suffix)]: str(p) for p in d.glob(f"*{suffix}")}

    def snapshot_path(self, snap: Snapshot) -> str:
        return str(snapshot_file(self.dirs[snap.pool], snap.name))

    def snapshot(self, vol: Volume, snap: Snapshot) -> str:
        out = Path(self.snapshot_path(snap))
        _convert(vol.path, out, vol.image)
        return str(out)

    def restore(self, vol: Volume, snap: Snapshot) -> str:
        out = volume_file(self.dirs[vol.pool], vol.name)
        if not out.exists():
            _convert(snap.path, out, snap.image, vol.size_gib)
        self._pool(vol.pool).refresh(0)  # libvirt lists the new file as a pool volume
        return str(out)


class SimPools:
    """Simulated hosts: capacity from the node spec, volumes with no file behind them."""

    def __init__(self, host: str, capacity_gib: int) -> None:
        self.host = host
        self.capacity_gib = capacity_gib
        self._made: dict[str, str] = {}
        self.grown: dict[str, int] = {}

    def status(self) -> list[PoolStatus]:
        return [PoolStatus(self.host, PoolKind.LOCAL, "sim", self.capacity_gib, self.capacity_gib, len(self._made)),
                PoolStatus(self.host, PoolKind.SHARED, "sim", 100_000, 100_000, 0)]

    def make(self, vol: Volume) -> str:
        self._made[vol.name] = f"sim://{vol.pool.value}/{vol.name}"
        return self._made[vol.name]

    def remove(self, path: str) -> None:
        self._made = {k: v for k, v in self._made.items() if v != path}

    def files(self, kind: PoolKind) -> dict[str, str]:
        return {k: v for k, v in self._made.items() if v.startswith(f"sim://{kind.value}/")
                and not k.endswith(".snapshot")}

    def sweep(self) -> list[str]:
        return []  # nothing is copied through a file

    def grow(self, vol: Volume) -> None:
        self.grown[vol.name] = vol.size_gib

    def snapshot_path(self, snap: Snapshot) -> str:
        return f"sim://{snap.pool.value}/{snap.name}.snapshot"

    def snapshot(self, vol: Volume, snap: Snapshot) -> str:
        self._made[f"{snap.name}.snapshot"] = self.snapshot_path(snap)
        return self.snapshot_path(snap)

    def restore(self, vol: Volume, snap: Snapshot) -> str:
        return self.make(vol)

    def snapshot_files(self, kind: PoolKind) -> dict[str, str]:
        return {k[:-len(".snapshot")]: v for k, v in self._made.items()
                if v.startswith(f"sim://{kind.value}/") and k.endswith(".snapshot")}


class _Copy:
    """A snapshot's copy on its own thread: a big disk takes minutes, and the host's other
    volume work and its VMs' reconcile must not wait for it."""

    def __init__(self, name: str, fn: Callable[..., None], *args: Any) -> None:
        self.ended = math.inf  # time.monotonic() once it returned
        self.thread = threading.Thread(target=self._run, args=(fn, *args), name=name, daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%s failed", self.thread.name)
        finally:
            self.ended = time.monotonic()


class VolumeReconciler:
    """Run by the agent after every change under /vdcos/volumes/ and every resync period:
    makes the files of volumes and snapshots recorded on this host, removes the files no record
    owns (local pool; a shared file is removed by the host that made it), and reports the pools."""

    def __init__(self, store: Store, host: str, pools: StoragePools, lease: Callable[[], int],
                 guests: GuestDisks | None = None) -> None:
        self.store = store
        self.host = host
        self.pools = pools
        self.lease = lease
        self.guests = guests
        self._published: tuple[int, list[PoolStatus]] = (0, [])
        self._sizes: dict[str, int] = {}  # volume -> GiB its file was checked to have
        self._copies: dict[str, _Copy] = {}  # snapshot -> the copy making its file

    def sync(self) -> None:
        read_at = time.monotonic()
        vols = {v.name: v for v in volumes.list_volumes(self.store)}
        snaps = {s.name: s for s in snapshots.list_snapshots(self.store)}
        # A copy that ended before these reads has its outcome in them: a snapshot still
        # being made by then lost its copy (an error writing the outcome) and gets another.
        self._copies = {name: c for name, c in self._copies.items() if c.ended > read_at}
        self._sizes = {name: gib for name, gib in self._sizes.items() if name in vols}
        for v in vols.values():
            if v.host != self.host or v.state is not VolumeState.CREATING:
                continue
            try:
                source = snaps.get(v.snapshot) if v.snapshot else None
                if v.snapshot and (source is None or not source.path):
                    raise PoolError(f"snapshot {v.snapshot} is gone")
                path = self.pools.restore(v, source) if source else self.pools.make(v)
            except (PoolError, OSError) as e:
                log.error("volume %s: %s", v.name, e)
                volumes.update(self.store, v.name, lambda x, why=str(e)[:300]: replace(
                    x, state=VolumeState.FAILED, message=why) if x.state is VolumeState.CREATING else None)
                continue
            volumes.update(self.store, v.name, lambda x, p=path: replace(
                x, state=VolumeState.AVAILABLE, path=p) if x.state is VolumeState.CREATING else None)
            log.info("volume %s ready at %s", v.name, path)
        for v in vols.values():
            if v.moving_to == self.host and not v.target_path and not v.message:
                self._make_copy_target(v)
            elif (v.host == self.host and v.state is VolumeState.AVAILABLE and not v.vm and not v.migration
                  and not v.open_on and self._sizes.get(v.name) != v.size_gib):
                # Resized while no VM had it: grown here (an attached one grows through its QEMU).
                try:
                    self.pools.grow(v)
                    self._sizes[v.name] = v.size_gib
                except (PoolError, OSError) as e:
                    log.error("volume %s: %s", v.name, e)
        for snap in snaps.values():
            if snap.host == self.host and snap.state is VolumeState.CREATING and snap.name not in self._copies:
                self._copies[snap.name] = _Copy(f"snapshot-{snap.name}", self._take, snap, vols.get(snap.volume))
        for kind in (PoolKind.LOCAL, PoolKind.SHARED):
            for name, path in self.pools.snapshot_files(kind).items():
                s = snaps.get(name)
                if s is None or s.pool is not kind or (kind is PoolKind.LOCAL and s.host != self.host):
                    self.pools.remove(path)
                    log.info("removed %s: no snapshot record owns it", path)
            for name, path in self.pools.files(kind).items():
                v = vols.get(name)
                # Every host sees the shared folder: any of them may remove an orphan there.
                owned = v is not None and v.pool is kind and (
                    v.host == self.host or v.moving_to == self.host or kind is PoolKind.SHARED)
                if owned:
                    continue
                self.pools.remove(path)
                log.info("removed %s: no volume record owns it", path)
        for path in self.pools.sweep():
            log.info("removed %s: an interrupted copy's temporary file", path)
        status, lease = self.pools.status(), self.lease()
        if (lease, status) != self._published:  # only changes: every host does this every resync
            self.store.txn([], [Put(keys.pool(self.host, s.pool.value), dumps(s), lease) for s in status])
            self._published = (lease, status)

    def wait_copies(self, timeout: float) -> None:
        """Let the snapshot copies under way finish (an agent stopping)."""
        deadline = time.monotonic() + timeout
        for c in list(self._copies.values()):
            c.thread.join(max(deadline - time.monotonic(), 0))

    def _take(self, snap: Snapshot, vol: Volume | None) -> None:
        """Make a snapshot's file: from the running guest's disk when it has the volume open
        (a backup job; the guest does not pause), else from the closed file."""
        if vol is None or vol.snapshotting != snap.name or not vol.path:
            snapshots.finish(self.store, snap.name, error=f"volume {snap.volume} went away before the snapshot")
            return
        target = self.pools.snapshot_path(snap)
        try:
            live = bool(vol.vm) and self.guests is not None and self.guests.backup_disk(vol.vm, vol.path, target)
            path = target if live else self.pools.snapshot(vol, snap)
        except Exception as e:  # noqa: BLE001 - whatever the driver or qemu-img raise fails the snapshot
            log.error("snapshot %s of %s: %s", snap.name, vol.name, e)
            self.pools.remove(target)
            snapshots.finish(self.store, snap.name, error=str(e))
            return
        snapshots.finish(self.store, snap.name, path, live=live)
        log.info("snapshot %s of %s taken at %s (%s)", snap.name, vol.name, path, "live" if live else "offline")

    def _make_copy_target(self, v: Volume) -> None:
        """A VM with this local volume migrates here: make the file its disk is copied into,
        the same size on the same base image (so only the volume's own layer is copied)."""
        mid = v.migration
        try:
            path = self.pools.make(replace(v, host=self.host))
        except (PoolError, OSError) as e:
            log.error("volume %s: copy target for %s: %s", v.name, mid, e)
            volumes.update(self.store, v.name, lambda x, why=f"{self.host} could not make the copy's file: {e}"[:300]:
                           replace(x, message=why) if x.migration == mid else None)
            return
        volumes.update(self.store, v.name, lambda x: replace(x, target_path=path)
                       if x.migration == mid and not x.target_path else None)
        log.info("volume %s: copy target for %s ready at %s", v.name, mid, path)
