"""Authorization on a real API server in TLS: every method the server has is in the table (found
through reflection); every mapped method refuses a caller without credentials (UNAUTHENTICATED
on the token port, at the handshake on the mutual-TLS port), one with a bad token
(UNAUTHENTICATED) and one whose role lacks the verb (PERMISSION_DENIED), and lets the admin
through, by certificate or by token; a reader token may read and nothing else; a project's
owner, member and reader tokens reach exactly what their role allows; a revoked or expired
token stops working. (Which objects a project's caller reaches: test_projects.py.)"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from vdcos.apiserver.authz import ANY_IDENTITY, PROJECT_ROLES, PUBLIC, RULES, Authorizer, Denied, Principal
from vdcos.apiserver.server import SchedulerServer, create_server
from vdcos.security.pki import Authority, Identity, TlsFiles
from vdcos.security.tls import secure_channel
from vdcos.v1 import project_service_pb2 as proj_pb
from vdcos.v1 import project_service_pb2_grpc, token_service_pb2_grpc
from vdcos.v1 import token_service_pb2 as tok_pb
from tests.conftest import secure_etcd, wait_until

DENIED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class Api:
    def __init__(self, ca: Authority, server: SchedulerServer) -> None:
        self.ca, self.addr = ca, f"127.0.0.1:{server.port}"
        self.mtls_addr = f"127.0.0.1:{server.mtls_port}"
        with self.channel(ADMIN) as ch:
            stub = token_service_pb2_grpc.TokenServiceStub(ch)
            self.tokens = {role: stub.CreateToken(tok_pb.CreateTokenRequest(name=f"t-{role}", role=role)).secret
                           for role in ("admin", "reader")}
            project_service_pb2_grpc.ProjectServiceStub(ch).CreateProject(
                proj_pb.CreateProjectRequest(project=proj_pb.Project(name="p")))
            self.project_tokens = {role: stub.CreateToken(tok_pb.CreateTokenRequest(
                name=f"p-{role}", role=role, project="p")).secret for role in PROJECT_ROLES}

    def channel(self, who: Identity | None) -> grpc.Channel:
        """To the mutual-TLS port, with `who`'s certificate (None: with none)."""
        return secure_channel(self.mtls_addr, ca_only(self.ca) if who is None else self.ca.issue(who), [])

    def token_channel(self, token: str | None) -> grpc.Channel:
        """To the token port, TLS with the CA alone, and `token` (None: no credentials at all)."""
        return secure_channel(self.addr, ca_only(self.ca), [], token)


ADMIN = Identity("user", "admin")


def ca_only(ca: Authority) -> TlsFiles:
    return TlsFiles(ca.cert_path)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with secure_etcd(tmp_path_factory.mktemp("authz"), "authz") as (ca, _, store, replica):
        server = create_server("127.0.0.1:0", store, tls=replica)
        try:
            yield Api(ca, server)
        finally:
            server.stop(0)


def served_methods(channel: grpc.Channel) -> dict[str, Any]:
    """Every method of every service the server has, by path, as reflection describes them."""
    db = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(db)
    out = {}
    for svc in db.get_services():
        for m in pool.FindServiceByName(svc).methods:
            out[f"/{svc}/{m.name}"] = m
    return out


def test_every_method_the_server_has_is_in_the_table(api: Api) -> None:
    with api.channel(Identity("user", "admin")) as ch:
        methods = served_methods(ch)
    assert len(methods) > 50
    missing = sorted(m for m in methods if m not in RULES and m not in PUBLIC and m not in ANY_IDENTITY)
    assert missing == [], f"methods with no authorization rule: {missing}"
    stale = sorted(m for m in RULES if m not in methods)
    assert stale == [], f"rules for methods the server does not have: {stale}"


