"""`Store` over etcd's v3 gRPC API, using the generated stubs of the maintained etcd-sdk-python
package (the `etcd3` package no longer imports with current protobuf).

Several members: one gRPC channel over all their addresses (gRPC's pick_first: it connects to
one and, when that one goes, to the next that answers). Every call waits for a connection
(`wait_for_ready`), so a call made while the channel moves to another member is sent there,
not failed; calls that etcd refuses during a leader election (nothing was proposed) are sent
again until the call's deadline. A call whose connection broke after it was sent may or may
not have been applied: reads and unconditional writes are sent again, a transaction is not
(its caller compares revisions, and learns what happened by reading)."""
from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import grpc
from pyetcd import etcdrpc
from pyetcd.etcdrpc import auth_pb2, kv_pb2

from vdcos.security.pki import ETCD_NAME, TlsFiles
from vdcos.security.tls import secure_channel
from vdcos.state import access
from vdcos.state.store import (KV, CompactedError, Compare, Delete, Event, Get, Op, Put,
                               StoreError, TxnResult, WatchCallback, prefix_end)

log = logging.getLogger(__name__)

_TARGET = {"mod": etcdrpc.Compare.MOD, "create": etcdrpc.Compare.CREATE,
           "version": etcdrpc.Compare.VERSION}
_FIELD = {"mod": "mod_revision", "create": "create_revision", "version": "version"}
_OP = {"==": etcdrpc.Compare.EQUAL, "!=": etcdrpc.Compare.NOT_EQUAL,
       "<": etcdrpc.Compare.LESS, ">": etcdrpc.Compare.GREATER}


# etcd's answers that say a request was not proposed: safe to send again, also a transaction.
_NOT_APPLIED = ("no leader", "not capable", "too many requests", "failed to connect", "connection refused")


def endpoints_of(endpoints: str | Sequence[str]) -> list[str]:
    """`host:port,host:port` or a list of them: the members, in order."""
    items = endpoints.split(",") if isinstance(endpoints, str) else endpoints
    out = [e.strip() for e in items if e.strip()]
    if not out:
        raise ValueError("no etcd endpoint given")
    return out


def channel_target(endpoints: Sequence[str]) -> str:
    return endpoints[0] if len(endpoints) == 1 else "ipv4:" + ",".join(endpoints)


def _channel(target: str, tls: TlsFiles | None, options: list[tuple[str, Any]]) -> grpc.Channel:
    return (grpc.insecure_channel(target, options=options) if tls is None
            else secure_channel(target, tls, options, server_name=ETCD_NAME))


