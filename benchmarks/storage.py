"""Copy-storage live migration between two real libvirt hosts, through the gRPC API.

    python -m benchmarks.storage --runs 3 --json FILE

Brings up its own local datacenter (etcd, scheduler, two libvirt hosts with their agents) and
boots a 256 MiB guest on a blank 1 GiB local volume. The guest fills the first half of its
disk with random data, then reads that half back in a loop and prints its md5. The VM is then
live-migrated back and forth `--runs` times, its disk copied each time (libvirt NON_SHARED_INC:
the destination's file is made first, QEMU mirrors the volume while the guest runs).

Integrity is checked in two ways:
- after every hop, the guest's md5 from a read that started on the destination must equal its
  first one;
- at the end, with the VM deleted (its QEMU flushed and closed the file), the SHA-256 of the
  whole disk must equal the one taken on the first host before any move.

Baseline, in the same run: the same guest on a 1 GiB volume in the shared pool, migrated as
often with nothing copied. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import emit, med, wait
from vdcos.cli.client import Client
from vdcos.cli.localdc import down, host_root, up
from vdcos.host.libvirtd import LibvirtHost
from vdcos.images import disk_sums, ensure
from vdcos.nodeagent.libvirt.domain import read_console
from vdcos.storagepool.images import content_digest
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import volume_service_pb2 as vol_pb

MIB = 1024 * 1024


class Bench:
    def __init__(self, c: Client, home: Path) -> None:
        self.c = c
        self.home = home

    def console(self, node: str, vm: str) -> str:
        return read_console(host_root(self.home, node), vm)

    def volume(self, name: str) -> vol_pb.Volume:
        return self.c.volumes.GetVolume(vol_pb.GetVolumeRequest(name=name)).volume

    def node_of(self, vm: str) -> str:
        return self.c.vms.GetVm(vm_pb.GetVmRequest(name=vm)).vm.placement.node

    def boot_filled(self, vm: str, pool: int, disk_gib: int) -> tuple[str, float]:
        """A disk-fill guest on a new volume; returns its first md5 and the fill's seconds."""
        self.c.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
            name=vm, pool=pool, size_gib=disk_gib, host="host-1")))
        wait(lambda: self.volume(vm).state == vol_pb.VOLUME_STATE_AVAILABLE, 60, f"volume {vm}")
        spec = pb.VmSpec(name=vm, image="disk-fill", volumes=[vm],
                         resources=pb.Resources(vcpus=1, memory_mib=256, network_mbps=10))
        node = self.c.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec)).vm.placement.node
        wait(lambda: "DISK vda" in self.console(node, vm), 180, f"{vm} booted")
        t0 = time.monotonic()
        wait(lambda: "DISKFILL" in self.console(node, vm), 900, f"{vm} filled its disk")
        fill_s = time.monotonic() - t0
        return wait(lambda: disk_sums(self.console(node, vm)), 300, f"{vm} read its disk back")[0], fill_s

    def hops(self, vm: str, runs: int, md5: str) -> list[dict[str, Any]]:
        out = []
        for _ in range(runs):
            src = self.node_of(vm)
            dst = "host-2" if src == "host-1" else "host-1"
            seen = len(self.console(dst, vm))  # an earlier hop may have left lines there
            t0 = time.monotonic()
            m = self.c.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm=vm, target_node=dst)).migration
            last = m
            for ev in self.c.migrations.WatchMigration(mig_pb.WatchMigrationRequest(id=m.id), timeout=600):
                last = ev.migration
            api_ms = (time.monotonic() - t0) * 1000
            ok = last.phase == mig_pb.MIGRATION_PHASE_COMPLETED
            same = False
            if ok:
                got = wait(lambda: disk_sums(self.console(dst, vm)[seen:]), 300, f"{vm} read its disk on {dst}")
                same = got[0] == md5
                wait(lambda: self.c.vms.GetVm(vm_pb.GetVmRequest(name=vm)).vm.status.node == dst, 30, "adopted")
            out.append({"ok": ok, "integrity_ok": same, "migrate_ms": last.total_ms, "api_ms": api_ms,
                        "downtime_ms": last.downtime_ms, "message": last.message})
        return out

    def snapshot(self, volume: str, name: str) -> tuple[float, vol_pb.Snapshot]:
        """Milliseconds from the request until the snapshot is available, and the snapshot."""
        t0 = time.monotonic()
        self.c.volumes.CreateSnapshot(vol_pb.CreateSnapshotRequest(snapshot=vol_pb.Snapshot(name=name, volume=volume)))

        def done() -> vol_pb.Snapshot | None:
            snap = self.c.volumes.GetSnapshot(vol_pb.GetSnapshotRequest(name=name)).snapshot
            return snap if snap.state != vol_pb.VOLUME_STATE_CREATING else None
        snap = wait(done, 600, f"snapshot {name}")
        if snap.state != vol_pb.VOLUME_STATE_AVAILABLE:
            raise RuntimeError(f"snapshot {name} failed: {snap.message}")
        return (time.monotonic() - t0) * 1000, snap

    def final_digest(self, vm: str) -> str:
        """The disk's SHA-256 once the VM is gone (keep_volumes): every byte flushed and closed."""
        node = self.node_of(vm)
        self.c.vms.DeleteVm(vm_pb.DeleteVmRequest(name=vm, keep_volumes=True))
        wait(lambda: vm not in LibvirtHost.load(host_root(self.home, node)).domains(), 60, f"{vm}'s domain gone from {node}")
        return content_digest(self.volume(vm).path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.storage")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--disk-gib", type=int, default=1)
    ap.add_argument("--no-baseline", action="store_true", help="skip the shared-pool baseline")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    ensure()
    home = Path(tempfile.mkdtemp(prefix="vdcos-storagebench-"))
    try:
        dc = up(home, 2, "libvirt", {"vcpus": 4, "memory_mib": 4096, "disk_gib": 100, "network_mbps": 1000})
        with dc.client() as c:
            b = Bench(c, home)
            # One guest at a time: on two cores a busy neighbour would be what is measured.
            md5, fill_s = b.boot_filled("copied", vol_pb.POOL_KIND_LOCAL, args.disk_gib)
            first = b.volume("copied")
            before = content_digest(first.path)  # the guest flushed after filling it
            copied = b.hops("copied", args.runs, md5)
            live_ms, live = b.snapshot("copied", "copied-live")  # the guest runs on meanwhile
            after = b.final_digest("copied")
            offline_ms, offline = b.snapshot("copied", "copied-offline")
            snaps_ok = content_digest(live.path) == after == content_digest(offline.path)
            shared: list[dict[str, Any]] = []
            if not args.no_baseline:
                smd5, _ = b.boot_filled("shared", vol_pb.POOL_KIND_SHARED, args.disk_gib)
                shared = b.hops("shared", args.runs, smd5)
        written_mib = args.disk_gib * 1024 // 2
        result: dict[str, Any] = {
            "benchmark": "storage",
            "runs": args.runs,
            "disk_gib": args.disk_gib,
            "written_mib": written_mib,
            "guest_memory_mib": 256,
            "failures": sum(not r["ok"] for r in copied + shared),
            "migrate_ms_median": med(copied, "migrate_ms"),
            "migrate_ms_max": max((r["migrate_ms"] for r in copied if r["ok"]), default=None),
            "downtime_ms_median": med(copied, "downtime_ms"),
            "api_ms_median": med(copied, "api_ms"),
            "guest_fill_s": round(fill_s, 1),
            "integrity_guest_md5_ok": all(r["integrity_ok"] for r in copied),
            "integrity_sha256_ok": before == after,
            "snapshot_live_ms": round(live_ms),
            "snapshot_offline_ms": round(offline_ms),
            "snapshot_integrity_ok": snaps_ok,
            "shared_migrate_ms_median": med(shared, "migrate_ms"),
            "shared_downtime_ms_median": med(shared, "downtime_ms"),
            "failure_messages": sorted({r["message"] for r in copied + shared if not r["ok"]}),
        }
        result["integrity_ok"] = (result["failures"] == 0 and result["integrity_guest_md5_ok"]
                                  and result["integrity_sha256_ok"] and snaps_ok)
        ms = result["migrate_ms_median"]
        # What a copy-storage hop moves on top of the guest's memory: the volume's written data.
        result["throughput_mib_s"] = round(written_mib / (ms / 1000), 1) if ms else None
        if ms and result["shared_migrate_ms_median"]:
            result["copy_vs_shared_migrate_ms"] = round(ms / result["shared_migrate_ms_median"], 2)
        emit(result, args.json)
        return 0 if result["integrity_ok"] else 1
    finally:
        down(home, purge=True, keep_logs=False)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
