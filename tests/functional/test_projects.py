"""Projects on real API replicas in TLS, with tokens for each role: a project's callers see,
change and watch only their project's VMs, networks, ports, volumes, snapshots and migrations
(another's are NOT_FOUND, worded as for a missing one); roles bound what they may do; quotas are
checked and charged in the transaction that commits the placement (or the volume, the network),
so 50 concurrent creates from several clients on two replicas against a quota of 10 VMs place
exactly 10."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from cryptography import x509
from google.rpc import error_details_pb2

from vdcos.apiserver.server import SchedulerServer, create_server
from vdcos.cli.client import Client
from vdcos.model import Quota, Resources, decode
from vdcos.security.pki import Authority, Identity, TlsFiles, key_pem, new_key, signing_request
from vdcos.state import keys
from vdcos.state.etcd import EtcdStore
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import event_service_pb2 as ev_pb
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import project_service_pb2 as proj_pb
from vdcos.v1 import token_service_pb2 as tok_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import volume_service_pb2 as vol_pb
from tests.conftest import details, secure_etcd, sim_agent, wait_until

HOST = Resources(vcpus=64, memory_mib=262_144, disk_gib=4_000)


@dataclass
class Dc:
    ca: Authority
    store: EtcdStore
    servers: list[SchedulerServer]
    admin: Client

    def token_client(self, secret: str, replica: int = 0) -> Client:
        return Client(f"127.0.0.1:{self.servers[replica].port}", TlsFiles(self.ca.cert_path), secret)

    def project(self, name: str, **limits: int) -> None:
        self.admin.projects.CreateProject(proj_pb.CreateProjectRequest(project=proj_pb.Project(name=name)))
        if limits:
            self.admin.projects.SetQuota(proj_pb.SetQuotaRequest(
                project=name, limits=proj_pb.QuotaAmounts(**limits), set=list(limits)))

    def token(self, project: str, role: str) -> str:
        return str(self.admin.tokens.CreateToken(tok_pb.CreateTokenRequest(
            name=f"{project}-{role}", role=role, project=project)).secret)


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dc]:
    base = tmp_path_factory.mktemp("projects")
    with secure_etcd(base, "projects") as (ca, etcd, store, replica):
        servers = [create_server("127.0.0.1:0", store, tls=replica, authority=ca) for _ in range(2)]
        admin = Client(f"127.0.0.1:{servers[0].mtls_port}", ca.issue(Identity("user", "admin")))
        agents = []
        try:
            agents = [sim_agent(etcd, ca, f"h{i}", HOST, base) for i in range(3)]
            wait_until(lambda: all(len(s.cache.node_names()) == 3 for s in servers), timeout=20)
            yield Dc(ca, store, servers, admin)
        finally:
            admin.channel.close()
            for agent, node_store in agents:
                agent.stop()
                node_store.close()
            for s in servers:
                s.stop(0)


def vm(name: str, project: str = "", vcpus: int = 1, networks: tuple[str, ...] = (),
       volumes: tuple[str, ...] = ()) -> vm_pb.CreateVmRequest:
    return vm_pb.CreateVmRequest(spec=pb.VmSpec(
        name=name, resources=pb.Resources(vcpus=vcpus, memory_mib=512, disk_gib=10), project=project,
        networks=list(networks), volumes=list(volumes)))


def code_of(fn: object, *args: object) -> grpc.StatusCode:
    try:
        fn(*args)  # type: ignore[operator]
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()  # type: ignore[no-any-return]


def error_of(fn: object, *args: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args)  # type: ignore[operator]
    return e.value


def test_another_projects_objects_are_not_found(dc: Dc) -> None:
    dc.project("blue")
    dc.project("red")
    with dc.token_client(dc.token("blue", "member")) as blue, dc.token_client(dc.token("red", "member"), 1) as red:
        blue.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(name="bnet",
                                                                                       cidr="10.9.0.0/24")))
        blue.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
            name="bvol", pool=vol_pb.POOL_KIND_LOCAL, size_gib=5)))
        made = blue.vms.CreateVm(vm("b1", networks=("bnet",))).vm
        assert made.spec.project == "blue"  # a project's caller creates in its project, named or not
        red.vms.CreateVm(vm("r1", project="red"))
        # Another project's VM answers exactly as a missing one does.
        theirs = error_of(red.vms.GetVm, vm_pb.GetVmRequest(name="b1"))
        missing = error_of(red.vms.GetVm, vm_pb.GetVmRequest(name="b9"))
        assert theirs.code() == missing.code() == grpc.StatusCode.NOT_FOUND
        assert theirs.details().replace("b1", "b9") == missing.details()
        assert [v.spec.name for v in red.vms.ListVms(vm_pb.ListVmsRequest()).vms] == ["r1"]
        assert [v.spec.name for v in blue.vms.ListVms(vm_pb.ListVmsRequest()).vms] == ["b1"]
        nf = grpc.StatusCode.NOT_FOUND
        assert code_of(red.vms.DeleteVm, vm_pb.DeleteVmRequest(name="b1")) == nf
        assert code_of(red.migrations.MigrateVm, mig_pb.MigrateVmRequest(vm="b1")) == nf
        assert code_of(red.networks.GetNetwork, net_pb.GetNetworkRequest(name="bnet")) == nf
        assert code_of(red.networks.DeleteNetwork, net_pb.DeleteNetworkRequest(name="bnet")) == nf
        assert code_of(red.networks.ListPorts, net_pb.ListPortsRequest(network="bnet")) == nf
        assert code_of(red.networks.CreatePort, net_pb.CreatePortRequest(network="bnet", name="tap", host="h0")) == nf
        assert red.networks.ListNetworks(net_pb.ListNetworksRequest()).networks == []
        assert red.networks.ListPorts(net_pb.ListPortsRequest()).ports == []
        assert code_of(red.vms.CreateVm, vm("r2", networks=("bnet",))) == nf  # a NIC on blue's network
        # Events too: a project's callers see their VMs' alone, and no node's, whatever they ask.
        def names(c: Client, **f: str) -> set[tuple[str, str]]:
            got = c.events.ListEvents(ev_pb.ListEventsRequest(filter=ev_pb.EventFilter(**f))).events
            return {(e.kind, e.name) for e in got}
        wait_until(lambda: ("vm.placed", "r1") in names(red), timeout=10)
        assert {p for _, p in {(e.kind, e.project) for e in red.events.ListEvents(ev_pb.ListEventsRequest()).events}} \
            == {"red"}
        assert not any(n == "b1" for _, n in names(red)) and not any(k.startswith("node.") for k, _ in names(red))
        assert code_of(red.events.ListEvents, ev_pb.ListEventsRequest(filter=ev_pb.EventFilter(project="blue"))) == nf
        assert ("vm.placed", "b1") in names(blue) and ("vm.placed", "b1") in names(dc.admin, project="blue")
        assert code_of(red.vms.CreateVm, vm("r3", project="blue")) == nf
        assert code_of(red.volumes.GetVolume, vol_pb.GetVolumeRequest(name="bvol")) == nf
        assert code_of(red.volumes.DeleteVolume, vol_pb.DeleteVolumeRequest(name="bvol")) == nf
        assert code_of(red.volumes.AttachVolume, vol_pb.AttachVolumeRequest(name="bvol", vm="r1")) == nf
        assert code_of(red.volumes.CreateSnapshot, vol_pb.CreateSnapshotRequest(
            snapshot=vol_pb.Snapshot(name="s", volume="bvol"))) == nf
        assert code_of(red.vms.CreateVm, vm("r4", volumes=("bvol",))) == grpc.StatusCode.INVALID_ARGUMENT
        assert red.volumes.ListVolumes(vol_pb.ListVolumesRequest()).volumes == []
        # Nothing of those refusals changed anything.
        names = sorted(v.spec.name for v in dc.admin.vms.ListVms(vm_pb.ListVmsRequest()).vms)
        assert names == ["b1", "r1"]
        assert dc.admin.volumes.GetVolume(vol_pb.GetVolumeRequest(name="bvol")).volume.vm == ""
        assert [p.name for p in blue.networks.ListPorts(net_pb.ListPortsRequest(network="bnet")).ports] == ["b1"]
        # The cluster admin sees both, and can ask for one project's.
        got = dc.admin.vms.ListVms(vm_pb.ListVmsRequest(project="red")).vms
        assert [v.spec.name for v in got] == ["r1"]
        for c, name in ((blue, "b1"), (red, "r1")):
            c.vms.DeleteVm(vm_pb.DeleteVmRequest(name=name))
        blue.volumes.DeleteVolume(vol_pb.DeleteVolumeRequest(name="bvol"))
        blue.networks.DeleteNetwork(net_pb.DeleteNetworkRequest(name="bnet"))


def test_roles_bound_what_a_project_caller_may_do(dc: Dc) -> None:
    dc.project("green")
    denied = grpc.StatusCode.PERMISSION_DENIED
    with (dc.token_client(dc.token("green", "reader")) as reader,
          dc.token_client(dc.token("green", "member")) as member,
          dc.token_client(dc.token("green", "owner")) as owner):
        assert code_of(reader.vms.CreateVm, vm("g1")) == denied
        assert code_of(reader.vms.ListVms, vm_pb.ListVmsRequest()) == grpc.StatusCode.OK
        member.vms.CreateVm(vm("g1"))
        assert code_of(reader.vms.DeleteVm, vm_pb.DeleteVmRequest(name="g1")) == denied
        for c in (reader, member, owner):  # cluster-scoped: no project role reaches them
            assert code_of(c.nodes.ListNodes, node_pb.ListNodesRequest()) == denied
            assert code_of(c.nodes.CordonNode, node_pb.CordonNodeRequest(name="h0")) == denied
            assert code_of(c.projects.CreateProject, proj_pb.CreateProjectRequest(
                project=proj_pb.Project(name="mine"))) == denied
            assert code_of(c.projects.SetQuota, proj_pb.SetQuotaRequest(project="green", set=["vms"])) == denied
            # Their own project and quota they may read; another's is not found.
            assert c.projects.GetQuota(proj_pb.GetQuotaRequest(project="green")).quota.used.vms == 1
            assert code_of(c.projects.GetQuota, proj_pb.GetQuotaRequest(project="blue")) == grpc.StatusCode.NOT_FOUND
            assert [p.name for p in c.projects.ListProjects(proj_pb.ListProjectsRequest()).projects] == ["green"]
        # Tokens: an owner makes its project's, and sees and revokes only those.
        assert code_of(member.tokens.CreateToken, tok_pb.CreateTokenRequest(name="x", role="reader")) == denied
        made = owner.tokens.CreateToken(tok_pb.CreateTokenRequest(name="ci", role="member"))
        assert made.token.project == "green"
        assert code_of(owner.tokens.CreateToken, tok_pb.CreateTokenRequest(
            name="x", role="member", project="blue")) == grpc.StatusCode.NOT_FOUND
        assert code_of(owner.tokens.CreateToken, tok_pb.CreateTokenRequest(
            name="x", role="admin")) == grpc.StatusCode.INVALID_ARGUMENT
        listed = owner.tokens.ListTokens(tok_pb.ListTokensRequest()).tokens
        assert listed and {t.project for t in listed} == {"green"}
        cluster_token = next(t for t in dc.admin.tokens.ListTokens(tok_pb.ListTokensRequest()).tokens
                             if t.project != "green")
        assert code_of(owner.tokens.RevokeToken, tok_pb.RevokeTokenRequest(
            accessor=cluster_token.accessor)) == grpc.StatusCode.NOT_FOUND
        with dc.token_client(made.secret) as ci:
            assert [v.spec.name for v in ci.vms.ListVms(vm_pb.ListVmsRequest()).vms] == ["g1"]
        member.vms.DeleteVm(vm_pb.DeleteVmRequest(name="g1"))


def test_a_projects_watch_shows_only_its_vms(dc: Dc) -> None:
    dc.project("w1")
    dc.project("w2")
    with dc.token_client(dc.token("w1", "reader")) as watcher, dc.token_client(dc.token("w2", "member")) as other, \
            dc.token_client(dc.token("w1", "member")) as mine:
        seen: list[tuple[int, str]] = []
        stream = watcher.vms.WatchVms(vm_pb.WatchVmsRequest())
        done = threading.Event()

        def read() -> None:
            try:
                for ev in stream:
                    seen.append((ev.type, ev.vm.spec.name))
                    if (ev.type, ev.vm.spec.name) == (pb.EVENT_TYPE_DELETE, "w1-b"):
                        break
            finally:
                done.set()
        threading.Thread(target=read, daemon=True).start()
        probes: list[str] = []

        def watching() -> bool:
            """A VM of its own seen on the stream: the watch is in place (it begins when the
            server takes the call, which this thread cannot see)."""
            probes.append(f"w1-probe-{len(probes)}")
            mine.vms.CreateVm(vm(probes[-1]))
            time.sleep(0.2)
            return any(name.startswith("w1-probe-") for _, name in seen)
        wait_until(watching, timeout=20, every=0)
        other.vms.CreateVm(vm("w2-a"))
        mine.vms.CreateVm(vm("w1-b"))
        other.vms.DeleteVm(vm_pb.DeleteVmRequest(name="w2-a"))
        mine.vms.DeleteVm(vm_pb.DeleteVmRequest(name="w1-b"))
        assert done.wait(20)
        stream.cancel()
        assert {name for _, name in seen if not name.startswith("w1-probe-")} == {"w1-b"}
        assert (pb.EVENT_TYPE_DELETE, "w1-b") in seen
        for name in probes:
            mine.vms.DeleteVm(vm_pb.DeleteVmRequest(name=name))


def quota_failure(e: grpc.RpcError) -> error_details_pb2.QuotaFailure:
    for d in details(e):
        if d.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):  # type: ignore[attr-defined]
            qf = error_details_pb2.QuotaFailure()
            d.Unpack(qf)  # type: ignore[attr-defined]
            return qf
    raise AssertionError(f"no QuotaFailure in {e}")


def test_fifty_concurrent_creates_against_a_quota_of_ten_place_exactly_ten(dc: Dc) -> None:
    dc.project("q", vms=10)
    secrets = [dc.token("q", "member") for _ in range(5)]
    clients = [dc.token_client(s, i % 2) for i, s in enumerate(secrets)]  # two replicas, five clients
    start = threading.Barrier(50)
    before = [dict(s.scheduler.stats) for s in dc.servers]

    def create(i: int) -> grpc.StatusCode | error_details_pb2.QuotaFailure:
        start.wait()
        try:
            clients[i % 5].vms.CreateVm(vm(f"q-{i}"), timeout=30)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return quota_failure(e) if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else e.code()
    try:
        with ThreadPoolExecutor(50) as pool:
            got = list(pool.map(create, range(50)))
    finally:
        for c in clients:
            c.channel.close()
    placed = [g for g in got if g == grpc.StatusCode.OK]
    refused = [g for g in got if isinstance(g, error_details_pb2.QuotaFailure)]
    assert len(placed) == 10 and len(refused) == 40, got
    # Both replicas decided creates, and their commits met on the quota record: a real race.
    stats = [{k: s.scheduler.stats[k] - b[k] for k in b} for s, b in zip(dc.servers, before)]
    assert all(st["batches"] > 0 for st in stats), stats
    v = refused[0].violations[0]
    assert (v.subject, v.quota_metric, v.quota_value) == ("project:q", "vdcos.io/vms", 10)
    assert "10 in use" in v.description
    # What etcd holds agrees: ten VMs of the project, and the quota's use says so.
    vms = list(dc.admin.vms.ListVms(vm_pb.ListVmsRequest(project="q")).vms)
    assert len(vms) == 10
    q = dc.admin.projects.GetQuota(proj_pb.GetQuotaRequest(project="q")).quota
    assert (q.used.vms, q.used.vcpus, q.used.memory_mib, q.used.disk_gib) == (10, 10, 5120, 100)
    # A delete gives its share back in its own transaction; a batch takes what is left, no more.
    for x in vms[:3]:
        dc.admin.vms.DeleteVm(vm_pb.DeleteVmRequest(name=x.spec.name))
    with dc.token_client(secrets[0]) as c:
        batch = c.vms.BatchCreateVms(vm_pb.BatchCreateVmsRequest(requests=[vm(f"qb-{i}") for i in range(5)]))
    codes = [r.error.code for r in batch.results]
    assert codes.count(0) == 3 and codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]) == 2, codes
    kv = dc.store.get(keys.quota("q"))
    assert kv is not None and decode(Quota, json.loads(kv.value)).used.vms == 10
    for x in dc.admin.vms.ListVms(vm_pb.ListVmsRequest(project="q")).vms:
        dc.admin.vms.DeleteVm(vm_pb.DeleteVmRequest(name=x.spec.name))
    assert dc.admin.projects.GetQuota(proj_pb.GetQuotaRequest(project="q")).quota.used.vms == 0


def test_network_and_volume_quotas_and_an_empty_project_goes(dc: Dc) -> None:
    dc.project("nv", networks=1, disk_gib=25)
    owner = dc.token("nv", "owner")
    with dc.token_client(owner) as c:
        c.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(name="nv-a", cidr="10.8.0.0/24")))
        e = error_of(c.networks.CreateNetwork, net_pb.CreateNetworkRequest(
            network=net_pb.Network(name="nv-b", cidr="10.8.1.0/24")))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and quota_failure(e).violations[0].quota_value == 1
        assert code_of(dc.admin.networks.GetNetwork, net_pb.GetNetworkRequest(name="nv-b")) == grpc.StatusCode.NOT_FOUND
        c.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
            name="nv-v", pool=vol_pb.POOL_KIND_LOCAL, size_gib=20)))
        wait_until(lambda: c.volumes.GetVolume(vol_pb.GetVolumeRequest(name="nv-v")).volume.state
                   == vol_pb.VOLUME_STATE_AVAILABLE)  # its agent made it: a resize may be asked
        e = error_of(c.volumes.ResizeVolume, vol_pb.ResizeVolumeRequest(name="nv-v", size_gib=26))
        assert quota_failure(e).violations[0].quota_metric == "vdcos.io/disk_gib"
        e = error_of(c.vms.CreateVm, vm("nv-1"))  # 10 GiB of its own disk on top of 20: too much
        assert quota_failure(e).violations[0].quota_metric == "vdcos.io/disk_gib"
        c.volumes.ResizeVolume(vol_pb.ResizeVolumeRequest(name="nv-v", size_gib=25))
        q = c.projects.GetQuota(proj_pb.GetQuotaRequest(project="nv")).quota
        assert (q.used.networks, q.used.volumes, q.used.disk_gib) == (1, 1, 25)
        e = error_of(dc.admin.projects.DeleteProject, proj_pb.DeleteProjectRequest(name="nv"))
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
        c.volumes.DeleteVolume(vol_pb.DeleteVolumeRequest(name="nv-v"))
        c.networks.DeleteNetwork(net_pb.DeleteNetworkRequest(name="nv-a"))
        assert c.projects.GetQuota(proj_pb.GetQuotaRequest(project="nv")).quota.used == proj_pb.QuotaAmounts()
    dc.admin.projects.DeleteProject(proj_pb.DeleteProjectRequest(name="nv"))
    with dc.token_client(owner, 1) as c:  # its tokens went with it, on every replica
        def refused() -> bool:
            return code_of(c.vms.ListVms, vm_pb.ListVmsRequest()) == grpc.StatusCode.UNAUTHENTICATED
        wait_until(refused, timeout=10, every=0.2)


def test_placement_groups_are_per_project(dc: Dc) -> None:
    """Two projects' groups of one name are two groups: red's hard anti-affinity "db" fills every
    host, and blue's "db" still places, neither constraining nor revealing the other."""
    def in_db(name: str) -> vm_pb.CreateVmRequest:
        req = vm(name)
        req.spec.placement_group, req.spec.group_policy = "db", pb.AFFINITY_POLICY_ANTI_AFFINITY
        return req

    dc.project("gr-red")
    dc.project("gr-blue")
    with dc.token_client(dc.token("gr-red", "member")) as red, \
            dc.token_client(dc.token("gr-blue", "member")) as blue:
        nodes = {red.vms.CreateVm(in_db(f"red-db-{i}")).vm.placement.node for i in range(3)}
        assert len(nodes) == 3  # one per host: the group is hard anti-affinity
        e = error_of(red.vms.CreateVm, in_db("red-db-3"))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "anti-affinity" in (e.details() or "")
        got = blue.vms.CreateVm(in_db("blue-db-0")).vm
        assert got.spec.placement_group == "db" and got.spec.project == "gr-blue"
        assert red.vms.GetVm(vm_pb.GetVmRequest(name="red-db-0")).vm.spec.placement_group == "db"
        groups = {kv.key for kv in dc.store.get_prefix(keys.GROUPS)[0]}
        assert {keys.group("gr-red/db"), keys.group("gr-blue/db")} <= groups and keys.group("db") not in groups
        for name in ("red-db-0", "red-db-1", "red-db-2"):
            red.vms.DeleteVm(vm_pb.DeleteVmRequest(name=name))
        blue.vms.DeleteVm(vm_pb.DeleteVmRequest(name="blue-db-0"))


