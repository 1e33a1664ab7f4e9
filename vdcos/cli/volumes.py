"""`vdcos volume ...` and `vdcos snapshot ...`."""
from __future__ import annotations

import argparse
from typing import Sequence

from vdcos.cli.common import Subparsers, UsageError, connect, emit, enum_name, table
from vdcos.v1 import volume_service_pb2 as vol_pb


def volume_rows(vols: Sequence[vol_pb.Volume]) -> str:
    return table(["NAME", "POOL", "SIZE_GIB", "HOST", "IMAGE", "VM", "STATE", "PATH"],
                 [[v.name, enum_name(vol_pb.PoolKind, v.pool, "POOL_KIND_"), v.size_gib, v.host, v.image or "-",
                   v.vm or "-", enum_name(vol_pb.VolumeState, v.state, "VOLUME_STATE_") + (f" ({v.message})" if v.message else ""),
                   v.path or "-"] for v in vols])


def cmd_volume(args: argparse.Namespace) -> int:
    with connect(args) as c:
        cmd = args.volume_command
        if cmd == "create":
            if not args.size_gib and not args.from_snapshot:
                raise UsageError("volume create: --size-gib is required (unless --from-snapshot)")
            # A restore's pool is the snapshot's unless asked (then it must match).
            if args.pool:
                pool = {"local": vol_pb.POOL_KIND_LOCAL, "shared": vol_pb.POOL_KIND_SHARED}[args.pool]
            else:
                pool = vol_pb.POOL_KIND_UNSPECIFIED if args.from_snapshot else vol_pb.POOL_KIND_LOCAL
            v = c.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
                name=args.name, pool=pool, size_gib=args.size_gib or 0, host=args.host or "", image=args.image or "",
                snapshot=args.from_snapshot or "", project=args.project or "")), timeout=args.timeout).volume
            emit(args, v, lambda: volume_rows([v]))
        elif cmd == "list":
            r = c.volumes.ListVolumes(vol_pb.ListVolumesRequest(vm=args.vm or "", host=args.host or "",
                                                                unattached=args.unattached, project=args.project or ""),
                                      timeout=args.timeout)
            emit(args, r, lambda: volume_rows(r.volumes))
        elif cmd == "show":
            g = c.volumes.GetVolume(vol_pb.GetVolumeRequest(name=args.name), timeout=args.timeout).volume
            emit(args, g, lambda: volume_rows([g]))
        elif cmd == "delete":
            c.volumes.DeleteVolume(vol_pb.DeleteVolumeRequest(name=args.name), timeout=args.timeout)
            if args.output != "json":
                print(f"deleted volume {args.name}")
        elif cmd == "attach":
            a = c.volumes.AttachVolume(vol_pb.AttachVolumeRequest(name=args.name, vm=args.vm),
                                       timeout=args.timeout).volume
            emit(args, a, lambda: volume_rows([a]))
        elif cmd == "detach":
            d = c.volumes.DetachVolume(vol_pb.DetachVolumeRequest(name=args.name), timeout=args.timeout).volume
            emit(args, d, lambda: volume_rows([d]))
        elif cmd == "resize":
            r2 = c.volumes.ResizeVolume(vol_pb.ResizeVolumeRequest(name=args.name, size_gib=args.size_gib),
                                        timeout=args.timeout).volume
            emit(args, r2, lambda: volume_rows([r2]))
        elif cmd == "pools":
            p = c.volumes.ListPools(vol_pb.ListPoolsRequest(), timeout=args.timeout)
            emit(args, p, lambda: table(["HOST", "POOL", "CAPACITY_GIB", "AVAILABLE_GIB", "VOLUMES", "PATH"], [
                [x.host, enum_name(vol_pb.PoolKind, x.kind, "POOL_KIND_"), f"{x.capacity_gib:.1f}",
                 f"{x.available_gib:.1f}", x.volumes, x.path] for x in p.pools]))
    return 0


