"""TokenService: bearer tokens made, listed and revoked by cluster admins (any token) and by a
project's owners (their project's), kept in etcd as their records (the secret's SHA-256, never
the secret); and the lookup the authorizer uses. A credential may be a client certificate
instead (`csr_pem`), as Incus restricts client certificates to projects: the replica signs the
holder's key for `cred:<accessor>`, and the record gives it its role and project."""
from __future__ import annotations

import math
import threading
import time

from vdcos.apiserver import authz, scope, validate
from vdcos.apiserver.common import Ctx, blocking, check_name
from vdcos.apiserver.convert import token_to_pb
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc
from vdcos.errors import AlreadyExists, FailedPrecondition, NotFound
from vdcos.security.pki import Identity
from vdcos.security.tokens import CLUSTER_ROLES, PROJECT_ROLES, TokenRecord, mint, valid_accessor
from vdcos.state import keys
from vdcos.state.rmw import Reads, Write, read_modify_write
from vdcos.state.store import Put, Store
from vdcos.v1 import token_service_pb2 as tok_pb
from vdcos.v1 import token_service_pb2_grpc as tok_grpc

# How long a replica trusts what it read of a token: a revocation takes effect on every replica
# within this, and a busy client costs etcd one read per token per period.
FRESH_S = 2.0
MAX_TTL_S = 10 * 365 * 86400
BOOTSTRAP_MAX_TTL_S = 86400  # a host's way in: short-lived, as kubeadm's (24 h by default)
MAX_CERT_DAYS = 365  # a certificate credential always expires: its holder asks for a new one