def call(ch: grpc.Channel, path: str, m: Any) -> grpc.StatusCode:
    """`path` with an empty request; its status (OK for an answer or a stream that began)."""
    try:
        if m.client_streaming and m.server_streaming:
            for _ in ch.stream_stream(path)(iter([b""]), timeout=3):
                break
        elif m.client_streaming:
            ch.stream_unary(path)(iter([b""]), timeout=3)
        elif m.server_streaming:
            for _ in ch.unary_stream(path)(b"", timeout=3):
                break
        else:
            ch.unary_unary(path)(b"", timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


@pytest.mark.parametrize("path", sorted(RULES))
def test_each_method_admits_only_who_it_should(api: Api, path: str) -> None:
    with api.channel(ADMIN) as ch:
        m = served_methods(ch)[path]
        assert call(ch, path, m) not in DENIED  # an empty request may be invalid; it is not refused
    with api.channel(None) as ch:  # no certificate: no TLS session, no call
        assert call(ch, path, m) == grpc.StatusCode.UNAVAILABLE
    with api.channel(Identity("user", "mallory")) as ch:
        assert call(ch, path, m) == grpc.StatusCode.PERMISSION_DENIED
    with api.channel(Identity("node", "host-1")) as ch:  # an agent's certificate is no API credential
        assert call(ch, path, m) == grpc.StatusCode.PERMISSION_DENIED
    with api.token_channel(None) as ch:
        assert call(ch, path, m) == grpc.StatusCode.UNAUTHENTICATED
    with api.token_channel(api.tokens["admin"][:-2] + "xx") as ch:  # the right accessor, a wrong secret
        assert call(ch, path, m) == grpc.StatusCode.UNAUTHENTICATED
    with api.token_channel(api.tokens["admin"]) as ch:
        assert call(ch, path, m) not in DENIED
    with api.token_channel(api.tokens["reader"]) as ch:
        got = call(ch, path, m)
        assert (got not in DENIED) if RULES[path].reads else (got == grpc.StatusCode.PERMISSION_DENIED), got
    for role, may in PROJECT_ROLES.items():
        with api.token_channel(api.project_tokens[role]) as ch:
            got = call(ch, path, m)
            assert (got not in DENIED) if may(RULES[path]) else (got == grpc.StatusCode.PERMISSION_DENIED), (role, got)


def test_get_caller_says_what_the_table_admits(api: Api) -> None:
    """A UI offers the actions GetCaller lists: exactly the rules the caller's role passes."""
    def me(ch: grpc.Channel) -> tok_pb.GetCallerResponse:
        return token_service_pb2_grpc.TokenServiceStub(ch).GetCaller(tok_pb.GetCallerRequest(), timeout=10)

    every = {f"{r.resource}:{r.verb}" for r in RULES.values()}
    with api.channel(ADMIN) as ch:
        got = me(ch)
        assert (got.name, got.role, set(got.permissions)) == ("user:admin", "admin", every)
    with api.channel(Identity("user", "mallory")) as ch:  # proven, but holds no role
        got = me(ch)
        assert (got.name, got.role, list(got.permissions)) == ("user:mallory", "", [])
    with api.token_channel(api.tokens["reader"]) as ch:
        assert set(me(ch).permissions) == {f"{r.resource}:{r.verb}" for r in RULES.values() if r.reads}
    for role, may in PROJECT_ROLES.items():
        with api.token_channel(api.project_tokens[role]) as ch:
            got = me(ch)
            assert got.role == role and got.project
            assert set(got.permissions) == {f"{r.resource}:{r.verb}" for r in RULES.values() if may(r)}
    with api.token_channel(None) as ch:
        with pytest.raises(grpc.RpcError) as e:
            me(ch)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


def test_a_revoked_or_expired_token_stops_working(api: Api) -> None:
    with api.channel(ADMIN) as ch:
        stub = token_service_pb2_grpc.TokenServiceStub(ch)
        made = stub.CreateToken(tok_pb.CreateTokenRequest(name="short", role="reader", ttl_seconds=2))
        gone = stub.CreateToken(tok_pb.CreateTokenRequest(name="gone", role="reader"))
        listed = {t.accessor: t for t in stub.ListTokens(tok_pb.ListTokensRequest()).tokens}
        assert {made.token.accessor, gone.token.accessor} <= set(listed)
        assert all(made.secret not in str(t) for t in listed.values())  # the secret is stored nowhere
    list_vms = "/vdcos.v1.VmService/ListVms"
    for t in (made, gone):
        with api.token_channel(t.secret) as ch:
            ch.unary_unary(list_vms)(b"", timeout=10)
    with api.channel(ADMIN) as ch:
        revoked = token_service_pb2_grpc.TokenServiceStub(ch).RevokeToken(
            tok_pb.RevokeTokenRequest(accessor=gone.token.accessor))
        assert revoked.token.revoked
    for t in (made, gone):  # expired by now, or revoked: within FRESH_S on every replica
        def refused() -> bool:
            with api.token_channel(t.secret) as ch:
                try:
                    ch.unary_unary(list_vms)(b"", timeout=10)
                    return False
                except grpc.RpcError as e:
                    return e.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[no-any-return]
        wait_until(refused, timeout=10, every=0.2)


@pytest.mark.parametrize("req", [tok_pb.CreateTokenRequest(name="Bad\n", role="admin"),
                                 tok_pb.CreateTokenRequest(name="ok", role="root"),
                                 tok_pb.CreateTokenRequest(name="ok", role="admin", ttl_seconds=-1)])
def test_a_bad_token_request_is_invalid_and_makes_nothing(api: Api, req: tok_pb.CreateTokenRequest) -> None:
    with api.channel(ADMIN) as ch:
        stub = token_service_pb2_grpc.TokenServiceStub(ch)
        before = len(stub.ListTokens(tok_pb.ListTokensRequest()).tokens)
        with pytest.raises(grpc.RpcError) as e:
            stub.CreateToken(req)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert len(stub.ListTokens(tok_pb.ListTokensRequest()).tokens) == before


def test_health_and_reflection_answer_any_identity(api: Api) -> None:
    with api.channel(Identity("user", "mallory")) as ch:
        ch.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)
        assert served_methods(ch)


