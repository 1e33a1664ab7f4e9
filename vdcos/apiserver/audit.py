"""The audit log: every mutating call an identified caller makes (the table's verbs other than
get, list and watch), refused or not: who, what, on which object, when, and how it ended. The
interceptor (authz.py) records each in a journal (state/journal.py: written in batches, off the
calls' path, under `/vdcos/audit/<UTC hour>/`; whole hours dropped once older than the
retention, `--audit-retention`, 7 days by default).

Calls without a valid credential are not recorded here (they name nobody, and recording them
would let anyone fill etcd); the daemon's log has them. When the queue is full (etcd is down
for long), entries are dropped and the next written entry says how many. AuditService (and
`vdcos audit`) reads them back, newest first."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from typing import Any

from vdcos.apiserver import validate
from vdcos.apiserver.common import Ctx, blocking
from vdcos.apiserver.convert import ts
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc
from vdcos.model import AuditEntry, decode
from vdcos.state import keys
from vdcos.state.journal import Journal, newest
from vdcos.state.store import Store
from vdcos.v1 import audit_service_pb2 as audit_pb
from vdcos.v1 import audit_service_pb2_grpc as audit_grpc

log = logging.getLogger(__name__)

RETENTION_S = 7 * 86400
_TARGET_FIELDS = ("name", "vm", "accessor", "id", "project", "network")
_NESTED = ("spec", "network", "volume", "snapshot", "policy", "project")


def target_of(request: Any) -> str:
    """What a request names, for the log: its object's name, or how many in a batch."""
    if request is None or not hasattr(request, "DESCRIPTOR"):
        return "(stream)"
    fields = request.DESCRIPTOR.fields_by_name
    if "requests" in fields:
        return f"{len(request.requests)} items"
    for f in _NESTED:
        if f in fields and fields[f].message_type is not None and request.HasField(f):
            got = target_of(getattr(request, f))
            if got:
                return got
    for f in _TARGET_FIELDS:
        if f in fields and fields[f].message_type is None and getattr(request, f):
            return str(getattr(request, f))[:128]
    return ""


class AuditLog(Journal[AuditEntry]):
    def __init__(self, store: Store, replica: str = "", retention_s: float = RETENTION_S) -> None:
        super().__init__(store, keys.AUDIT, retention_s, on_dropped=_lost, name="audit")
        self.replica = replica


def _lost(last: AuditEntry, n: int) -> AuditEntry:
    return replace(last, message=f"{last.message} [{n} audit entries before this one were lost]".strip())


def entries(store: Store, since: float, until: float, limit: int) -> list[AuditEntry]:
    """The newest entries between `since` and `until`, newest first, at most `limit`."""
    return [e for _, e in newest(store, keys.AUDIT, since, until, limit,
                                 lambda raw: decode(AuditEntry, json.loads(raw)))]


MAX_LIST = 10_000


class AuditServicer(audit_grpc.AuditServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.store = ops.store

    @rpc
    async def ListAuditEntries(self, request: audit_pb.ListAuditEntriesRequest,
                               context: Ctx) -> audit_pb.ListAuditEntriesResponse:
        out: validate.Violations = []
        if request.limit > MAX_LIST:
            out.append(("limit", f"at most {MAX_LIST}, got {request.limit}"))
        now = time.time()
        until = request.until.ToSeconds() if request.HasField("until") else now
        since = request.since.ToSeconds() if request.HasField("since") else until - 86400
        if since > until:
            out.append(("since", "must not be after until"))
        if until - since > 366 * 86400:
            out.append(("since", "at most a year before until"))
        validate.name(request.project, "project", out, required=False)
        if len(request.who) > 200:
            out.append(("who", "at most 200 characters"))
        validate.check(out)
        limit = request.limit or 100
        got = await blocking(entries, self.store, since, until, limit if not (request.who or request.project
                                                                                or request.failed_only) else MAX_LIST)
        keep = [e for e in got if (not request.who or e.who == request.who)
                and (not request.project or e.project == request.project)
                and (not request.failed_only or e.code != "OK")][:limit]
        return audit_pb.ListAuditEntriesResponse(entries=[audit_pb.AuditEntry(
            at=ts(e.at), who=e.who, role=e.role, project=e.project, method=e.method, resource=e.resource,
            verb=e.verb, target=e.target, code=e.code, message=e.message, replica=e.replica) for e in keep])
