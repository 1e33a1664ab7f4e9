"""The local datacenter an e2e module brought up with `vdcos up`, as its tests reach it: the
gRPC API, etcd, and each host's libvirtd and guest consoles."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vdcos.cli.client import Client
from vdcos.cli.localdc import LocalDatacenter, host_root
from vdcos.host.libvirtd import LibvirtHost
from vdcos.nodeagent.libvirt.domain import read_console
from vdcos.security.pki import TlsFiles
from vdcos.state.etcd import EtcdStore
from vdcos.v1 import project_service_pb2 as proj_pb
from vdcos.v1 import token_service_pb2 as tok_pb


def vdcos(home: Path, *args: str, timeout: float = 180) -> str:
    """`vdcos --home HOME ARGS...` as an operator types it: its output, or the test fails."""
    p = subprocess.run([sys.executable, "-m", "vdcos.cli.main", "--home", str(home), *args],
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"vdcos {' '.join(args)} failed ({p.returncode}): {p.stderr}{p.stdout}"
    return p.stdout


class Datacenter:
    def __init__(self, home: Path) -> None:
        self.home = home
        state = LocalDatacenter.load(home)
        assert state is not None
        self.state = state
        self.client = state.client()
        self.store = EtcdStore(state.etcd, tls=state.operator_tls())

    def tenant(self, project: str, role: str = "member") -> Client:
        """A client of the project (made if it is not there yet) with a token of `role` in it,
        over the token port with the datacenter's CA alone, as an outside tenant connects."""
        if project not in {p.name for p in self.client.projects.ListProjects(proj_pb.ListProjectsRequest()).projects}:
            self.client.projects.CreateProject(proj_pb.CreateProjectRequest(project=proj_pb.Project(name=project)))
        secret = self.client.tokens.CreateToken(tok_pb.CreateTokenRequest(
            name=f"{project}-{role}", role=role, project=project)).secret
        return Client(self.state.api, TlsFiles(Path(self.state.ca)), secret)

    def host(self, node: str) -> LibvirtHost:
        return LibvirtHost.load(host_root(self.home, node))

    def console(self, node: str, vm: str) -> str:
        return read_console(host_root(self.home, node), vm)

    def close(self) -> None:
        self.client.channel.close()
        self.store.close()
