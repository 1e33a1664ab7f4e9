"""Who may call what: every RPC the API serves mapped to (resource, verb) in one table, and the
interceptor that enforces it, deny by default.

A method missing from RULES (and from PUBLIC and ANY_IDENTITY) is refused to everyone, and
tests/functional/test_authz.py lists every method the server has through reflection and fails
on one that is missing: a new RPC cannot skip authorization.

Each replica serves two ports (server.py). On the first, TLS with the replica's certificate,
a caller proves who it is with a bearer token (vdcos/security/tokens.py, records in etcd); on
the second, mutual TLS, with its client certificate from the datacenter CA, checked again here
before it is acted on. (gRPC's Python server cannot ask for a client certificate without
requiring one, so one port cannot take both.)

Roles. The cluster's: `admin` (everything; held by the operator who ran `vdcos up`,
`user:admin`, and by admin tokens), `reader` (every get, list and watch) and `bootstrap` (a
host joining, and nothing else: JoinNode). A project's, held
by tokens made for one project: `owner` (everything on the project's resources, and its
tokens), `member` (everything on its resources) and `reader` (their gets, lists and watches);
all three may read the QoS policies and pools they create with, and their project and quota.
Any other identity holds no role and is denied every rule.

The table decides which calls a role may make; which objects it may touch is the servicers'
part (scope.py): a project's caller sees only its project's objects, and another project's are
NOT_FOUND, as if they did not exist. A server started with --insecure has no identities to check
and installs no interceptor."""
from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import grpc
import grpc.aio

from vdcos.apiserver.audit import AuditLog, target_of
from vdcos.model import AuditEntry
from vdcos.security.pki import Identity, verified_identity
from vdcos.security.tokens import TokenRecord, parse_bearer


@dataclass(frozen=True)
class Rule:
    resource: str
    verb: str  # get | list | watch | create | update | delete, or an action on the resource

    @property
    def reads(self) -> bool:
        return self.verb in ("get", "list", "watch")


def _service(name: str, rules: dict[str, tuple[str, str]]) -> dict[str, Rule]:
    return {f"/vdcos.v1.{name}/{m}": Rule(*rv) for m, rv in rules.items()}


RULES: dict[str, Rule] = {
    **_service("VmService", {
        "CreateVm": ("vms", "create"), "CreateVms": ("vms", "create"), "BatchCreateVms": ("vms", "create"),
        "GetVm": ("vms", "get"), "ListVms": ("vms", "list"), "WatchVms": ("vms", "watch"),
        "DeleteVm": ("vms", "delete"), "StartVm": ("vms", "power"), "StopVm": ("vms", "power"),
        "RebootVm": ("vms", "power"), "SuspendVm": ("vms", "power"), "ResumeVm": ("vms", "power"),
        "ShelveVm": ("vms", "power"), "ConsoleVm": ("vms", "console"),
        "ResizeVm": ("vms", "update")}),
    **_service("NodeService", {
        "ListNodes": ("nodes", "list"), "GetNode": ("nodes", "get"), "WatchNodes": ("nodes", "watch"),
        "CordonNode": ("nodes", "cordon"), "UncordonNode": ("nodes", "cordon"), "DrainNode": ("nodes", "drain"),
        "JoinNode": ("nodes", "join")}),
    **_service("PlacementService", {
        "ExplainPlacement": ("placements", "get"), "GetSchedulerConfig": ("scheduler-config", "get"),
        "UpdateSchedulerConfig": ("scheduler-config", "update")}),
    **_service("NetworkService", {
        "CreateNetwork": ("networks", "create"), "GetNetwork": ("networks", "get"),
        "ListNetworks": ("networks", "list"), "DeleteNetwork": ("networks", "delete"),
        "CreatePort": ("ports", "create"), "ListPorts": ("ports", "list"), "DeletePort": ("ports", "delete")}),
    **_service("VolumeService", {
        "CreateVolume": ("volumes", "create"), "GetVolume": ("volumes", "get"), "ListVolumes": ("volumes", "list"),
        "DeleteVolume": ("volumes", "delete"), "AttachVolume": ("volumes", "update"),
        "DetachVolume": ("volumes", "update"), "ResizeVolume": ("volumes", "update"),
        "ListPools": ("pools", "list"), "CreateSnapshot": ("snapshots", "create"),
        "GetSnapshot": ("snapshots", "get"), "ListSnapshots": ("snapshots", "list"),
        "DeleteSnapshot": ("snapshots", "delete")}),
    **_service("CapacityService", {
        "GetCapacitySummary": ("capacity", "get"), "GetHeadroom": ("capacity", "get"),
        "PlanHosts": ("capacity", "get"), "SimulateNodeLoss": ("capacity", "get"),
        "GetCapacityReport": ("capacity", "get"), "PlanRebalance": ("rebalances", "create"),
        "GetRebalance": ("rebalances", "get"), "ListRebalances": ("rebalances", "list")}),
    **_service("HaService", {"GetHaStatus": ("ha", "get")}),
    **_service("ProjectService", {
        "CreateProject": ("projects", "create"), "GetProject": ("projects", "get"),
        "ListProjects": ("projects", "list"), "DeleteProject": ("projects", "delete"),
        "GetQuota": ("quotas", "get"), "SetQuota": ("quotas", "update")}),
    **_service("AuditService", {"ListAuditEntries": ("audit", "list")}),
    **_service("EventService", {"ListEvents": ("events", "list"), "WatchEvents": ("events", "watch")}),
    **_service("UsageService", {"GetUsage": ("usage", "get")}),
    **_service("TokenService", {
        "CreateToken": ("tokens", "create"), "ListTokens": ("tokens", "list"), "RevokeToken": ("tokens", "delete")}),
    **_service("QosPolicyService", {
        "CreateQosPolicy": ("qos-policies", "create"), "GetQosPolicy": ("qos-policies", "get"),
        "ListQosPolicies": ("qos-policies", "list"), "DeleteQosPolicy": ("qos-policies", "delete")}),
    **_service("MigrationService", {
        "MigrateVm": ("migrations", "create"), "GetMigration": ("migrations", "get"),
        "ListMigrations": ("migrations", "list"), "WatchMigration": ("migrations", "watch"),
        "CancelMigration": ("migrations", "delete")}),
}

