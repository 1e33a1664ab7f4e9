"""A host's storage pools, and the agent-side reconciler that makes etcd's volume records true
on disk.

`StoragePools` is the small protocol the reconciler needs; `LibvirtPools` implements it with the
host's own libvirtd (dir pools: `local` in the host's folder, `shared` in a folder every host of
the datacenter sees), `SimPools` without any file for the `sim` driver's simulated hosts.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from vdcos.model import PoolKind, PoolStatus, Volume, VolumeState, dumps
from vdcos.state import keys
from vdcos.state.store import Put, Store
from vdcos.storagepool import images, volumes

log = logging.getLogger("vdcos.storagepool")
GIB = 1024 ** 3


class PoolError(Exception):
    pass


class StoragePools(Protocol):
    def status(self) -> list[PoolStatus]: ...
    def make(self, vol: Volume) -> str: ...
    def remove(self, path: str) -> None: ...
    def files(self, pool: PoolKind) -> dict[str, str]: ...   # volume name -> path
    def grow(self, vol: Volume) -> None: ...                  # a file no QEMU has open


def volume_file(directory: Path, name: str) -> Path:
    return directory / f"{name}.qcow2"


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
        d = self.dirs.get(kind)
        if d is None or not d.exists():
            return {}
        return {p.name[:-len(".qcow2")]: str(p) for p in d.glob("*.qcow2")}


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
        return {k: v for k, v in self._made.items() if v.startswith(f"sim://{kind.value}/")}

    def grow(self, vol: Volume) -> None:
        self.grown[vol.name] = vol.size_gib


class VolumeReconciler:
    """Run by the agent after every change under /vdcos/volumes/ and every resync period:
    makes the files of volumes recorded on this host, removes the files no record owns (local
    pool; a shared file is removed by the host that made it), and reports the pools."""

    def __init__(self, store: Store, host: str, pools: StoragePools, lease: Callable[[], int]) -> None:
        self.store = store
        self.host = host
        self.pools = pools
        self.lease = lease
        self._published: tuple[int, list[PoolStatus]] = (0, [])
        self._sizes: dict[str, int] = {}  # volume -> GiB its file was checked to have

    def sync(self) -> None:
        vols = {v.name: v for v in volumes.list_volumes(self.store)}
        for v in vols.values():
            if v.host != self.host or v.state is not VolumeState.CREATING:
                continue
            try:
                path = self.pools.make(v)
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
                  and self._sizes.get(v.name) != v.size_gib):
                # Resized while no VM had it: grown here (an attached one grows through its QEMU).
                try:
                    self.pools.grow(v)
                    self._sizes[v.name] = v.size_gib
                except (PoolError, OSError) as e:
                    log.error("volume %s: %s", v.name, e)
        for kind in (PoolKind.LOCAL, PoolKind.SHARED):
            for name, path in self.pools.files(kind).items():
                v = vols.get(name)
                # Every host sees the shared folder: any of them may remove an orphan there.
                owned = v is not None and v.pool is kind and (
                    v.host == self.host or v.moving_to == self.host or kind is PoolKind.SHARED)
                if owned:
                    continue
                self.pools.remove(path)
                log.info("removed %s: no volume record owns it", path)
        status, lease = self.pools.status(), self.lease()
        if (lease, status) != self._published:  # only changes: every host does this every resync
            self.store.txn([], [Put(keys.pool(self.host, s.pool.value), dumps(s), lease) for s in status])
            self._published = (lease, status)

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