def snapshot_rows(snaps: Sequence[vol_pb.Snapshot]) -> str:
    return table(["NAME", "VOLUME", "POOL", "SIZE_GIB", "HOST", "STATE", "LIVE", "PATH"],
                 [[x.name, x.volume, enum_name(vol_pb.PoolKind, x.pool, "POOL_KIND_"), x.size_gib, x.host,
                   enum_name(vol_pb.VolumeState, x.state, "VOLUME_STATE_") + (f" ({x.message})" if x.message else ""),
                   "yes" if x.live else "no", x.path or "-"] for x in snaps])


def cmd_snapshot(args: argparse.Namespace) -> int:
    with connect(args) as c:
        cmd = args.snapshot_command
        if cmd == "create":
            s = c.volumes.CreateSnapshot(vol_pb.CreateSnapshotRequest(snapshot=vol_pb.Snapshot(
                name=args.name, volume=args.volume)), timeout=args.timeout).snapshot
            emit(args, s, lambda: snapshot_rows([s]))
        elif cmd == "list":
            r = c.volumes.ListSnapshots(vol_pb.ListSnapshotsRequest(volume=args.volume or ""), timeout=args.timeout)
            emit(args, r, lambda: snapshot_rows(r.snapshots))
        elif cmd == "show":
            g = c.volumes.GetSnapshot(vol_pb.GetSnapshotRequest(name=args.name), timeout=args.timeout).snapshot
            emit(args, g, lambda: snapshot_rows([g]))
        elif cmd == "delete":
            c.volumes.DeleteSnapshot(vol_pb.DeleteSnapshotRequest(name=args.name), timeout=args.timeout)
            if args.output != "json":
                print(f"deleted snapshot {args.name}")
    return 0


def register(sub: Subparsers) -> None:
    vol = sub.add_parser("volume", help="volumes in the hosts' local pools and the shared pool")
    vsub = vol.add_subparsers(dest="volume_command", required=True)
    vc = vsub.add_parser("create")
    vc.add_argument("name")
    vc.add_argument("--size-gib", type=int, help="required unless --from-snapshot (default: the snapshot's)")
    vc.add_argument("--pool", choices=["local", "shared"],
                    help="local (default) ties its VM to the volume's host; shared does not")
    vc.add_argument("--from-snapshot", metavar="SNAPSHOT", help="restore: start with this snapshot's content")
    vc.add_argument("--host", help="default: the ready host with the most free disk")
    vc.add_argument("--project", help="the project that owns it (a project's token: its own)")
    vc.add_argument("--image", help="start from this base image (copy-on-write), e.g. pattern")
    vl = vsub.add_parser("list")
    vl.add_argument("--vm")
    vl.add_argument("--host")
    vl.add_argument("--project", help="only this project's")
    vl.add_argument("--unattached", action="store_true",
                    help="only the volumes no VM owns (each still holds its pool's space)")
    vsub.add_parser("show").add_argument("name")
    vsub.add_parser("delete").add_argument("name")
    va = vsub.add_parser("attach", help="attach to a VM (hot-plugged if it runs)")
    va.add_argument("name")
    va.add_argument("vm")
    vsub.add_parser("detach", help="take from its VM (hot-unplugged if it runs)").add_argument("name")
    vr = vsub.add_parser("resize", help="grow (a running guest sees its disk grow)")
    vr.add_argument("name")
    vr.add_argument("--size-gib", type=int, required=True)
    vsub.add_parser("pools", help="each host's pools: capacity and free space")
    vol.set_defaults(fn=cmd_volume)

    snap = sub.add_parser("snapshot", help="point-in-time copies of volumes (restore: volume create --from-snapshot)")
    ssub = snap.add_subparsers(dest="snapshot_command", required=True)
    sc = ssub.add_parser("create", help="copy a volume now (a running guest keeps running)")
    sc.add_argument("name")
    sc.add_argument("--volume", required=True)
    ssub.add_parser("list").add_argument("--volume")
    ssub.add_parser("show").add_argument("name")
    ssub.add_parser("delete").add_argument("name")
    snap.set_defaults(fn=cmd_snapshot)

