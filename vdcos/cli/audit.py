"""`vdcos audit`: the audit log, newest first: who changed what, when, and how it ended."""
from __future__ import annotations

import argparse
import datetime
import time

from vdcos.cli.common import Subparsers, connect, emit, table
from vdcos.cli.tokens import seconds
from vdcos.v1 import audit_service_pb2 as audit_pb


def cmd_audit(args: argparse.Namespace) -> int:
    req = audit_pb.ListAuditEntriesRequest(limit=args.limit, who=args.who or "", project=args.project or "",
                                           failed_only=args.failed)
    req.since.FromSeconds(int(time.time()) - seconds(args.since))
    with connect(args) as c:
        r = c.audit.ListAuditEntries(req, timeout=args.timeout)
    emit(args, r, lambda: table(["WHEN", "WHO", "ROLE", "CALL", "TARGET", "OUTCOME"], [
        [datetime.datetime.fromtimestamp(e.at.ToSeconds()).strftime("%Y-%m-%d %H:%M:%S"), e.who, f"{e.role}@{e.project}" if e.project else e.role,
         e.method.rsplit("/", 1)[-1], e.target or "-", e.code + (f": {e.message[:80]}" if e.message else "")]
        for e in r.entries]))
    return 0


def register(sub: Subparsers) -> None:
    a = sub.add_parser("audit", help="the audit log: every change anyone made or tried (admins and readers)")
    a.add_argument("--since", default="24h", help="how far back: 3600, 15m, 24h, 7d (default 24h)")
    a.add_argument("--limit", type=int, default=100, help="newest first, at most this many (default 100)")
    a.add_argument("--who", help="only this caller's (user:admin, token:tok-...(name))")
    a.add_argument("--project", help="only calls by this project's tokens")
    a.add_argument("--failed", action="store_true", help="only the calls that did not end OK")
    a.set_defaults(fn=cmd_audit)