def test_a_certificate_credential_holds_its_project_role_until_revoked(dc: Dc, tmp_path: Path) -> None:
    """As Incus's restricted client certificates: a project's owner has a member's key certified
    (the key never leaves its holder); the certificate, for client use only, acts as that role in
    that project on every replica, and counts no more once revoked."""
    dc.project("crt")
    key = new_key()
    with dc.token_client(dc.token("crt", "owner")) as owner:
        for req, field in ((tok_pb.CreateTokenRequest(name="ci", role="member", csr_pem="not a request"), "csr_pem"),
                           (tok_pb.CreateTokenRequest(name="ci", role="member", csr_pem="x", ttl_seconds=400 * 86400),
                            "ttl_seconds")):
            e = error_of(owner.tokens.CreateToken, req)
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and field in (e.details() or "")
        r = owner.tokens.CreateToken(tok_pb.CreateTokenRequest(
            name="ci", role="member", ttl_seconds=3600,
            csr_pem=signing_request(key, Identity("user", "admin")).decode()))  # asks to be admin: ignored
        assert (r.secret, r.token.certificate, r.token.project, r.token.role) == ("", True, "crt", "member")
        cert = x509.load_pem_x509_certificate(r.certificate_pem.encode())
        assert Identity.of(r.certificate_pem.encode()) == Identity("cred", r.token.accessor)
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
            x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]  # no client takes its holder for a server
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        (tmp_path / "ci.pem").write_bytes(r.certificate_pem.encode())
        (tmp_path / "ci-key.pem").write_bytes(key_pem(key))
        files = TlsFiles(dc.ca.cert_path, tmp_path / "ci.pem", tmp_path / "ci-key.pem")
        with Client(f"127.0.0.1:{dc.servers[1].mtls_port}", files) as member:
            got = member.vms.CreateVm(vm("crt-1")).vm
            assert got.spec.project == "crt"
            assert {v.spec.project for v in member.vms.ListVms(vm_pb.ListVmsRequest()).vms} == {"crt"}
            e = error_of(member.tokens.ListTokens, tok_pb.ListTokensRequest())
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED and "member in project crt" in (e.details() or "")
            member.vms.DeleteVm(vm_pb.DeleteVmRequest(name="crt-1"))
            owner.tokens.RevokeToken(tok_pb.RevokeTokenRequest(accessor=r.token.accessor))

            def refused() -> bool:
                return code_of(member.vms.ListVms, vm_pb.ListVmsRequest()) == grpc.StatusCode.UNAUTHENTICATED
            wait_until(refused, timeout=10, every=0.2)