def member_status(endpoint: str, timeout: float = 1.0, tls: TlsFiles | None = None) -> Any:
    """One member's own view (its id in the header, the leader's id), or None if it does not answer."""
    with _channel(endpoint, tls, []) as ch:
        try:
            return etcdrpc.MaintenanceStub(ch).Status(etcdrpc.StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None


def _kv(m: Any) -> KV:
    return KV(m.key.decode(), m.value, m.create_revision, m.mod_revision, m.version, m.lease)


class EtcdStore:
    """`tls`: the datacenter CA and this process's certificate (etcd verifies it); None speaks
    plaintext, to an etcd started with --insecure."""

    def __init__(self, endpoints: str | Sequence[str], timeout: float = 10.0, txn_timeout: float = 3.0,
                 tls: TlsFiles | None = None) -> None:
        self.endpoints = endpoints_of(endpoints)
        self.endpoint = ",".join(self.endpoints)
        self.timeout = timeout
        # A transaction sent to a leader that dies waits for etcd's request timeout (7 s) and
        # then fails anyway; its caller learns sooner, and decides (they all read and retry).
        # A placement's largest transaction takes ~0.1 s on this machine.
        self.txn_timeout = min(timeout, txn_timeout)
        self._channel = _channel(channel_target(self.endpoints), tls, [
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            # A member that hangs without closing its connections is noticed in ~7 s, not at
            # the TCP timeout; 5 s is the most often etcd lets a client ping (more is GOAWAY).
            ("grpc.keepalive_time_ms", 5_000),
            ("grpc.keepalive_timeout_ms", 2_000),
            # Reconnect to a member that came back within ~1 s, not gRPC's default 120 s ceiling.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1_000),
        ])
        self._kv = etcdrpc.KVStub(self._channel)
        self._lease = etcdrpc.LeaseStub(self._channel)
        self._watch = etcdrpc.WatchStub(self._channel)
        self._auth = etcdrpc.AuthStub(self._channel)
        self._cancels: list[Callable[[], None]] = []

    def add_access(self, user: str, role: str, grants: Sequence[access.Grant]) -> None:
        """A user (a certificate's CN) holding a role with these key ranges (state/access.py),
        made or completed: what is there already is left as it is. The caller needs etcd's root
        role (on an etcd without authentication on, the records wait there until it is).

        The user authenticates by its certificate alone; etcd 3.4's gRPC API asks a password of
        a new user, so it gets 32 random bytes that nobody keeps."""
        calls: list[tuple[Callable[..., Any], Any]] = []
        if role != access.ROOT_ROLE:
            calls.append((self._auth.RoleAdd, etcdrpc.AuthRoleAddRequest(name=role)))
        for g in grants:
            end = prefix_end(g.key).encode() if g.prefix else b""
            perm = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE if g.write else auth_pb2.Permission.READ,
                                       key=g.key.encode(), range_end=end)
            calls.append((self._auth.RoleGrantPermission, etcdrpc.AuthRoleGrantPermissionRequest(name=role, perm=perm)))
        calls += [(self._auth.UserAdd, etcdrpc.AuthUserAddRequest(name=user, password=secrets.token_urlsafe(32))),
                  (self._auth.UserGrantRole, etcdrpc.AuthUserGrantRoleRequest(user=user, role=role))]
        for fn, req in calls:
            try:
                self._call(fn, req, resend=False)
            except StoreError as e:
                if "already exists" not in str(e):
                    raise StoreError(f"etcd auth {type(req).__name__}: {e}") from e

    def enable_access(self, control_users: list[str], nodes: list[str], admin: str) -> None:
        """etcd's role-based access (state/access.py) made, then turned on: from then on etcd
        checks every request against its user's roles. Run as `admin` on an etcd without it."""
        for user, role, grants in access.setup(control_users, nodes, admin):
            self.add_access(user, role, grants)
        self._call(self._auth.AuthEnable, etcdrpc.AuthEnableRequest(), resend=False)

    def _call(self, fn: Callable[..., Any], req: Any, resend: bool = True, timeout: float = 0.0) -> Any:
        """One request, sent again while etcd has no leader (or, if `resend`, after any
        UNAVAILABLE) until `timeout` has passed."""
        deadline = time.monotonic() + (timeout or self.timeout)
        pause = 0.02
        while True:
            left = deadline - time.monotonic()
            try:
                return fn(req, timeout=max(0.05, left), wait_for_ready=True)
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
                again = code == grpc.StatusCode.UNAVAILABLE and (
                    resend or any(s in details.lower() for s in _NOT_APPLIED))
                if not again or time.monotonic() + pause >= deadline:
                    raise StoreError(f"etcd {self.endpoint}: {code.name}: {details}") from e
            time.sleep(pause)
            pause = min(0.25, pause * 2)

    def get(self, key: str) -> KV | None:
        r = self._call(self._kv.Range, etcdrpc.RangeRequest(key=key.encode()))
        return _kv(r.kvs[0]) if r.kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KV], int]:
        r = self._call(self._kv.Range, etcdrpc.RangeRequest(
            key=prefix.encode(), range_end=prefix_end(prefix).encode()))
        return [_kv(m) for m in r.kvs], r.header.revision

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        r = self._call(self._kv.Put, etcdrpc.PutRequest(key=key.encode(), value=value, lease=lease))
        return int(r.header.revision)

    def delete(self, key: str, prefix: bool = False) -> int:
        req = etcdrpc.DeleteRangeRequest(key=key.encode())
        if prefix:
            req.range_end = prefix_end(key).encode()
        return int(self._call(self._kv.DeleteRange, req).deleted)

    @staticmethod
    def _ops(ops: Sequence[Op], into: Any) -> None:
        """Each op filled in where it lies in the request: building sub-messages and handing
        them over copies each one (three times the cost, for a placement's hundreds of ops)."""
        add = into.add
        for op in ops:
            m = add()
            if isinstance(op, Put):
                put = m.request_put
                put.key, put.value = op.key.encode(), op.value
                if op.lease:
                    put.lease = op.lease
                continue
            r = m.request_delete_range if isinstance(op, Delete) else m.request_range
            r.key = op.key.encode()
            if op.prefix:
                r.range_end = prefix_end(op.key).encode()

    def txn(self, compares: Sequence[Compare], success: Sequence[Op],
            failure: Sequence[Op] = ()) -> TxnResult:
        req = etcdrpc.TxnRequest()
        add = req.compare.add
        for c in compares:
            m = add(key=c.key.encode(), target=_TARGET[c.target], result=_OP[c.op], **{_FIELD[c.target]: c.value})
            if c.prefix:
                m.range_end = prefix_end(c.key).encode()
        self._ops(success, req.success)
        self._ops(failure, req.failure)
        if not compares and not any(not isinstance(op, Get) for op in (*success, *failure)):
            r = self._call(self._kv.Txn, req)  # reads at one revision: safe to send again, may be large
        else:
            r = self._call(self._kv.Txn, req, resend=False, timeout=self.txn_timeout)
        gets = tuple(tuple(_kv(m) for m in resp.response_range.kvs)
                     for resp in r.responses if resp.WhichOneof("response") == "response_range")
        return TxnResult(bool(r.succeeded), int(r.header.revision), gets)

    def grant_lease(self, ttl: int) -> int:
        return int(self._call(self._lease.LeaseGrant, etcdrpc.LeaseGrantRequest(TTL=ttl)).ID)

    def keepalive(self, lease: int, timeout: float | None = None) -> int:
        try:
            for r in self._lease.LeaseKeepAlive(iter([etcdrpc.LeaseKeepAliveRequest(ID=lease)]),
                                                 timeout=timeout or self.timeout, wait_for_ready=True):
                return int(r.TTL)
        except grpc.RpcError as e:
            raise StoreError(f"etcd keepalive: {e.code().name}: {e.details()}") from e
        return 0

    def revoke_lease(self, lease: int) -> None:
        try:
            self._call(self._lease.LeaseRevoke, etcdrpc.LeaseRevokeRequest(ID=lease))
        except StoreError:
            pass  # already expired: the goal (keys gone) holds

    def watch_prefix(self, prefix: str, start_revision: int, callback: WatchCallback,
                     on_error: Callable[[Exception], None] | None = None) -> Callable[[], None]:
        """Calls back on a thread of its own for every batch of events, in revision order."""
        requests: queue.Queue[Any] = queue.Queue()
        requests.put(etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
            key=prefix.encode(), range_end=prefix_end(prefix).encode(), start_revision=start_revision)))
        stopped = threading.Event()

        def gen() -> Iterator[Any]:
            while True:
                item = requests.get()
                if item is None:
                    return
                yield item

        # hasleader: a member cut off from the others ends the watch, instead of keeping a
        # stream that no longer hears of writes (etcd's WithRequireLeader). Not wait_for_ready:
        # a stream has no deadline, and one that waited for a member to come back would wait
        # for ever, silently; this one fails, and its owner lists again.
        stream = self._watch.Watch(gen(), metadata=(("hasleader", "true"),))

        def run() -> None:
            try:
                for resp in stream:
                    if resp.compact_revision:
                        raise CompactedError(f"revision {start_revision} compacted "
                                             f"(oldest {resp.compact_revision})")
                    if resp.canceled:
                        raise StoreError(f"watch canceled: {resp.cancel_reason}")
                    if resp.events:
                        evs = [Event("delete" if e.type == kv_pb2.Event.DELETE else "put", _kv(e.kv))
                               for e in resp.events]
                        callback(evs, int(resp.header.revision))
            except grpc.RpcError as e:
                if not stopped.is_set() and on_error:
                    on_error(StoreError(f"watch {prefix}: {e.code().name}: {e.details()}"))
            except Exception as e:  # a callback bug must not die silently on a watch thread
                if not stopped.is_set():
                    log.exception("watch %s stopped", prefix)
                    if on_error:
                        on_error(e)

        threading.Thread(target=run, name=f"watch{prefix}", daemon=True).start()

        def cancel() -> None:
            stopped.set()
            requests.put(None)
            stream.cancel()
        self._cancels.append(cancel)
        return cancel

    def close(self) -> None:
        for c in self._cancels:
            c()
        self._channel.close()
