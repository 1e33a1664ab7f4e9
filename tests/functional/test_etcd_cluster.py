"""The control plane on a real 3-member etcd that loses members: commits go on after the leader
dies and nothing accepted is lost; watches that break (a dead member, a compacted revision) are
listed again; a replica whose cache may be behind says NOT_SERVING and places nothing."""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pyetcd import etcdrpc

from tests.conftest import wait_until
from vdcos.apiserver.server import create_server
from vdcos.cli.client import Client
from vdcos.model import Allocation, NodeSpec, Resources, decode, dumps
from vdcos.nodeagent.agent import NodeAgent
from vdcos.nodeagent.sim import SimDriver
from vdcos.scheduler.cache import ClusterCache
from vdcos.state import keys
from vdcos.state.etcd import EtcdStore
from vdcos.state.etcd_server import EtcdCluster, EtcdServer
from vdcos.state.store import CompactedError
from vdcos.storagepool.pool import SimPools
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import vm_service_pb2_grpc
from vdcos.v1 import volume_service_pb2 as vol_pb

pytestmark = pytest.mark.etcd

HOST = Resources(64, 262144, 4000, 10000)


@pytest.fixture
def etcd3() -> Iterator[EtcdCluster]:
    base = Path(tempfile.mkdtemp(prefix="vdcos-etcd3-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    cluster = EtcdCluster(base, 3).start()
    yield cluster
    cluster.stop()
    import shutil
    shutil.rmtree(base, ignore_errors=True)


def _leader(cluster: EtcdCluster) -> EtcdServer:
    return wait_until(lambda: cluster.leader(), timeout=10)  # type: ignore[return-value]


def _spec(vm: str) -> pb.VmSpec:
    return pb.VmSpec(name=vm, resources=pb.Resources(vcpus=1, memory_mib=256, disk_gib=1))


def test_creates_go_on_after_the_leader_dies_and_nothing_accepted_is_lost(etcd3: EtcdCluster, tmp_path: Path) -> None:
    store = EtcdStore(etcd3.endpoint)
    server = create_server("127.0.0.1:0", store)
    agents = [NodeAgent(store, NodeSpec(f"n{i}", HOST, (), "sim", ""), SimDriver(HOST, tmp_path / f"n{i}.json"),
                        lease_ttl=10, resync_s=0.5, pools=SimPools(f"n{i}", HOST.disk_gib)).start()
              for i in range(3)]
    client = Client(f"127.0.0.1:{server.port}")
    accepted: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            name = f"vm-{i}"
            try:
                client.vms.CreateVm(vm_pb.CreateVmRequest(spec=_spec(name), request_id=f"req-{name}"), timeout=15)
                accepted.append(name)
                i += 1
            except grpc.RpcError as e:
                # UNAVAILABLE (the commit's fate is unknown): the same request again, as a client would.
                assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), e
                refused.append(name)
    try:
        wait_until(lambda: len(server.cache.node_names()) == 3)
        t = threading.Thread(target=load)
        t.start()
        wait_until(lambda: len(accepted) >= 20, timeout=30)
        victim = _leader(etcd3)
        at = len(accepted)
        victim.kill()
        wait_until(lambda: len(accepted) >= at + 20, timeout=30)  # writes resume after the election
        etcd3.restart(victim)
        wait_until(lambda: len(accepted) >= at + 40, timeout=30)
        stop.set()
        t.join(30)
        # Every accepted create exists exactly once, with its allocation, and nothing else does.
        kvs, _ = store.get_prefix(keys.VMS)
        specs = sorted(kv.key.split("/")[3] for kv in kvs if kv.key.endswith("/spec"))
        assert specs == sorted(accepted), set(specs) ^ set(accepted)
        allocated = [e.vm for kv in store.get_prefix(keys.ALLOC)[0]
                     for e in decode(Allocation, json.loads(kv.value)).entries]
        assert sorted(allocated) == sorted(accepted)
    finally:
        stop.set()
        client.channel.close()
        for a in agents:
            a.stop()
        server.stop(0)
        store.close()


def test_a_watch_from_a_compacted_revision_says_so(etcd3: EtcdCluster) -> None:
    store = EtcdStore(etcd3.endpoint)
    try:
        first = store.put("/vdcos/test/a", b"1")
        rev = store.put("/vdcos/test/a", b"2")
        with grpc.insecure_channel(etcd3.endpoints[0]) as ch:
            etcdrpc.KVStub(ch).Compact(etcdrpc.CompactionRequest(revision=rev, physical=True), timeout=5)
        errors: list[Exception] = []
        cancel = store.watch_prefix("/vdcos/test/", first, lambda evs, r: None, errors.append)
        wait_until(lambda: errors)
        assert isinstance(errors[0], CompactedError)
        cancel()
    finally:
        store.close()


def test_the_cache_lists_again_after_its_member_dies_and_sees_what_changed_meanwhile(etcd3: EtcdCluster) -> None:
    # The cache's store talks to member 1 alone: its death breaks the cache's watches.
    only = etcd3.members[0]
    cache_store = EtcdStore(only.endpoint, timeout=2)
    writer = EtcdStore(etcd3.endpoints[1:])
    writer.put(keys.alloc("gone"), dumps(Allocation("gone", ())))
    writer.put(keys.alloc("kept"), dumps(Allocation("kept", ())))
    cache = ClusterCache(cache_store).start()
    try:
        assert cache.synced and set(cache.allocs) == {"gone", "kept"}
        only.kill()
        wait_until(lambda: not cache.synced)
        writer.delete(keys.alloc("gone"))
        rev = writer.put(keys.alloc("new"), dumps(Allocation("new", ())))
        for _ in range(3):  # and compact past what the cache had seen
            rev = writer.put(keys.alloc("kept"), dumps(Allocation("kept", ())))
        with grpc.insecure_channel(etcd3.endpoints[1]) as ch:
            etcdrpc.KVStub(ch).Compact(etcdrpc.CompactionRequest(revision=rev, physical=True), timeout=5)
        etcd3.restart(only)
        wait_until(lambda: cache.synced, timeout=20)
        assert set(cache.allocs) == {"kept", "new"}
        assert cache.revision >= rev
        # And it follows the store again.
        assert cache.wait_for_revision(writer.put(keys.alloc("later"), dumps(Allocation("later", ()))))
        assert "later" in cache.allocs
    finally:
        cache.stop()
        cache_store.close()
        writer.close()


def test_a_replica_whose_cache_is_behind_is_not_serving_and_places_nothing(tmp_path: Path) -> None:
    etcd = EtcdServer(tmp_path / "etcd").start()
    store = EtcdStore(etcd.endpoint, timeout=2)
    server = create_server("127.0.0.1:0", store)
    agent = NodeAgent(store, NodeSpec("n1", HOST, (), "sim", ""), SimDriver(HOST, tmp_path / "n1.json"),
                      lease_ttl=10, resync_s=0.5, pools=SimPools("n1", HOST.disk_gib)).start()
    client = Client(f"127.0.0.1:{server.port}")
    # Health on a plain channel: the client's own skips a replica that is not serving.
    plain = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    health = health_pb2_grpc.HealthStub(plain)

    def status() -> int:
        return int(health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status)
    try:
        wait_until(lambda: server.cache.node("n1") is not None)
        client.vms.CreateVm(vm_pb.CreateVmRequest(spec=_spec("before")), timeout=10)
        assert status() == health_pb2.HealthCheckResponse.SERVING
        watch = client.vms.WatchVms(vm_pb.WatchVmsRequest(), timeout=60)
        time.sleep(0.5)
        etcd.kill()
        wait_until(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=15)
        # The watch that died ends the stream with UNAVAILABLE (list again), not OK, nor a DELETE.
        with pytest.raises(grpc.RpcError) as ended:
            for ev in watch:  # what happened before the kill (the agent's report of "before")
                assert ev.type == pb.EVENT_TYPE_PUT and ev.vm.spec.name == "before", ev
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        # Sent to it anyway (the plain channel does not skip it), a create is refused, not placed.
        with pytest.raises(grpc.RpcError) as e:
            vm_service_pb2_grpc.VmServiceStub(plain).CreateVm(vm_pb.CreateVmRequest(spec=_spec("during")), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        # The client's calls wait, within their deadline, for a replica that serves again.
        waited = client.vms.GetVm.future(vm_pb.GetVmRequest(name="before"), timeout=60)
        time.sleep(1)
        assert not waited.done()
        etcd.start()  # the same member, its data kept
        assert waited.result().vm.spec.name == "before"
        wait_until(lambda: status() == health_pb2.HealthCheckResponse.SERVING, timeout=20)
        wait_until(lambda: server.cache.node("n1") is not None and server.cache.node("n1").status is not None)
        wait_until(lambda: _created(client, "after"), timeout=20)
        assert sorted(v.spec.name for v in client.vms.ListVms(vm_pb.ListVmsRequest(), timeout=5).vms) == ["after", "before"]
    finally:
        plain.close()
        client.channel.close()
        agent.stop()
        server.stop(0)
        store.close()
        etcd.stop()


def _created(client: Client, name: str) -> bool:
    try:
        client.vms.CreateVm(vm_pb.CreateVmRequest(spec=_spec(name), request_id=name), timeout=10)
        return True
    except grpc.RpcError as e:
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                        grpc.StatusCode.FAILED_PRECONDITION):
            time.sleep(0.2)  # the node is not Ready again yet
            return False
        raise


def test_a_retried_create_gets_its_own_vm_never_already_exists(cluster) -> None:  # type: ignore[no-untyped-def]
    cluster.add_node("n1")
    req = vm_pb.CreateVmRequest(spec=_spec("once"), request_id="r-1")
    first = cluster.client.vms.CreateVm(req, timeout=10).vm
    again = cluster.client.vms.CreateVm(req, timeout=10).vm  # the answer was lost: the client sends it again
    assert again.spec.name == "once" and again.placement.node == first.placement.node
    with pytest.raises(grpc.RpcError) as e:  # another request for the same name is another story
        cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=_spec("once"), request_id="r-2"), timeout=10)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # One with a volume (claimed before it is placed): its retry finds it too, before any claim.
    cluster.client.volumes.CreateVolume(vol_pb.CreateVolumeRequest(volume=vol_pb.Volume(
        name="disk1", pool=vol_pb.POOL_KIND_LOCAL, size_gib=1, host="n1")))
    with_disk = vm_pb.CreateVmRequest(spec=_spec("disked"), request_id="r-9")
    with_disk.spec.volumes.append("disk1")
    assert cluster.client.vms.CreateVm(with_disk, timeout=10).vm.placement.node == "n1"
    assert cluster.client.vms.CreateVm(with_disk, timeout=10).vm.placement.node == "n1"
    # A retry sent while the first copy is still being placed: one VM, both answered with it.
    req = vm_pb.CreateVmRequest(spec=_spec("twice"), request_id="r-3")
    calls = [cluster.client.vms.CreateVm.future(req, timeout=10) for _ in range(3)]
    assert [c.result().vm.spec.name for c in calls] == ["twice"] * 3
    names = [v.spec.name for v in cluster.client.vms.ListVms(vm_pb.ListVmsRequest(), timeout=5).vms]
    assert sorted(names) == ["disked", "once", "twice"]