# Anyone, with or without credentials: the clients' health checks pick the replicas to use.
PUBLIC = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch", "/grpc.health.v1.Health/List"})
# Any verified identity: the schema, for tools like grpcurl, and who the caller is.
ANY_IDENTITY = frozenset({"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                          "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                          "/vdcos.v1.TokenService/GetCaller"})

# What a project owns: its callers reach only these, and only their project's.
PROJECT_RESOURCES = frozenset({"vms", "networks", "ports", "volumes", "snapshots", "migrations", "events"})
# Cluster-scoped things a project's callers read to use their own (their project and quota only).
PROJECT_READABLE = frozenset({"qos-policies", "pools", "projects", "quotas", "usage"})


def _in_project(rule: Rule) -> bool:
    return rule.resource in PROJECT_RESOURCES or (rule.reads and rule.resource in PROJECT_READABLE)


# The roles and what they may do; a rule is allowed when the role's test says so.
ROLES: dict[str, Callable[[Rule], bool]] = {
    "admin": lambda rule: True,
    "reader": lambda rule: rule.reads,
    # A short-lived token a host joins with (`vdcos join`), and nothing else.
    "bootstrap": lambda rule: (rule.resource, rule.verb) == ("nodes", "join"),
}
PROJECT_ROLES: dict[str, Callable[[Rule], bool]] = {
    "owner": lambda rule: _in_project(rule) or rule.resource == "tokens",
    "member": _in_project,
    "reader": lambda rule: rule.reads and _in_project(rule),
}
BOOTSTRAP_BINDINGS = {Identity("user", "admin"): "admin"}