def test_snapshots_count_against_disk_and_their_own_quota(dc: Dc) -> None:
    """As Cinder's `gigabytes` and `snapshots`: a snapshot holds as much disk as its volume, so a
    project cannot fill a pool through snapshots its disk quota does not see."""
    dc.project("sn", disk_gib=25, snapshots=2)
    with dc.token_client(dc.token("sn", "member")) as c:
        c.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
            name="sn-v", pool=vol_pb.POOL_KIND_LOCAL, size_gib=10)))
        wait_until(lambda: c.volumes.GetVolume(vol_pb.GetVolumeRequest(name="sn-v")).volume.state
                   == vol_pb.VOLUME_STATE_AVAILABLE)

        def take(name: str) -> None:
            c.volumes.CreateSnapshot(vol_pb.CreateSnapshotRequest(snapshot=vol_pb.Snapshot(name=name, volume="sn-v")))
            wait_until(lambda: c.volumes.GetSnapshot(vol_pb.GetSnapshotRequest(name=name)).snapshot.state
                       == vol_pb.VOLUME_STATE_AVAILABLE)

        take("sn-1")
        q = c.projects.GetQuota(proj_pb.GetQuotaRequest(project="sn")).quota
        assert (q.used.volumes, q.used.snapshots, q.used.disk_gib) == (1, 1, 20)
        e = error_of(c.volumes.CreateSnapshot, vol_pb.CreateSnapshotRequest(
            snapshot=vol_pb.Snapshot(name="sn-2", volume="sn-v")))  # 30 GiB > 25
        v = quota_failure(e).violations[0]
        assert (e.code(), v.quota_metric, v.quota_value) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "vdcos.io/disk_gib", 25)
        assert code_of(c.volumes.GetSnapshot, vol_pb.GetSnapshotRequest(name="sn-2")) == grpc.StatusCode.NOT_FOUND
        dc.admin.projects.SetQuota(proj_pb.SetQuotaRequest(project="sn", limits=proj_pb.QuotaAmounts(
            disk_gib=100, snapshots=1), set=["disk_gib", "snapshots"]))
        v = quota_failure(error_of(c.volumes.CreateSnapshot, vol_pb.CreateSnapshotRequest(
            snapshot=vol_pb.Snapshot(name="sn-2", volume="sn-v")))).violations[0]
        assert (v.quota_metric, v.quota_value) == ("vdcos.io/snapshots", 1)
        # The volume goes; its snapshot stays, and so does the project while it holds one.
        c.volumes.DeleteVolume(vol_pb.DeleteVolumeRequest(name="sn-v"))
        e = error_of(dc.admin.projects.DeleteProject, proj_pb.DeleteProjectRequest(name="sn"))
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "1 snapshots" in (e.details() or "")
        c.volumes.DeleteSnapshot(vol_pb.DeleteSnapshotRequest(name="sn-1"))
        assert c.projects.GetQuota(proj_pb.GetQuotaRequest(project="sn")).quota.used == proj_pb.QuotaAmounts()
    dc.admin.projects.DeleteProject(proj_pb.DeleteProjectRequest(name="sn"))


