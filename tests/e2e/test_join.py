"""A host joins a datacenter the way one on another machine would, not through `vdcos up`: its
own libvirtd (started here, apart from the datacenter), an admin's bootstrap token, and
`vdcos join`, which gets the node's certificate from the API, discovers the host's capacity from
that libvirtd and the kernel, and runs the agent against it. The new node takes a VM."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import grpc
import libvirt
import pytest
from cryptography import x509

from tests.conftest import wait_until
from tests.e2e.dc import Datacenter
from tests.e2e.test_local_datacenter import jq, vdcos
from vdcos.cli.localdc import down, up
from vdcos.host.libvirtd import LibvirtHost
from vdcos.images import ensure
from vdcos.process import stop_pid
from vdcos.security.pki import Identity, TlsFiles, new_key, signing_request
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]
NEW = "host-9"


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Datacenter]:
    ensure()
    home = tmp_path_factory.mktemp("join") / "dc"
    up(home, 1, "libvirt", {"vcpus": 2, "memory_mib": 2048, "disk_gib": 50, "network_mbps": 1000})
    d = Datacenter(home)
    try:
        yield d
    finally:
        d.close()
        down(home, purge=True)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LibvirtHost]:
    """The joining host's own libvirtd: its own folder, cgroups and migration address."""
    lv = LibvirtHost.create(tmp_path_factory.mktemp("h9"), NEW, "joined", "127.79.0.9")
    try:
        yield lv.start()
    finally:
        lv.stop()


def test_a_host_joins_with_a_bootstrap_token_and_takes_a_vm(dc: Datacenter, host: LibvirtHost,
                                                           tmp_path: Path) -> None:
    home = Path(dc.home)
    made = jq(home, "token", "create", "join-host-9", "--role", "bootstrap")
    assert isinstance(made, dict) and made["role"] == "bootstrap" and made.get("expires_at")
    bootstrap = str(made["token"])
    # A bootstrap token joins hosts and does nothing else.
    p = vdcos(home, "--token", bootstrap, "vm", "list", check=False)
    assert p.returncode == 1 and "PERMISSION_DENIED" in p.stderr
    state = tmp_path / "agent"
    cluster = json.loads((home / "cluster.json").read_text())
    join = [sys.executable, "-m", "vdcos.cli.main", "--home", str(tmp_path / "elsewhere"), "join",
            "--api", ",".join(cluster["api"]), "--ca", cluster["ca"], "--token", bootstrap, "--name", NEW,
            "--libvirt-uri", host.uri, "--state-dir", str(state), "--address", host.address]
    agent = subprocess.Popen(join, stdout=open(tmp_path / "agent.log", "wb"), stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        node = wait_until(lambda: _ready(dc, NEW), timeout=60)
        assert isinstance(node, pb.Node)
        # Its capacity is what its libvirtd and the kernel say, not anything given.
        conn = libvirt.open(host.uri)
        info = conn.getInfo()
        conn.close()
        assert node.capacity.vcpus == min(info[2], os.cpu_count() or info[2])
        assert 0 < node.capacity.memory_mib <= info[1]
        assert node.capacity.disk_gib > 0
        pem = (state / "pki" / "node.pem").read_bytes()
        assert Identity.of(pem) == Identity("node", NEW)
        cert = x509.load_pem_x509_certificate(pem)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert host.address in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
        assert oct((state / "pki" / "node-key.pem").stat().st_mode & 0o777) == "0o600"
        # A VM goes there (the datacenter's own host cordoned meanwhile) and runs.
        vdcos(home, "cordon", "host-1")
        try:
            vm = dc.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(
                name="on-joined", resources=pb.Resources(vcpus=1, memory_mib=128, disk_gib=1)))).vm
        finally:
            vdcos(home, "uncordon", "host-1")
        assert vm.placement.node == NEW
        wait_until(lambda: _running(dc, "on-joined"), timeout=120)
        assert "on-joined" in host.domains()
        # The name is taken now: another host cannot join as it, with any token.
        csr = signing_request(new_key(), Identity("node", NEW)).decode()
        for token in (bootstrap, None):
            client = dc.client if token is None else _token_client(cluster, token)
            with pytest.raises(grpc.RpcError) as e:
                client.nodes.JoinNode(node_pb.JoinNodeRequest(name=NEW, csr_pem=csr))
            assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
            if token is not None:
                client.channel.close()
        dc.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="on-joined"))
        wait_until(lambda: "on-joined" not in host.domains(), timeout=60)
    finally:
        stop_pid(agent.pid, agent)  # the agent we started (join exec'd into it)


def _ready(dc: Datacenter, name: str) -> pb.Node | None:
    try:
        n = dc.client.nodes.GetNode(node_pb.GetNodeRequest(name=name)).node
    except grpc.RpcError:
        return None
    return n if n.state == pb.NODE_STATE_READY else None


def _running(dc: Datacenter, name: str) -> bool:
    return bool(dc.client.vms.GetVm(vm_pb.GetVmRequest(name=name)).vm.status.phase == pb.VM_PHASE_RUNNING)


def _token_client(cluster: dict[str, object], token: str):  # type: ignore[no-untyped-def]
    from vdcos.cli.client import Client

    return Client(list(cluster["api"]), TlsFiles(Path(str(cluster["ca"]))), token)  # type: ignore[call-overload]
