"""The scheduler's cache against a real etcd watch."""
from __future__ import annotations

from vdcos.model import AllocEntry, Allocation, QosClass, Resources, dumps
from vdcos.scheduler.cache import ClusterCache
from vdcos.state import keys
from vdcos.state.etcd import EtcdStore


def entry(vm: str) -> AllocEntry:
    return AllocEntry(vm, QosClass.GUARANTEED, Resources(1, 512))


def test_the_watch_takes_the_record_we_are_sending_and_decodes_any_other(store: EtcdStore) -> None:
    cache = ClusterCache(store).start()
    try:
        mine = Allocation("n1", (entry("vm-a"),))
        theirs = Allocation("n1", (entry("vm-a"), entry("vm-b")))  # another replica's commit
        with cache.sending({keys.alloc("n1"): (dumps(mine), mine)}):
            assert cache.wait_for_revision(store.put(keys.alloc("n1"), dumps(mine)))
            assert cache.allocs["n1"][0] is mine
            assert cache.wait_for_revision(store.put(keys.alloc("n1"), dumps(theirs)))
            got = cache.allocs["n1"][0]
            assert got == theirs and got is not theirs
        again = Allocation("n1", (entry("vm-c"),))
        assert cache.wait_for_revision(store.put(keys.alloc("n1"), dumps(again)))
        assert cache.allocs["n1"][0] == again
        assert cache.snapshot().guaranteed[:, cache.snapshot().index["n1"]].tolist() == [1, 512, 0, 0, 0]
    finally:
        cache.stop()
