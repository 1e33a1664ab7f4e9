"""`vdcos dashboard`: a link to the local datacenter's web dashboard that signs its opener in, as
`nomad ui -authenticate` does. The link carries a new short-lived token in its fragment (after
`#`), which browsers never send to a server; the page moves it to the tab's sessionStorage and
drops it from the address bar."""
from __future__ import annotations

import argparse
import getpass
import urllib.parse
from pathlib import Path

from vdcos.cli import localdc
from vdcos.cli.common import Subparsers, UsageError, connect
from vdcos.cli.tokens import seconds
from vdcos.security.tokens import CLUSTER_ROLES, PROJECT_ROLES
from vdcos.v1 import token_service_pb2 as tok_pb


def cmd_dashboard(args: argparse.Namespace) -> int:
    dc = localdc.LocalDatacenter.load(Path(args.home))
    url = args.url or (dc.dashboard if dc else "")
    if not url:
        raise UsageError("no dashboard: no local datacenter is up here (`vdcos up`), and no --url was given")
    if dc is not None and dc.insecure and not args.url:
        print(f"{url}  (an --insecure datacenter: the page asks for no token)")
        return 0
    if args.role == "bootstrap":
        raise UsageError("--role: bootstrap tokens are for `vdcos join`, not for the dashboard")
    with connect(args) as c:
        r = c.tokens.CreateToken(tok_pb.CreateTokenRequest(
            name=args.name or f"dashboard-{getpass.getuser()}", role=args.role, project=args.project or "",
            ttl_seconds=seconds(args.ttl)), timeout=args.timeout)
    print(f"{url.rstrip('/')}/#token={urllib.parse.quote(r.secret, safe='')}")
    print(f"(signs in as token {r.token.accessor}, role {args.role}"
          f"{f' in project {args.project}' if args.project else ''}, for {args.ttl}; "
          f"`vdcos token revoke {r.token.accessor}` ends it sooner)")
    return 0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("dashboard", help="a link to the web dashboard that signs you in with a new short-lived token")
    p.add_argument("--role", default="admin", choices=sorted((set(CLUSTER_ROLES) - {"bootstrap"}) | set(PROJECT_ROLES)),
                   help="the token's role (default admin); with --project, a role in that project")
    p.add_argument("--project", help="a role in this project")
    p.add_argument("--ttl", default="8h", help="the token's lifetime (default 8h)")
    p.add_argument("--name", help="who holds the token (default dashboard-<user>)")
    p.add_argument("--url", help="the dashboard's URL (default: the local datacenter's, from cluster.json)")
    p.set_defaults(fn=cmd_dashboard)
