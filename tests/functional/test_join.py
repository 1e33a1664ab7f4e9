"""JoinNode on a real API server in TLS that holds the CA key: a bootstrap token gets a node
certificate for the host's own key, naming the host's addresses, once per name; bad requests
are INVALID_ARGUMENT naming the field and certify nothing; a bootstrap token does nothing else,
and must expire within a day. (The whole join, with a libvirt host: tests/e2e/test_join.py.)"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import grpc
import pytest
from cryptography import x509
from google.rpc import error_details_pb2

from tests.conftest import details, secure_etcd
from vdcos.apiserver.server import create_server
from vdcos.cli.client import Client
from vdcos.security.pki import Authority, Identity, TlsFiles, new_key, signing_request, verified_identity
from vdcos.state import keys
from vdcos.state.etcd import EtcdStore
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import token_service_pb2 as tok_pb
from vdcos.v1 import vm_service_pb2 as vm_pb


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Client, EtcdStore, Authority]]:
    with secure_etcd(tmp_path_factory.mktemp("join"), "join") as (ca, _, store, replica):
        server = create_server("127.0.0.1:0", store, tls=replica, authority=ca)
        admin = Client(f"127.0.0.1:{server.mtls_port}", ca.issue(Identity("user", "admin")))
        secret = admin.tokens.CreateToken(tok_pb.CreateTokenRequest(name="j", role="bootstrap",
                                                                    ttl_seconds=600)).secret
        joiner = Client(f"127.0.0.1:{server.port}", TlsFiles(ca.cert_path), secret)
        try:
            yield admin, joiner, store, ca
        finally:
            joiner.channel.close()
            admin.channel.close()
            server.stop(0)


def test_a_bootstrap_token_gets_a_node_certificate_once_per_name(
        api: tuple[Client, Client, EtcdStore, Authority]) -> None:
    admin, joiner, store, ca = api
    csr = signing_request(new_key(), Identity("user", "admin"), ["ignored"]).decode()  # it asks to be admin
    got = joiner.nodes.JoinNode(node_pb.JoinNodeRequest(name="h7", csr_pem=csr, addresses=["h7.lab", "10.1.2.3"]))
    who = verified_identity(got.certificate_pem.encode(), ca.cert_path.read_bytes())
    assert who is not None and who[0] == Identity("node", "h7")  # what the API decided, not what it asked
    names = x509.load_pem_x509_certificate(got.certificate_pem.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "h7.lab" in names.get_values_for_type(x509.DNSName)
    assert "10.1.2.3" in {str(i) for i in names.get_values_for_type(x509.IPAddress)}
    assert got.ca_pem == ca.cert_path.read_text() and list(got.etcd_endpoints) == store.endpoints
    assert store.get(keys.join("h7")) is not None
    with pytest.raises(grpc.RpcError) as e:
        joiner.nodes.JoinNode(node_pb.JoinNodeRequest(name="h7", csr_pem=csr))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as e:
        joiner.vms.ListVms(vm_pb.ListVmsRequest())
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]


@pytest.mark.parametrize("req, field", [
    (node_pb.JoinNodeRequest(name="h8", csr_pem="not a request"), "csr_pem"),
    (node_pb.JoinNodeRequest(name="h8"), "csr_pem"),
    (node_pb.JoinNodeRequest(name="H8\n", csr_pem="x"), "name"),
    (node_pb.JoinNodeRequest(name="h8", csr_pem="x", addresses=["bad name!"]), "addresses[0]"),
    (node_pb.JoinNodeRequest(name="h8", csr_pem="x", addresses=["a"] * 9), "addresses"),
])
def test_a_bad_join_is_invalid_and_certifies_nothing(api: tuple[Client, Client, EtcdStore, Authority],
                                                     req: node_pb.JoinNodeRequest, field: str) -> None:
    _, joiner, store, _ = api
    with pytest.raises(grpc.RpcError) as e:
        joiner.nodes.JoinNode(req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    fields = []
    for d in details(e.value):  # type: ignore[arg-type]
        br = error_details_pb2.BadRequest()
        if d.Unpack(br):  # type: ignore[attr-defined]
            fields += [v.field for v in br.field_violations]
    assert field in fields
    assert store.get(keys.join("h8")) is None


@pytest.mark.parametrize("ttl", [0, 86401])
def test_a_bootstrap_token_must_expire_within_a_day(api: tuple[Client, Client, EtcdStore, Authority],
                                                    ttl: int) -> None:
    admin = api[0]
    with pytest.raises(grpc.RpcError) as e:
        admin.tokens.CreateToken(tok_pb.CreateTokenRequest(name="forever", role="bootstrap", ttl_seconds=ttl))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_a_replica_without_the_ca_key_certifies_nothing(tmp_path: Path) -> None:
    with secure_etcd(tmp_path, "nokey") as (ca, _, store, replica):
        server = create_server("127.0.0.1:0", store, tls=replica)
        try:
            with Client(f"127.0.0.1:{server.mtls_port}", ca.issue(Identity("user", "admin"))) as admin:
                with pytest.raises(grpc.RpcError) as e:
                    admin.nodes.JoinNode(node_pb.JoinNodeRequest(
                        name="h1", csr_pem=signing_request(new_key(), Identity("node", "h1")).decode()))
                assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
        finally:
            server.stop(0)