class TokenLookup:
    """A token's record by accessor, read from etcd at most once per FRESH_S."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, TokenRecord | None]] = {}

    def __call__(self, accessor: str) -> TokenRecord | None:
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(accessor)
        if hit is not None and now - hit[0] < FRESH_S:
            return hit[1]
        kv = self.store.get(keys.token(accessor))
        rec = TokenRecord.from_bytes(kv.value) if kv is not None else None
        with self._lock:
            if len(self._seen) >= 10_000:  # never unbounded, whatever accessors callers make up
                self._seen.clear()
            self._seen[accessor] = (now, rec)
        return rec


class TokenServicer(tok_grpc.TokenServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.store = ops.store
        self.ops = ops

    @rpc
    async def CreateToken(self, request: tok_pb.CreateTokenRequest, context: Ctx) -> tok_pb.CreateTokenResponse:
        out: validate.Violations = []
        validate.name(request.name, "name", out)
        validate.name(request.project, "project", out, required=False)
        project = scope.current().owner(request.project) if not out else ""
        roles = PROJECT_ROLES if project else CLUSTER_ROLES
        if request.role not in roles:
            out.append(("role", f"must be one of {', '.join(roles)}"
                        + (f" (a role in project {project})" if project else " (a cluster role; with a project: "
                           + ", ".join(PROJECT_ROLES) + ")") + f", got {request.role[:40]!r}"))
        if request.role == "bootstrap" and not project and not 1 <= request.ttl_seconds <= BOOTSTRAP_MAX_TTL_S:
            out.append(("ttl_seconds", f"a bootstrap token must expire: between 1 and {BOOTSTRAP_MAX_TTL_S}, got "
                                       f"{request.ttl_seconds}"))
        elif not 0 <= request.ttl_seconds <= MAX_TTL_S:
            out.append(("ttl_seconds", f"must be between 0 (never expires) and {MAX_TTL_S}, got {request.ttl_seconds}"))
        if request.csr_pem and request.role == "bootstrap":
            out.append(("csr_pem", "a bootstrap credential is a token: a host gets its certificate by joining"))
        if request.csr_pem and request.ttl_seconds > MAX_CERT_DAYS * 86400:
            out.append(("ttl_seconds", f"a certificate credential lasts at most {MAX_CERT_DAYS} days"))
        validate.check(out)
        ttl = float(request.ttl_seconds or (MAX_CERT_DAYS * 86400 if request.csr_pem else 0))
        rec, secret = mint(request.name, request.role, time.time(), ttl, project, certificate=bool(request.csr_pem))
        cert = self._certify(request.csr_pem, rec.accessor, ttl) if request.csr_pem else b""

        def attempt(reads: Reads) -> Write[None]:
            key = keys.token(rec.accessor)  # 48 random bits: a clash is refused, never overwritten
            if reads.kv(key) is not None:
                raise AlreadyExists(f"token accessor {rec.accessor} clashes; create it again")
            if project and reads.kv(keys.project(project)) is None:  # compared: no token outlives its project
                raise NotFound(f"project {project!r} not found")
            return Write(None, [Put(key, rec.to_bytes())])
        await blocking(read_modify_write, self.store, attempt, f"token {rec.accessor}")
        ca = self.ops.authority.cert_path.read_text() if cert and self.ops.authority is not None else ""
        return tok_pb.CreateTokenResponse(token=token_to_pb(rec), secret=secret, certificate_pem=cert.decode(),
                                          ca_pem=ca)

    def _certify(self, csr_pem: str, accessor: str, ttl_s: float) -> bytes:
        """The holder's key signed for `cred:<accessor>`, for client use, expiring with the
        record (rounded up to a day: the record's expiry is the one that counts)."""
        authority = self.ops.authority
        if authority is None:
            raise FailedPrecondition("this API replica holds no CA key to issue a certificate with (started without "
                                     "--ca-dir); ask for a token instead")
        try:
            return authority.sign(csr_pem.encode(), Identity("cred", accessor), days=max(1, math.ceil(ttl_s / 86400)),
                                  client_only=True)
        except ValueError as e:
            validate.check([("csr_pem", str(e)[:300])])
            raise  # not reached: check raised

    @rpc
    async def ListTokens(self, request: tok_pb.ListTokensRequest, context: Ctx) -> tok_pb.ListTokensResponse:
        if request.project:
            check_name(request.project, "project")
        kvs, _ = await blocking(self.store.get_prefix, keys.TOKENS)
        sees = scope.current().sees
        recs = sorted((r for r in (TokenRecord.from_bytes(kv.value) for kv in kvs)
                       if sees(r.project) and (not request.project or r.project == request.project)),
                      key=lambda r: (r.created_at, r.accessor))
        return tok_pb.ListTokensResponse(tokens=[token_to_pb(r) for r in recs])

    @rpc
    async def RevokeToken(self, request: tok_pb.RevokeTokenRequest, context: Ctx) -> tok_pb.RevokeTokenResponse:
        if not valid_accessor(request.accessor):
            validate.check([("accessor", f"{request.accessor[:40]!r} is not a token accessor (tok- and 12 hex digits)")])
        within = scope.current()

        def attempt(reads: Reads) -> Write[TokenRecord]:
            key = keys.token(request.accessor)
            kv = reads.kv(key)
            rec = TokenRecord.from_bytes(kv.value).revoke() if kv is not None else None
            if rec is None or not within.sees(rec.project):
                raise NotFound(f"token {request.accessor} not found")
            return Write(rec, [Put(key, rec.to_bytes())])
        rec = await blocking(read_modify_write, self.store, attempt, f"token {request.accessor}")
        return tok_pb.RevokeTokenResponse(token=token_to_pb(rec))

    @rpc
    async def GetCaller(self, request: tok_pb.GetCallerRequest, context: Ctx) -> tok_pb.GetCallerResponse:
        who = authz.caller()
        if who is None:  # --insecure: no interceptor, nobody to name, nothing refused
            return tok_pb.GetCallerResponse(insecure=True, permissions=authz.permissions("admin"))
        return tok_pb.GetCallerResponse(name=who.name, role=who.role or "", project=who.project,
                                        permissions=authz.permissions(who.role, who.project))
