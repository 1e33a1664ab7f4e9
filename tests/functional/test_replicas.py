"""Scheduler replicas share the node ring by lanes kept under their etcd leases (real etcd)."""
from __future__ import annotations

import json

from tests.conftest import wait_until
from vdcos.scheduler.core import SOLO, Lane
from vdcos.scheduler.replicas import Replicas
from vdcos.state import keys
from vdcos.state.etcd import EtcdStore


def test_replicas_split_the_ring_and_take_it_back_when_one_leaves_or_dies(store: EtcdStore) -> None:
    a = Replicas(store, ttl=2, refresh_s=0.1).start("127.0.0.1:1")
    assert a.lane == SOLO
    b = Replicas(store, ttl=2, refresh_s=0.1).start("127.0.0.1:2")
    c = Replicas(store, ttl=2, refresh_s=0.1).start("127.0.0.1:3")
    try:
        assert wait_until(lambda: {a.lane, b.lane, c.lane} == {Lane(0, 3), Lane(1, 3), Lane(2, 3)}, 5)
        kvs, _ = store.get_prefix(keys.SCHEDULERS)
        assert sorted(json.loads(kv.value)["address"] for kv in kvs) == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
        b.stop()  # leaves: revokes its lease
        assert wait_until(lambda: {a.lane, c.lane} == {Lane(0, 2), Lane(1, 2)}, 5)
        c._stop.set()  # dies: stops keeping its lease alive; etcd drops its key after the TTL
        c._thread.join(5)
        assert wait_until(lambda: a.lane == SOLO, 10)
        store.revoke_lease(a._lease)  # etcd lost this replica's lease: it registers again
        assert wait_until(lambda: len(store.get_prefix(keys.SCHEDULERS)[0]) == 1 and a.lane == SOLO, 5)
    finally:
        for r in (a, b, c):
            r.stop()
    assert wait_until(lambda: not store.get_prefix(keys.SCHEDULERS)[0], 5)