@pytest.mark.parametrize("req, field", [
    (proj_pb.SetQuotaRequest(project="green", set=["cpus"]), "set[0]"),
    (proj_pb.SetQuotaRequest(project="green", limits=proj_pb.QuotaAmounts(vms=-5), set=["vms"]), "limits.vms"),
    (proj_pb.SetQuotaRequest(project="green"), "set"),
    (proj_pb.SetQuotaRequest(project="Green\n", set=["vms"]), "project"),
])
def test_a_bad_quota_request_is_invalid_and_changes_nothing(dc: Dc, req: proj_pb.SetQuotaRequest, field: str) -> None:
    if code_of(dc.admin.projects.GetProject, proj_pb.GetProjectRequest(name="green")) != grpc.StatusCode.OK:
        dc.project("green")
    before = dc.admin.projects.GetQuota(proj_pb.GetQuotaRequest(project="green")).quota
    e = error_of(dc.admin.projects.SetQuota, req)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = []
    for d in details(e):
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):  # type: ignore[attr-defined]
            br = error_details_pb2.BadRequest()
            d.Unpack(br)  # type: ignore[attr-defined]
            fields += [v.field for v in br.field_violations]
    assert field in fields
    assert dc.admin.projects.GetQuota(proj_pb.GetQuotaRequest(project="green")).quota == before