def permissions(role: str | None, project: str = "") -> list[str]:
    """Every resource:verb that `role` (in `project`, when given) may use, from RULES."""
    allowed = (PROJECT_ROLES if project else ROLES).get(role or "")
    if allowed is None:
        return []
    return sorted({f"{r.resource}:{r.verb}" for r in RULES.values() if allowed(r)})


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the audit log and refusals name them, and the role they hold: a
    cluster role, or with `project` a role in that project."""
    name: str   # user:admin (a certificate) or token:tok-...(holder) (a bearer token)
    role: str | None
    project: str = ""

    @property
    def title(self) -> str:
        return f"role {self.role} in project {self.project}" if self.project else f"role {self.role}"


# The caller of the call being served, set by the interceptor before its handler runs (a
# context variable: each call is its own task).
_CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("vdcos_caller", default=None)


def caller() -> Principal | None:
    """Who is making the current call; None on a server without authentication (--insecure)."""
    return _CALLER.get()


class Denied(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, who: Principal | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.who = who  # the caller, when it proved who it is (PERMISSION_DENIED)


# A token's record by accessor (apiserver/tokens.py reads them from etcd).
FindToken = Callable[[str], TokenRecord | None]


class Authorizer:
    """Decides one call from its method and the caller's credentials: the certificate it
    presented on the mutual-TLS port (PEM, checked again here against the datacenter CA, see
    pki.verified_identity), or the bearer token it sent (`tokens` finds a token's record)."""

    def __init__(self, ca_pem: bytes, tokens: FindToken | None = None,
                 bindings: dict[Identity, str] | None = None) -> None:
        self.ca_pem = ca_pem
        self.tokens = tokens or (lambda accessor: None)
        self.bindings = dict(BOOTSTRAP_BINDINGS if bindings is None else bindings)
        # Verifying a signature costs ~0.1 ms: each certificate once, until it expires.
        self._verified: dict[bytes, tuple[Identity, dt.datetime] | None] = {}

    def identity(self, cert_pem: bytes | None) -> Identity | None:
        if not cert_pem:
            return None
        if cert_pem in self._verified:
            got = self._verified[cert_pem]
        else:
            got = verified_identity(cert_pem, self.ca_pem)
            if len(self._verified) >= 10_000:  # a few per client in practice; never unbounded
                self._verified.clear()
            self._verified[cert_pem] = got
        if got is None or got[1] < dt.datetime.now(dt.timezone.utc):
            return None
        return got[0]

    def looks_up(self, cert_pem: bytes | None, bearer: str | None) -> bool:
        """Whether deciding on these credentials reads a credential's record (from etcd, at
        most once per TokenLookup's period): a bearer token, or a credential's certificate."""
        if cert_pem is None:
            return bool(bearer)
        who = self.identity(cert_pem)
        return who is not None and who.kind == "cred"

    def principal(self, cert_pem: bytes | None, bearer: str | None) -> Principal:
        who = self.identity(cert_pem)
        if who is not None and who.kind == "cred":
            # A credential's certificate: its record says the role and project, and whether it
            # still stands (revoked or expired: the certificate no longer counts).
            rec = self.tokens(who.name)
            if rec is None or not rec.certificate or not rec.usable(time.time()):
                raise Denied(grpc.StatusCode.UNAUTHENTICATED, "the certificate's credential is revoked or expired")
            return Principal(f"cert:{rec.accessor}({rec.name})", rec.role, rec.project)
        if who is not None:
            return Principal(who.common_name, self.bindings.get(who))
        if cert_pem:
            raise Denied(grpc.StatusCode.UNAUTHENTICATED, "the client certificate is not one the datacenter CA issued")
        if not bearer:
            raise Denied(grpc.StatusCode.UNAUTHENTICATED,
                         "no credentials: send `authorization: Bearer <token>` (vdcos token create), or "
                         "connect to the mutual-TLS port with a certificate from the datacenter CA")
        parsed = parse_bearer(bearer)
        rec = self.tokens(parsed[0]) if parsed else None
        # One answer for all of these: which part was wrong is not the caller's to learn.
        if parsed is None or rec is None or not rec.matches(parsed[1]) or not rec.usable(time.time()):
            raise Denied(grpc.StatusCode.UNAUTHENTICATED, "the token is not valid (unknown, wrong, revoked or expired)")
        return Principal(f"token:{rec.accessor}({rec.name})", rec.role, rec.project)

    def check(self, method: str, cert_pem: bytes | None, bearer: str | None = None) -> Principal | None:
        """The caller, if it may call `method`; raises Denied otherwise."""
        if method in PUBLIC:
            return None
        who = self.principal(cert_pem, bearer)
        if method in ANY_IDENTITY:
            return who
        rule = RULES.get(method)
        if rule is None:  # deny by default: a method nobody mapped
            raise Denied(grpc.StatusCode.PERMISSION_DENIED, f"{method} is not open to any role", who)
        allowed = (PROJECT_ROLES if who.project else ROLES).get(who.role or "")
        if allowed is None or not allowed(rule):
            raise Denied(grpc.StatusCode.PERMISSION_DENIED,
                         f"{who.name} may not {rule.verb} {rule.resource}"
                         + (f" ({who.title})" if who.role else " (it holds no role)"), who)
        return who


def _credentials(context: grpc.aio.ServicerContext) -> tuple[bytes | None, str | None]:
    certs = context.auth_context().get("x509_pem_cert")
    bearer = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
    return (certs[0] if certs else None), (bearer if isinstance(bearer, str) else None)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is unannotated
    """Every call through Authorizer.check before its handler runs; each mutating call of an
    identified caller, refused or not, to the audit log (audit.py) once it has ended."""

    def __init__(self, authorizer: Authorizer, audit: AuditLog | None = None) -> None:
        self.authorizer = authorizer
        self.audit = audit

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method in PUBLIC:
            return handler
        method, check, looks_up = details.method, self.authorizer.check, self.authorizer.looks_up
        rule = RULES.get(method)
        audit = self.audit if rule is not None and not rule.reads else None

        def record(who: Principal | None, request: Any, code: str, message: str) -> None:
            if audit is not None and who is not None and rule is not None:
                audit.record(AuditEntry(time.time(), who.name, who.role or "", who.project, method, rule.resource,
                                        rule.verb, target_of(request), code, message[:300], audit.replica))

        async def authorize(context: grpc.aio.ServicerContext, request: Any) -> Principal | None:
            cert, bearer = _credentials(context)
            try:
                if looks_up(cert, bearer):  # a credential's record may be read from etcd: off the loop
                    who = await asyncio.to_thread(check, method, cert, bearer)
                else:
                    who = check(method, cert, bearer)
            except Denied as e:
                record(e.who, request, e.code.name, str(e))
                await context.abort(e.code, str(e))  # raises: the handler never runs
            _CALLER.set(who)
            return who

        def ended(who: Principal | None, request: Any, context: grpc.aio.ServicerContext,
                  error: BaseException | None) -> None:
            if audit is None:
                return
            if error is None:
                record(who, request, "OK", "")
                return
            code = context.code()
            name = code.name if isinstance(code, grpc.StatusCode) else (
                "CANCELLED" if isinstance(error, (asyncio.CancelledError, GeneratorExit)) else "UNKNOWN")
            record(who, request, name, str(context.details() or error))

        for kind, make, guard in _KINDS:
            inner = getattr(handler, kind)
            if inner:
                return make(guard(inner, authorize, ended), handler.request_deserializer, handler.response_serializer)
        return handler


Authorize = Callable[[grpc.aio.ServicerContext, Any], Awaitable[Principal | None]]
Ended = Callable[[Principal | None, Any, grpc.aio.ServicerContext, BaseException | None], None]


def _answering(inner: Any, authorize: Authorize, ended: Ended) -> Any:
    """A handler with one answer (its request one message or a stream), authorized first."""
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        who = await authorize(context, request)
        try:
            answer = await inner(request, context)
        except BaseException as e:
            ended(who, request, context, e)
            raise
        ended(who, request, context, None)
        return answer
    return call


def _streaming(inner: Any, authorize: Authorize, ended: Ended) -> Any:
    """A handler that answers with a stream, authorized before its first answer."""
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        who = await authorize(context, request)
        try:
            async for item in _aiter(inner(request, context)):
                yield item
        except BaseException as e:
            ended(who, request, context, e)
            raise
        ended(who, request, context, None)
    return call


# gRPC's four kinds of method handler, and how each is wrapped.
_KINDS = (("unary_unary", grpc.unary_unary_rpc_method_handler, _answering),
          ("unary_stream", grpc.unary_stream_rpc_method_handler, _streaming),
          ("stream_unary", grpc.stream_unary_rpc_method_handler, _answering),
          ("stream_stream", grpc.stream_stream_rpc_method_handler, _streaming))


async def _aiter(result: Any) -> Any:
    """A streaming handler's answers, whether it is an async generator or a coroutine that
    writes them with context.write (and returns None)."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        await result
