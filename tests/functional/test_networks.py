"""Networks and ports against a real etcd: every VNI and address handed out once, also when many
requests race, and bad requests change nothing."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from vdcos.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from vdcos.model import PortKind
from vdcos.state.etcd import EtcdStore
from vdcos.vswitch import networks

pytestmark = pytest.mark.etcd


def test_concurrent_networks_get_distinct_vnis(store: EtcdStore) -> None:
    with ThreadPoolExecutor(8) as ex:
        nets = list(ex.map(lambda i: networks.create(store, f"n{i}", "10.0.0.0/24"), range(16)))
    assert len({n.vni for n in nets}) == 16


def test_concurrent_ports_get_distinct_addresses_and_macs(store: EtcdStore) -> None:
    networks.create(store, "red", "10.0.0.0/26")
    with ThreadPoolExecutor(8) as ex:
        ports = list(ex.map(lambda i: networks.create_ports(store, [("red", f"p{i}", PortKind.ENDPOINT, "h1", "", 0)])[0],
                            range(40)))
    assert len({p.ip for p in ports}) == 40 and len({p.mac for p in ports}) == 40
    assert "10.0.0.1" not in {p.ip for p in ports}  # kept for a router


def test_refusals_change_nothing(store: EtcdStore) -> None:
    networks.create(store, "red", "10.0.0.0/29")
    with pytest.raises(InvalidArgument):
        networks.create(store, "bad", "10.0.0.1/24")
    with pytest.raises(AlreadyExists):
        networks.create(store, "red", "10.1.0.0/24")
    p = networks.create_ports(store, [("red", "a", PortKind.ENDPOINT, "h1", "", 0)])[0]
    with pytest.raises(AlreadyExists):
        networks.create_ports(store, [("red", "b", PortKind.ENDPOINT, "h1", p.ip, 0)])
    with pytest.raises(FailedPrecondition):
        networks.delete(store, "red")
    assert [x.name for x in networks.list_ports(store, "red")] == ["a"]
    networks.delete_ports(store, [p])
    networks.delete(store, "red")
    assert networks.list_networks(store) == []
