"""UsageService: metered usage per VM and per project (controllers/metering.py keeps it)."""
from __future__ import annotations

from vdcos.apiserver import scope, validate
from vdcos.apiserver.common import Ctx, blocking
from vdcos.apiserver.convert import ts
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc
from vdcos.controllers.metering import usage_records
from vdcos.model import Amounts
from vdcos.v1 import usage_service_pb2 as use_pb
from vdcos.v1 import usage_service_pb2_grpc as use_grpc


def amounts_to_pb(a: Amounts) -> use_pb.UsageAmounts:
    return use_pb.UsageAmounts(vcpu_reserved_seconds=a.vcpu_reserved_s, vcpu_used_seconds=a.vcpu_used_s,
                               memory_gib_seconds=a.memory_gib_s, disk_gib_seconds=a.disk_gib_s,
                               network_bytes=max(0, int(a.network_bytes)))


class UsageServicer(use_grpc.UsageServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def GetUsage(self, request: use_pb.GetUsageRequest, context: Ctx) -> use_pb.GetUsageResponse:
        out: validate.Violations = []
        validate.name(request.project, "project", out, required=False)
        validate.name(request.vm, "vm", out, required=False)
        validate.check(out)
        project = scope.current().owner(request.project) if request.project or scope.current().project else None
        since = request.since.ToSeconds() if request.HasField("since") else None
        vms = []
        sums: dict[tuple[str, str], tuple[int, Amounts]] = {}
        for u in sorted(await blocking(usage_records, self.ops.store), key=lambda u: (u.project, u.vm)):
            if (project is not None and u.project != project) or (request.vm and u.vm != request.vm):
                continue
            a = u.total if since is None else u.since(since)
            m = use_pb.VmUsage(vm=u.vm, project=u.project, qos_class=u.qos_class, metered_from=ts(u.created_at),
                               metered_to=ts(u.metered_to), amounts=amounts_to_pb(a))
            if u.deleted_at:
                m.deleted_at.CopyFrom(ts(u.deleted_at))
            vms.append(m)
            n, total = sums.get((u.project, u.qos_class), (0, Amounts()))
            sums[(u.project, u.qos_class)] = (n + 1, total.plus(a))
        return use_pb.GetUsageResponse(vms=vms, projects=[
            use_pb.ProjectUsage(project=p, qos_class=q, vms=n, amounts=amounts_to_pb(a))
            for (p, q), (n, a) in sorted(sums.items())])
