"""Fixtures: a real etcd (Debian's etcd-server) on loopback with its data on tmpfs, a real gRPC
scheduler server on port 0, and node agents with the sim driver. Everything is stopped by the
fixture that started it, by recorded PID."""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import pytest

from vdcos.cli.client import Client
from vdcos.model import NodeSpec, Resources, pairs
from vdcos.nodeagent.agent import NodeAgent
from vdcos.nodeagent.sim import SimDriver
from vdcos.storagepool.pool import SimPools
from vdcos.apiserver.server import SchedulerServer, create_server
from vdcos.security.pki import Authority, Identity, TlsFiles
from vdcos.state import keys
from vdcos.events import Recorder
from vdcos.state.etcd import EtcdStore
from vdcos.state.etcd_server import EtcdServer
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

HOST = Resources(16, 65536, 1000, 10000)


def wait_until(pred: Callable[[], object], timeout: float = 10.0, every: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    base = Path(tempfile.mkdtemp(prefix="vdcos-etcd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    srv = EtcdServer(base / "data").start()
    yield srv
    srv.stop()
    import shutil
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def store(etcd_server: EtcdServer) -> Iterator[EtcdStore]:
    s = EtcdStore(etcd_server.endpoint)
    s.delete(keys.ROOT, prefix=True)
    yield s
    s.close()


@dataclass
class Cluster:
    store: EtcdStore
    server: SchedulerServer
    client: Client
    tmp: Path
    recorder: Recorder
    agents: dict[str, NodeAgent] = field(default_factory=dict)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def add_node(self, name: str, capacity: Resources = HOST, labels: dict[str, str] | None = None,
                 ttl: int = 10, pools: SimPools | None = None) -> NodeAgent:
        driver = SimDriver(capacity, self.tmp / f"{name}.json")
        spec = NodeSpec(name, capacity, pairs(labels or {}), "sim", f"sim://{self.tmp / f'{name}.json'}")
        agent = NodeAgent(self.store, spec, driver, lease_ttl=ttl, resync_s=0.5,
                          pools=pools or SimPools(name, capacity.disk_gib), emit=self.recorder.emit).start()
        self.agents[name] = agent
        wait_until(lambda: (v := self.server.cache.node(name)) is not None and v.status is not None)
        return agent


    def create_on(self, node: str, spec: pb.VmSpec) -> None:
        """Create a VM on `node` ("" = where the scheduler likes), the other nodes cordoned
        meanwhile, and wait until it runs: free to move later (a node selector would pin it)."""
        others = [n for n in self.agents if node and n != node]
        for n in others:
            self.client.nodes.CordonNode(node_pb.CordonNodeRequest(name=n, reason="test placement"))
        try:
            self.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec))
        finally:
            for n in others:
                self.client.nodes.UncordonNode(node_pb.UncordonNodeRequest(name=n))
        wait_until(lambda: self.client.vms.GetVm(vm_pb.GetVmRequest(name=spec.name)).vm.status.phase
                   == pb.VM_PHASE_RUNNING)


@contextmanager
def running_cluster(store: EtcdStore, tmp_path: Path, **server_args: Any) -> Iterator[Cluster]:
    """An API server on port 0 (`server_args` for create_server) and the agents a test adds."""
    server = create_server("127.0.0.1:0", store, **server_args)
    client = Client(f"127.0.0.1:{server.port}")
    c = Cluster(store, server, client, tmp_path, Recorder(store).start())  # the agents' events
    try:
        yield c
    finally:
        client.channel.close()
        for a in c.agents.values():
            a.stop()
        c.recorder.stop()
        server.stop(0)


@pytest.fixture
def cluster(store: EtcdStore, tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(store, tmp_path) as c:
        yield c


def details(e: grpc.RpcError) -> list[object]:
    from grpc_status import rpc_status
    st = rpc_status.from_call(e)  # type: ignore[arg-type]
    return list(st.details) if st else []


@contextmanager
def secure_etcd(base: Path, datacenter: str) -> Iterator[tuple[Authority, EtcdServer, EtcdStore, TlsFiles]]:
    """A datacenter CA in `base`/pki, one etcd member in TLS that requires client certificates,
    and a store with a replica's certificate: where the secure functional tests start."""
    ca = Authority.ensure(base / "pki", datacenter)
    etcd = EtcdServer(base / "etcd", tls=ca.issue(Identity("etcd", "etcd-1"))).start()
    replica = ca.issue(Identity("scheduler", "scheduler-1"))
    store = EtcdStore(etcd.endpoint, tls=replica)
    try:
        yield ca, etcd, store, replica
    finally:
        store.close()
        etcd.stop()


def sim_agent(etcd: EtcdServer, ca: Authority, name: str, capacity: Resources, base: Path,
              labels: dict[str, str] | None = None) -> tuple[NodeAgent, EtcdStore]:
    """A sim node agent with its own node certificate, and its store (stop both)."""
    store = EtcdStore(etcd.endpoint, tls=ca.issue(Identity("node", name)))
    spec = NodeSpec(name, capacity, pairs(labels or {}), "sim", f"sim://{base / name}.json")
    return NodeAgent(store, spec, SimDriver(capacity, base / f"{name}.json"), resync_s=0.5,
                     pools=SimPools(name, capacity.disk_gib)).start(), store