def test_every_mutating_call_is_audited_with_who_what_and_how_it_ended(dc: Dc) -> None:
    from vdcos.v1 import audit_service_pb2 as audit_pb

    dc.project("aud")
    with dc.token_client(dc.token("aud", "member")) as member, dc.token_client(dc.token("aud", "reader"), 1) as rd:
        member.vms.CreateVm(vm("aud-1"))
        member.vms.ListVms(vm_pb.ListVmsRequest())
        assert code_of(rd.vms.DeleteVm, vm_pb.DeleteVmRequest(name="aud-1")) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(member.vms.DeleteVm, vm_pb.DeleteVmRequest(name="nope")) == grpc.StatusCode.NOT_FOUND
        assert code_of(member.audit.ListAuditEntries, audit_pb.ListAuditEntriesRequest()) == \
            grpc.StatusCode.PERMISSION_DENIED  # the log is the cluster's
        member.vms.DeleteVm(vm_pb.DeleteVmRequest(name="aud-1"))

    def logged() -> list[audit_pb.AuditEntry]:
        got = dc.admin.audit.ListAuditEntries(audit_pb.ListAuditEntriesRequest(project="aud")).entries
        return list(got) if len(got) >= 4 else []
    entries = wait_until(logged, timeout=10)
    assert isinstance(entries, list)
    calls = [(e.method.rsplit("/", 1)[1], e.target, e.role, e.code) for e in entries]  # newest first
    assert calls == [("DeleteVm", "aud-1", "member", "OK"), ("DeleteVm", "nope", "member", "NOT_FOUND"),
                     ("DeleteVm", "aud-1", "reader", "PERMISSION_DENIED"), ("CreateVm", "aud-1", "member", "OK")], calls
    assert all(e.who.startswith("token:tok-") and e.who.endswith("(aud-member)") or "(aud-reader)" in e.who
               for e in entries)
    assert "may not delete vms" in entries[2].message
    # Both replicas wrote theirs; the admin's own calls are there by certificate.
    assert {e.replica for e in entries} == {f"127.0.0.1:{s.port}" for s in dc.servers}
    mine = dc.admin.audit.ListAuditEntries(audit_pb.ListAuditEntriesRequest(who="user:admin")).entries
    assert any(e.method.endswith("/CreateProject") and e.target == "aud" for e in mine)
    failed = dc.admin.audit.ListAuditEntries(audit_pb.ListAuditEntriesRequest(project="aud", failed_only=True)).entries
    assert [e.code for e in failed] == ["NOT_FOUND", "PERMISSION_DENIED"]
