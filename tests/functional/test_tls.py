"""Transport security on real components: etcd members in TLS with client-certificate
authentication (one member and three), and the API serving TLS only."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import socket
import subprocess
import sys

import grpc
import pytest

from tests.conftest import wait_until
from vdcos.apiserver.server import create_server
from vdcos.cli.client import Client
from vdcos.security.pki import Authority, Identity, TlsFiles
from vdcos.state.etcd import EtcdStore
from vdcos.state.etcd_server import EtcdCluster, EtcdServer
from vdcos.state.store import StoreError
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import vm_service_pb2_grpc


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority.ensure(tmp_path / "pki", "t1")


@pytest.fixture
def tls_etcd(ca: Authority, tmp_path: Path) -> Iterator[EtcdServer]:
    srv = EtcdServer(tmp_path / "etcd", tls=ca.issue(Identity("etcd", "etcd-1"))).start()
    yield srv
    srv.stop()


def test_etcd_takes_a_client_with_a_certificate_from_the_datacenter_ca(tls_etcd: EtcdServer, ca: Authority) -> None:
    store = EtcdStore(tls_etcd.endpoint, tls=ca.issue(Identity("node", "n1")))
    try:
        store.put("/vdcos/t", b"1")
        assert store.get("/vdcos/t").value == b"1"  # type: ignore[union-attr]
    finally:
        store.close()


@pytest.mark.parametrize("how", ["plaintext", "no client certificate", "another CA"])
def test_etcd_refuses_every_other_client(tls_etcd: EtcdServer, ca: Authority, tmp_path: Path, how: str) -> None:
    if how == "plaintext":
        tls = None
    elif how == "no client certificate":
        tls = TlsFiles(ca.cert_path)
    else:
        tls = Authority.ensure(tmp_path / "other", "t2").issue(Identity("user", "admin"))
    store = EtcdStore(tls_etcd.endpoint, timeout=2, tls=tls)
    try:
        with pytest.raises(StoreError):
            store.put("/vdcos/t", b"stolen")
    finally:
        store.close()
    ok = EtcdStore(tls_etcd.endpoint, tls=ca.issue(Identity("user", "admin")))
    try:
        assert ok.get("/vdcos/t") is None
    finally:
        ok.close()


def test_three_members_peer_over_tls_and_elect_again(ca: Authority, tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "etcd3", 3, tls={i: ca.issue(Identity("etcd", f"etcd-{i}")) for i in (1, 2, 3)})
    cluster.start()
    store = EtcdStore(cluster.endpoint, tls=ca.issue(Identity("scheduler", "s1")))
    try:
        assert all("https://" in a for m in cluster.members for a in m.argv() if a.startswith(("http", "https")))
        store.put("/vdcos/a", b"1")
        leader = cluster.leader()
        assert leader is not None
        leader.kill()
        store.put("/vdcos/b", b"2")  # a new leader, elected over TLS
        assert store.get("/vdcos/a").value == b"1"  # type: ignore[union-attr]
    finally:
        store.close()
        cluster.stop()


def _refused_at_handshake(c: Client) -> None:
    with pytest.raises(grpc.RpcError) as e:
        c.vms.ListVms(vm_pb.ListVmsRequest(), timeout=5)
    assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_the_api_serves_tls_only(tls_etcd: EtcdServer, ca: Authority) -> None:
    replica = ca.issue(Identity("scheduler", "scheduler-1"))
    store = EtcdStore(tls_etcd.endpoint, tls=replica)
    server = create_server("127.0.0.1:0", store, tls=replica)
    addr, mtls = f"127.0.0.1:{server.port}", f"127.0.0.1:{server.mtls_port}"
    try:
        with Client(mtls, tls=ca.issue(Identity("user", "admin"))) as c:
            assert list(c.vms.ListVms(vm_pb.ListVmsRequest(), timeout=10).vms) == []
        for port in (addr, mtls):
            with grpc.insecure_channel(port) as plain:
                with pytest.raises(grpc.RpcError) as e:
                    vm_service_pb2_grpc.VmServiceStub(plain).ListVms(vm_pb.ListVmsRequest(), timeout=5)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        with Client(mtls, tls=TlsFiles(ca.cert_path)) as c:  # TLS, but no client certificate
            _refused_at_handshake(c)
    finally:
        server.stop(0)
        store.close()


@pytest.mark.parametrize("kind", ["node", "user", "etcd"])
def test_no_other_certificate_of_the_ca_passes_for_an_api_replica(tls_etcd: EtcdServer, ca: Authority,
                                                                 kind: str) -> None:
    """A host's agent, an operator or an etcd member holds a certificate from the same CA that
    names 127.0.0.1 too; serving the API with it, it is refused by our clients, which check the
    name only replicas' certificates carry (pki.API_NAME), whatever address they reached."""
    impostor = ca.issue(Identity(kind, "mallory"))
    store = EtcdStore(tls_etcd.endpoint, tls=ca.issue(Identity("scheduler", "scheduler-1")))
    server = create_server("127.0.0.1:0", store, tls=impostor)
    try:
        with Client(f"127.0.0.1:{server.mtls_port}", tls=ca.issue(Identity("user", "admin"))) as c:
            _refused_at_handshake(c)
    finally:
        server.stop(0)
        store.close()


def test_no_other_certificate_of_the_ca_passes_for_an_etcd_member(ca: Authority, tmp_path: Path) -> None:
    """Likewise for etcd: a member serving with a host's certificate is refused by our clients
    (pki.ETCD_NAME), so a host cannot pose as the cluster state to the replicas."""
    srv = EtcdServer(tmp_path / "fake", tls=ca.issue(Identity("node", "mallory"))).launch()
    try:
        # Not start(): its readiness check is one of the clients that refuse this member.
        wait_until(lambda: _listening(srv.client_port), timeout=20)
        store = EtcdStore(srv.endpoint, timeout=3.0, tls=ca.issue(Identity("scheduler", "scheduler-1")))
        with pytest.raises(StoreError):
            store.get("/vdcos/config/scheduler")
        store.close()
    finally:
        srv.stop()


@pytest.mark.parametrize("daemon", ["vdcos.apiserver", "vdcos.nodeagent"])
def test_a_daemon_without_certificates_refuses_to_start_unless_told_insecure(daemon: str, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", daemon, "--etcd", "127.0.0.1:1"]
    if daemon == "vdcos.nodeagent":
        argv += ["--name", "n1", "--state-dir", str(tmp_path / "n1")]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--etcd-cacert" in p.stderr and "--insecure" in p.stderr, p.stderr
