"""The local datacenter an e2e module brought up with `vdcos up`, as its tests reach it: the
gRPC API, etcd, and each host's libvirtd and guest consoles."""
from __future__ import annotations

from pathlib import Path

from vdcos.cli.localdc import LocalDatacenter, host_root
from vdcos.host.libvirtd import LibvirtHost
from vdcos.nodeagent.libvirt.domain import read_console
from vdcos.state.etcd import EtcdStore


class Datacenter:
    def __init__(self, home: Path) -> None:
        self.home = home
        state = LocalDatacenter.load(home)
        assert state is not None
        self.state = state
        self.client = state.client()
        self.store = EtcdStore(state.etcd, tls=state.operator_tls())

    def host(self, node: str) -> LibvirtHost:
        return LibvirtHost.load(host_root(self.home, node))

    def console(self, node: str, vm: str) -> str:
        return read_console(host_root(self.home, node), vm)

    def close(self) -> None:
        self.client.channel.close()
        self.store.close()
