"""VolumeService: pools, volumes and snapshots."""
from __future__ import annotations

from vdcos.apiserver import convert, scope, validate
from vdcos.apiserver.common import Ctx, blocking, check_name
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc
from vdcos.errors import FailedPrecondition
from vdcos.model import Snapshot, Volume
from vdcos.v1 import volume_service_pb2 as vol_pb
from vdcos.v1 import volume_service_pb2_grpc as vol_grpc


class VolumeServicer(vol_grpc.VolumeServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def CreateVolume(self, request: vol_pb.CreateVolumeRequest, context: Ctx) -> vol_pb.CreateVolumeResponse:
        validate.check(validate.volume(request.volume) if request.HasField("volume") else [("volume", "is required")])
        v = request.volume
        project = scope.current().owner(v.project)
        return vol_pb.CreateVolumeResponse(volume=convert.volume_to_pb(await blocking(
            self.ops.create_volume, v.name, convert.POOL_KIND_FROM_PB.get(v.pool), v.size_gib, v.host, v.image,
            v.snapshot, project)))

    async def _volume(self, name: str) -> Volume:
        """The volume, if the caller may see it (else NOT_FOUND, as for a missing one)."""
        v = await blocking(self.ops.get_volume, name)
        scope.current().check(v.project, f"volume {name!r}")
        return v

    async def _snapshot(self, name: str) -> Snapshot:
        s = await blocking(self.ops.get_snapshot, name)
        scope.current().check(s.project, f"snapshot {name!r}")
        return s

    @rpc
    async def GetVolume(self, request: vol_pb.GetVolumeRequest, context: Ctx) -> vol_pb.GetVolumeResponse:
        check_name(request.name)
        return vol_pb.GetVolumeResponse(volume=convert.volume_to_pb(await self._volume(request.name)))

    @rpc
    async def ListVolumes(self, request: vol_pb.ListVolumesRequest, context: Ctx) -> vol_pb.ListVolumesResponse:
        if request.vm:
            check_name(request.vm, "vm")
        if request.host:
            check_name(request.host, "host")
        if request.project:
            check_name(request.project, "project")
        vols = await blocking(self.ops.list_volumes, request.vm, request.host)
        sees = scope.current().sees
        return vol_pb.ListVolumesResponse(volumes=[
            convert.volume_to_pb(v) for v in vols if not (request.unattached and v.vm) and sees(v.project)
            and (not request.project or v.project == request.project)])

    @rpc
    async def AttachVolume(self, request: vol_pb.AttachVolumeRequest, context: Ctx) -> vol_pb.AttachVolumeResponse:
        check_name(request.name)
        check_name(request.vm, "vm")
        vol = await self._volume(request.name)
        vm = await blocking(self.ops.get_vm, request.vm)
        if vm.spec.project != vol.project:  # a VM of another project, or one the caller cannot see
            scope.current().check(vm.spec.project, f"vm {request.vm!r}")
            raise FailedPrecondition(f"volume {request.name} is project {vol.project or '(none)'}'s and vm "
                                     f"{request.vm} project {vm.spec.project or '(none)'}'s: a VM takes its "
                                     "own project's volumes")
        return vol_pb.AttachVolumeResponse(volume=convert.volume_to_pb(
            await blocking(self.ops.attach_volume, request.name, request.vm)))

    @rpc
    async def DetachVolume(self, request: vol_pb.DetachVolumeRequest, context: Ctx) -> vol_pb.DetachVolumeResponse:
        check_name(request.name)
        await self._volume(request.name)
        return vol_pb.DetachVolumeResponse(volume=convert.volume_to_pb(
            await blocking(self.ops.detach_volume, request.name)))

    @rpc
    async def ResizeVolume(self, request: vol_pb.ResizeVolumeRequest, context: Ctx) -> vol_pb.ResizeVolumeResponse:
        check_name(request.name)
        validate.check(validate.volume_size(request.size_gib, "size_gib"))
        await self._volume(request.name)
        return vol_pb.ResizeVolumeResponse(volume=convert.volume_to_pb(
            await blocking(self.ops.resize_volume, request.name, request.size_gib)))

    @rpc
    async def DeleteVolume(self, request: vol_pb.DeleteVolumeRequest, context: Ctx) -> vol_pb.DeleteVolumeResponse:
        check_name(request.name)
        await self._volume(request.name)
        await blocking(self.ops.delete_volume, request.name)
        return vol_pb.DeleteVolumeResponse()

    @rpc
    async def ListPools(self, request: vol_pb.ListPoolsRequest, context: Ctx) -> vol_pb.ListPoolsResponse:
        return vol_pb.ListPoolsResponse(pools=[convert.pool_to_pb(p) for p in await blocking(self.ops.pools)])

    @rpc
    async def CreateSnapshot(self, request: vol_pb.CreateSnapshotRequest,
                             context: Ctx) -> vol_pb.CreateSnapshotResponse:
        validate.check(validate.snapshot(request.snapshot) if request.HasField("snapshot")
                       else [("snapshot", "is required")])
        await self._volume(request.snapshot.volume)
        return vol_pb.CreateSnapshotResponse(snapshot=convert.snapshot_to_pb(await blocking(
            self.ops.create_snapshot, request.snapshot.name, request.snapshot.volume)))

    @rpc
    async def GetSnapshot(self, request: vol_pb.GetSnapshotRequest, context: Ctx) -> vol_pb.GetSnapshotResponse:
        check_name(request.name)
        return vol_pb.GetSnapshotResponse(snapshot=convert.snapshot_to_pb(await self._snapshot(request.name)))

    @rpc
    async def ListSnapshots(self, request: vol_pb.ListSnapshotsRequest, context: Ctx) -> vol_pb.ListSnapshotsResponse:
        if request.volume:
            check_name(request.volume, "volume")
        sees = scope.current().sees
        return vol_pb.ListSnapshotsResponse(snapshots=[convert.snapshot_to_pb(s) for s in
                                                       await blocking(self.ops.list_snapshots, request.volume)
                                                       if sees(s.project)])

    @rpc
    async def DeleteSnapshot(self, request: vol_pb.DeleteSnapshotRequest,
                             context: Ctx) -> vol_pb.DeleteSnapshotResponse:
        check_name(request.name)
        await self._snapshot(request.name)
        await blocking(self.ops.delete_snapshot, request.name)
        return vol_pb.DeleteSnapshotResponse()