def test_an_admin_certificate_from_another_ca_is_refused(api: Api, tmp_path: Path) -> None:
    other = Authority.ensure(tmp_path / "other", "x").issue(Identity("user", "admin"))
    forged = TlsFiles(api.ca.cert_path, other.cert, other.key)
    # Refused at the handshake on the mutual-TLS port; on the token port it is not even asked for.
    for addr, code in ((api.mtls_addr, grpc.StatusCode.UNAVAILABLE), (api.addr, grpc.StatusCode.UNAUTHENTICATED)):
        with secure_channel(addr, forged, []) as ch:
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/vdcos.v1.VmService/ListVms")(b"", timeout=5)
        assert e.value.code() == code  # type: ignore[attr-defined]


def test_the_authorizer_checks_the_certificate_again(tmp_path: Path) -> None:
    """What the interceptor acts on, apart from TLS: a forged or foreign certificate is nobody."""
    ca = Authority.ensure(tmp_path / "pki", "a")
    authz = Authorizer(ca.cert_path.read_bytes())
    admin = ca.issue(Identity("user", "admin")).cert
    forged = Authority.ensure(tmp_path / "other", "b").issue(Identity("user", "admin")).cert
    assert admin is not None and forged is not None
    assert authz.check("/vdcos.v1.VmService/DeleteVm", admin.read_bytes()) == Principal("user:admin", "admin")
    for cert in (forged.read_bytes(), None, b"not a certificate"):
        with pytest.raises(Denied) as e:
            authz.check("/vdcos.v1.VmService/DeleteVm", cert)
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(Denied) as e:
        authz.check("/vdcos.v1.VmService/NotMapped", admin.read_bytes())
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED  # deny by default
