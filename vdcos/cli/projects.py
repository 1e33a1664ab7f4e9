"""`vdcos project create | list | show | delete` and `vdcos quota set | show`: tenants and their
quotas. Admins make projects and set quotas; a project's callers see their own."""
from __future__ import annotations

import argparse

from vdcos.cli.common import Subparsers, UsageError, connect, emit, table, when
from vdcos.model.project import QUOTA_FIELDS, UNLIMITED
from vdcos.v1 import project_service_pb2 as proj_pb

FLAGS = {f: f"--{f.replace('_', '-')}" for f in QUOTA_FIELDS}


def quota_lines(q: proj_pb.Quota) -> str:
    def limit(v: int) -> str:
        return "unlimited" if v == UNLIMITED else str(v)
    return table(["QUOTA", "USED", "LIMIT"], [[f, getattr(q.used, f), limit(getattr(q.limits, f))]
                                              for f in QUOTA_FIELDS])


def cmd_project(args: argparse.Namespace) -> int:
    with connect(args) as c:
        if args.project_command == "create":
            r = c.projects.CreateProject(proj_pb.CreateProjectRequest(project=proj_pb.Project(
                name=args.name, description=args.description)), timeout=args.timeout)
            emit(args, r, lambda: f"project {r.project.name} created (no quota limits yet: `vdcos quota set`)")
        elif args.project_command == "list":
            lr = c.projects.ListProjects(proj_pb.ListProjectsRequest(), timeout=args.timeout)
            emit(args, lr, lambda: table(["NAME", "CREATED", "DESCRIPTION"], [
                [p.name, when(p.created_at), p.description] for p in lr.projects]))
        elif args.project_command == "show":
            g = c.projects.GetProject(proj_pb.GetProjectRequest(name=args.name), timeout=args.timeout)
            emit(args, g, lambda: f"project {g.project.name}  created {when(g.project.created_at)}"
                 + (f"\n  {g.project.description}" if g.project.description else "") + "\n" + quota_lines(g.quota))
        else:
            c.projects.DeleteProject(proj_pb.DeleteProjectRequest(name=args.name), timeout=args.timeout)
            print(f"project {args.name} deleted; its tokens are revoked")
    return 0


def cmd_quota(args: argparse.Namespace) -> int:
    with connect(args) as c:
        if args.quota_command == "show":
            r = c.projects.GetQuota(proj_pb.GetQuotaRequest(project=args.project), timeout=args.timeout)
            emit(args, r, lambda: f"project {r.quota.project}\n" + quota_lines(r.quota))
            return 0
        limits: dict[str, int] = {}
        for f, flag in FLAGS.items():
            v = getattr(args, f)
            if v is None:
                continue
            if v == "unlimited":
                limits[f] = UNLIMITED
            elif v.isdigit():
                limits[f] = int(v)
            else:
                raise UsageError(f"{flag}: expected a number or 'unlimited', got {v!r}")
        if not limits:
            raise UsageError(f"quota set: name at least one limit ({', '.join(FLAGS.values())})")
        s = c.projects.SetQuota(proj_pb.SetQuotaRequest(project=args.project, limits=proj_pb.QuotaAmounts(**limits),
                                                        set=list(limits)), timeout=args.timeout)
        emit(args, s, lambda: f"project {s.quota.project}\n" + quota_lines(s.quota))
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("project", help="projects (tenants): each owns its VMs, networks, volumes and migrations")
    psub = p.add_subparsers(dest="project_command", required=True)
    cr = psub.add_parser("create", help="a new project (admins)")
    cr.add_argument("name")
    cr.add_argument("--description", default="")
    psub.add_parser("list", help="the projects the caller may see")
    sh = psub.add_parser("show", help="a project and its quota")
    sh.add_argument("name")
    rm = psub.add_parser("delete", help="delete an empty project and revoke its tokens (admins)")
    rm.add_argument("name")
    p.set_defaults(fn=cmd_project)

    q = sub.add_parser("quota", help="a project's quota: limits and use")
    qsub = q.add_subparsers(dest="quota_command", required=True)
    qs = qsub.add_parser("show", help="limits and what is in use")
    qs.add_argument("project")
    qset = qsub.add_parser("set", help="change limits (admins); a number, or 'unlimited'")
    qset.add_argument("project")
    for f, flag in FLAGS.items():
        qset.add_argument(flag, dest=f, metavar="N", help=f"limit of {f.replace('_', ' ')}")
    q.set_defaults(fn=cmd_quota)
