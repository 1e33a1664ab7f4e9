"""ProjectService: projects and their quotas. Cluster admins make and delete projects and set
quotas; a project's callers read their own project and quota (another's is NOT_FOUND)."""
from __future__ import annotations

from vdcos.apiserver import convert, scope, validate
from vdcos.apiserver.common import Ctx, blocking, check_name
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc
from vdcos.model.project import QUOTA_FIELDS, UNLIMITED
from vdcos.projects import records as projects
from vdcos.v1 import project_service_pb2 as proj_pb
from vdcos.v1 import project_service_pb2_grpc as proj_grpc

MAX_LIMIT = 1 << 40


def _visible(name: str) -> None:
    check_name(name, "name")
    scope.current().check(name, f"project {name!r}")


class ProjectServicer(proj_grpc.ProjectServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.store = ops.store

    @rpc
    async def CreateProject(self, request: proj_pb.CreateProjectRequest,
                            context: Ctx) -> proj_pb.CreateProjectResponse:
        out: validate.Violations = []
        if not request.HasField("project"):
            out.append(("project", "is required"))
        else:
            validate.name(request.project.name, "project.name", out)
            if len(request.project.description) > 256:
                out.append(("project.description", "at most 256 characters"))
            if request.project.HasField("created_at"):
                out.append(("project.created_at", "is set by vdcos, not by a request"))
        validate.check(out)
        p, q = await blocking(projects.create, self.store, request.project.name, request.project.description)
        return proj_pb.CreateProjectResponse(project=convert.project_to_pb(p), quota=convert.quota_to_pb(q))

    @rpc
    async def GetProject(self, request: proj_pb.GetProjectRequest, context: Ctx) -> proj_pb.GetProjectResponse:
        _visible(request.name)
        p = await blocking(projects.get, self.store, request.name)
        q = await blocking(projects.quota, self.store, request.name)
        return proj_pb.GetProjectResponse(project=convert.project_to_pb(p), quota=convert.quota_to_pb(q))

    @rpc
    async def ListProjects(self, request: proj_pb.ListProjectsRequest, context: Ctx) -> proj_pb.ListProjectsResponse:
        sees = scope.current().sees
        return proj_pb.ListProjectsResponse(projects=[
            convert.project_to_pb(p) for p in await blocking(projects.list_projects, self.store) if sees(p.name)])

    @rpc
    async def DeleteProject(self, request: proj_pb.DeleteProjectRequest,
                            context: Ctx) -> proj_pb.DeleteProjectResponse:
        check_name(request.name)
        await blocking(projects.delete, self.store, request.name)
        return proj_pb.DeleteProjectResponse()

    @rpc
    async def GetQuota(self, request: proj_pb.GetQuotaRequest, context: Ctx) -> proj_pb.GetQuotaResponse:
        _visible(request.project)
        return proj_pb.GetQuotaResponse(quota=convert.quota_to_pb(
            await blocking(projects.quota, self.store, request.project)))

    @rpc
    async def SetQuota(self, request: proj_pb.SetQuotaRequest, context: Ctx) -> proj_pb.SetQuotaResponse:
        out: validate.Violations = []
        validate.name(request.project, "project", out)
        if not request.set:
            out.append(("set", f"name the limits to change: {', '.join(QUOTA_FIELDS)}"))
        limits: dict[str, int] = {}
        for i, f in enumerate(request.set):
            if f not in QUOTA_FIELDS:
                out.append((f"set[{i}]", f"{f[:40]!r} is not a quota; quotas: {', '.join(QUOTA_FIELDS)}"))
                continue
            v = getattr(request.limits, f)
            if not (v == UNLIMITED or 0 <= v <= MAX_LIMIT):
                out.append((f"limits.{f}", f"must be -1 (no limit) or between 0 and {MAX_LIMIT}, got {v}"))
            limits[f] = v
        validate.check(out)
        return proj_pb.SetQuotaResponse(quota=convert.quota_to_pb(
            await blocking(projects.set_limits, self.store, request.project, limits)))
