"""The audit log: every mutating call an identified caller makes (the table's verbs other than
get, list and watch), refused or not: who, what, on which object, when, and how it ended. The
interceptor (authz.py) records each; a writer thread puts them in etcd in batches, off the
calls' path, under `/vdcos/audit/<UTC hour>/`, and drops whole hours once they are older than
the retention (`--audit-retention`, 7 days by default) with one prefix delete each.

Calls without a valid credential are not recorded here (they name nobody, and recording them
would let anyone fill etcd); the daemon's log has them. When the queue is full (etcd is down
for long), entries are dropped and the next written entry says how many. AuditService (and
`vdcos audit`) reads them back, newest first."""
from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
from dataclasses import replace
from typing import Any

from vdcos.apiserver import validate
from vdcos.apiserver.common import Ctx, blocking
from vdcos.apiserver.convert import ts
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc
from vdcos.model import AuditEntry, decode, dumps
from vdcos.state import keys
from vdcos.state.store import Delete, Put, Store, StoreError
from vdcos.v1 import audit_service_pb2 as audit_pb
from vdcos.v1 import audit_service_pb2_grpc as audit_grpc

log = logging.getLogger(__name__)

RETENTION_S = 7 * 86400
QUEUE_MAX = 10_000
BATCH = 100          # puts per transaction (etcd allows 128 operations in one)
FLUSH_S = 0.2
TRIM_EVERY_S = 300.0
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


class AuditLog:
    def __init__(self, store: Store, replica: str = "", retention_s: float = RETENTION_S) -> None:
        self.store = store
        self.replica = replica
        self.retention_s = retention_s
        self.dropped = 0
        self._queue: queue.Queue[AuditEntry] = queue.Queue(QUEUE_MAX)
        self._stop = threading.Event()
        self._uniq = secrets.token_hex(3)
        self._seq = 0
        self._trimmed_at = 0.0
        self._thread = threading.Thread(target=self._loop, name="audit", daemon=True)

    def start(self) -> AuditLog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def record(self, entry: AuditEntry) -> None:
        """Never blocks the call that made it."""
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._take()
            try:
                if batch:
                    self._write(batch)
                if time.time() - self._trimmed_at > TRIM_EVERY_S:
                    self._trim()
            except StoreError as e:
                log.warning("audit log: %d entries not written (%s)", len(batch), e)
                self.dropped += len(batch)
            except Exception:  # the log must outlive any bug
                log.exception("audit log writer")

    def _take(self) -> list[AuditEntry]:
        """What came within FLUSH_S of the first entry (at most BATCH): a busy API writes a few
        transactions a second, not one per call (each is a write to etcd's log on disk, which
        the placements' commits wait behind)."""
        try:
            batch = [self._queue.get(timeout=FLUSH_S)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + FLUSH_S
        while len(batch) < BATCH and (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[AuditEntry]) -> None:
        if self.dropped:
            n, self.dropped = self.dropped, 0
            last = batch[-1]
            batch[-1] = replace(last, message=f"{last.message} [{n} audit entries before this one were lost]".strip())
        ops = []
        for e in batch:
            self._seq += 1
            ops.append(Put(keys.audit(e.at, f"{self._uniq}{self._seq:06d}"), dumps(e)))
        self.store.txn([], ops)

    def _trim(self) -> None:
        """Drop the hours past the retention: the first sweep looks 30 days back, later ones
        only at the hours that aged out since."""
        now = time.time()
        edge = now - self.retention_s
        start = edge - (30 * 86400 if not self._trimmed_at else (now - self._trimmed_at) + 7200)
        hours = sorted({keys.audit_hour(t) for t in _hours(start, edge - 3600)})
        for i in range(0, len(hours), BATCH):
            self.store.txn([], [Delete(h, prefix=True) for h in hours[i:i + BATCH]])
        self._trimmed_at = now


def _hours(start: float, end: float) -> list[float]:
    out, t = [], start
    while t <= end:
        out.append(t)
        t += 3600
    return out


def entries(store: Store, since: float, until: float, limit: int) -> list[AuditEntry]:
    """The newest entries between `since` and `until`, newest first, at most `limit`, read hour
    by hour backwards (so a short window reads little)."""
    out: list[AuditEntry] = []
    t = until
    while t >= since - 3600 and len(out) < limit:
        kvs, _ = store.get_prefix(keys.audit_hour(t))
        for kv in reversed(kvs):
            e = decode(AuditEntry, json.loads(kv.value))
            if since <= e.at <= until:
                out.append(e)
                if len(out) >= limit:
                    break
        t -= 3600
    return out


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
