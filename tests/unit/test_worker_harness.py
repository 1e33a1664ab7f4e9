"""The write path over the in-memory store: batching, commit validation, conflict retries."""
from __future__ import annotations

import json
import threading
import time
from typing import Sequence

import pytest

from tests.conftest import wait_until
from vdcos.errors import Aborted, AlreadyExists, Unschedulable
from vdcos.model import (AffinityPolicy, AllocEntry, Allocation, NodeSpec, QosClass, QosPolicy, Resources, VmSpec,
                         decode)
from vdcos.nodeagent.agent import register
from vdcos.scheduler.cache import ClusterCache
from vdcos.scheduler.core import Decision, PlacementRequest, schedule
from vdcos.scheduler.worker import Scheduler, _Decided, _Pending, dumps
from vdcos.state import keys
from vdcos.state.store import Compare, MemoryStore, Op, TxnResult

CAP = Resources(16, 65536, 1000, 10000)


class RejectingStore(MemoryStore):
    """Every conditional commit fails, as if another scheduler always won the race."""

    def __init__(self) -> None:
        super().__init__()
        self.rejected = 0

    def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        if compares and any(c.key.startswith(keys.ALLOC) for c in compares):
            self.rejected += 1
            return super().txn([Compare("/never", "version", "==", 1)], success, failure)
        return super().txn(compares, success, failure)


def setup(store: MemoryStore, n: int = 3) -> Scheduler:
    for i in range(n):
        register(store, NodeSpec(f"n{i}", CAP), ttl=60)
    store.put(keys.policy("gold"), dumps(QosPolicy("gold", QosClass.GUARANTEED)))
    return Scheduler(store, ClusterCache(store).start(), max_attempts=4).start()


def allocations(store: MemoryStore) -> dict[str, Allocation]:
    kvs, _ = store.get_prefix(keys.ALLOC)
    return {kv.key: decode(Allocation, json.loads(kv.value)) for kv in kvs}


def test_places_and_writes_one_consistent_record_set() -> None:
    store = MemoryStore()
    sched = setup(store)
    placed = sched.create(VmSpec("a", Resources(4, 8192), qos_policy="gold"))
    allocs = allocations(store)
    assert allocs[keys.alloc(placed.record.node)].has("a")
    assert store.get(keys.assign(placed.record.node, "a")) is not None
    assert store.get(keys.vm_spec("a")) is not None
    sched.stop()


def test_duplicate_name_is_already_exists() -> None:
    store = MemoryStore()
    sched = setup(store)
    sched.create(VmSpec("a", Resources(1, 1024)))
    with pytest.raises(AlreadyExists):
        sched.create(VmSpec("a", Resources(1, 1024)))
    sched.stop()


def test_a_create_whose_caller_went_away_is_dropped_and_its_retry_is_placed_once() -> None:
    store = MemoryStore()
    sched = setup(store)
    with sched._arrived:  # hold the worker: the caller gives up before its batch is taken
        gone = sched.submit(VmSpec("a", Resources(1, 1024)), "req-1")
        assert gone.cancel()
        retry = sched.submit(VmSpec("a", Resources(1, 1024)), "req-1")
        other = sched.submit(VmSpec("b", Resources(1, 1024)), "req-2")
    assert retry.result(10).spec.name == "a" and other.result(10).spec.name == "b"
    again = sched.create(VmSpec("a", Resources(1, 1024)), "req-1")  # its answer was lost: once more
    assert again.record.node == retry.result().record.node and again.record.request_id == "req-1"
    assert sum(a.has("a") for a in allocations(store).values()) == 1
    sched.stop()


def test_a_store_that_always_rejects_gives_aborted_and_writes_nothing() -> None:
    store = RejectingStore()
    sched = setup(store)
    with pytest.raises(Aborted):
        sched.create(VmSpec("a", Resources(1, 1024)))
    assert store.rejected == 4
    assert store.get(keys.vm_spec("a")) is None and not allocations(store)
    sched.stop()


def test_a_concurrent_writer_is_detected_and_the_retry_does_not_overcommit() -> None:
    store = MemoryStore()
    sched = setup(store, n=1)
    cache_first = sched.cache
    # Another scheduler fills n0 with guaranteed VMs; our cache has not seen it when we decide.
    original = cache_first.apply_kvs
    cache_first.stop()  # our watch is gone: only the failed compare can tell us

    full = Allocation("n0").with_entry(
        __import__("vdcos.model", fromlist=["AllocEntry"]).AllocEntry("other", QosClass.GUARANTEED, Resources(16, 65536)))
    store.put(keys.alloc("n0"), dumps(full))
    with pytest.raises(Unschedulable) as e:
        sched.create(VmSpec("mine", Resources(4, 8192), qos_policy="gold"))
    assert e.value.details.retryable
    assert allocations(store)[keys.alloc("n0")] == full
    assert sched.stats["conflicts"] >= 1
    assert original is not None
    sched.stop()


def test_a_conflict_on_a_node_that_still_has_room_commits_the_same_decision_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nomad's plan applier: what still fits after the refresh is committed as decided, not
    decided again (under load, another replica's commit would otherwise restart a whole batch)."""
    from vdcos.scheduler import worker
    store = MemoryStore()
    sched = setup(store, n=1)
    sched.cache.stop()
    store.put(keys.alloc("n0"), dumps(Allocation("n0").with_entry(AllocEntry("other", QosClass.GUARANTEED,
                                                                              Resources(4, 8192)))))
    calls: list[int] = []
    real = worker.schedule_batch
    monkeypatch.setattr(worker, "schedule_batch", lambda snap, reqs, lane: calls.append(len(reqs)) or real(snap, reqs, lane))
    placed = sched.create(VmSpec("mine", Resources(4, 8192), qos_policy="gold"))
    assert (placed.record.node, placed.record.attempts, calls) == ("n0", 2, [1])
    entries = {e.vm for e in allocations(store)[keys.alloc("n0")].entries}
    assert entries == {"other", "mine"}  # the other writer's VM was kept
    sched.stop()


class OneNodeAtATimeStore(MemoryStore):
    """Refuses any commit that touches more than one node, as if another replica kept writing
    one of them."""

    def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        if sum(c.key.startswith(keys.ALLOC) for c in compares) > 1:
            return super().txn([Compare("/never", "version", "==", 1)], success, failure)
        return super().txn(compares, success, failure)


def test_a_batch_that_keeps_conflicting_is_committed_in_smaller_transactions() -> None:
    store = OneNodeAtATimeStore()
    for i in range(4):
        register(store, NodeSpec(f"n{i}", CAP), ttl=60)
    store.put(keys.policy("gold"), dumps(QosPolicy("gold", QosClass.GUARANTEED)))
    sched = Scheduler(store, ClusterCache(store).start(), max_attempts=6)
    futures = [sched.submit(VmSpec(f"v{i}", Resources(16, 1024), qos_policy="gold")) for i in range(4)]
    sched.start()  # all four in one batch, one per node: 3 commits of 4, then one of 2, then 1 by 1
    placed = [f.result(10) for f in futures]
    assert sorted(p.record.node for p in placed) == ["n0", "n1", "n2", "n3"]
    assert sorted(p.record.attempts for p in placed) == [4, 4, 5, 5] and sched.stats["conflicts"] == 4
    sched.stop()


@pytest.mark.parametrize("vcpus, overflow", [(4, False), (12, True)])
def test_the_batch_fit_check_agrees_with_one_fits_at_a_time(vcpus: int, overflow: bool) -> None:
    """Six guaranteed VMs decided alone on the same snapshot of 3 nodes of 16 vCPUs: at 12 vCPUs
    some node gets two, which do not fit together; at 4 all fit."""
    store = MemoryStore()
    sched = setup(store, n=3)
    snap = sched.cache.snapshot()
    reqs = [PlacementRequest(VmSpec(f"v{i}", Resources(vcpus, 8192), qos_policy="gold"), f"r{i}") for i in range(6)]
    decided = []
    for r in reqs:
        d = schedule(snap, r)
        assert isinstance(d, Decision)
        decided.append(_Decided(_Pending(r, 0), d, snap.policy("gold")))  # type: ignore[arg-type]
    txn, retry, refused = sched._build(decided)
    want, want_retry, _, _ = sched._assemble(decided, sched.cache.config, one_at_a_time=True)
    assert refused == []
    assert [p.request.spec.name for p in retry] == [p.request.spec.name for p in want_retry]
    assert bool(retry) == overflow
    assert txn.compares == want.compares and txn.records == want.records
    assert [op.key for op in txn.puts] == [op.key for op in want.puts]
    sched.stop()


def test_a_policy_changed_under_a_decision_is_decided_again_with_the_new_one() -> None:
    store = MemoryStore()
    sched = setup(store, n=1)
    sched.cache.stop()  # only the failed compare can tell us
    store.put(keys.policy("gold"), dumps(QosPolicy("gold", QosClass.BEST_EFFORT)))
    placed = sched.create(VmSpec("mine", Resources(4, 8192), qos_policy="gold"))
    assert placed.record.qos.qos_class is QosClass.BEST_EFFORT and placed.record.reserved == Resources()
    assert not allocations(store)[keys.alloc("n0")].guaranteed.vcpus
    sched.stop()


def test_a_policy_deleted_under_a_decision_is_refused_not_committed() -> None:
    store = MemoryStore()
    sched = setup(store, n=1)
    sched.cache.stop()  # only the failed compare can tell us
    store.delete(keys.policy("gold"))
    with pytest.raises(Unschedulable, match="'gold' does not exist"):
        sched.create(VmSpec("mine", Resources(4, 8192), qos_policy="gold"))
    assert store.get(keys.vm_spec("mine")) is None
    assert all(not a.entries for a in allocations(store).values())
    sched.stop()


def test_concurrent_creates_are_batched_and_respect_hard_anti_affinity() -> None:
    store = MemoryStore()
    sched = setup(store, n=4)
    results: list[object] = []

    def one(i: int) -> None:
        try:
            results.append(sched.create(VmSpec(f"v{i}", Resources(1, 1024), placement_group="g",
                                               group_policy=AffinityPolicy.ANTI_AFFINITY)))
        except Unschedulable as e:
            results.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    placed = [r for r in results if not isinstance(r, Exception)]
    assert len(placed) == 4
    assert len({p.record.node for p in placed}) == 4  # type: ignore[attr-defined]
    sched.stop()


def test_delete_releases_the_allocation_and_the_group_slot() -> None:
    store = MemoryStore()
    sched = setup(store, n=1)
    spec = VmSpec("a", Resources(16, 1024), qos_policy="gold", placement_group="g",
                  group_policy=AffinityPolicy.ANTI_AFFINITY)
    sched.create(spec)
    sched.delete("a")
    assert not allocations(store)[keys.alloc("n0")].entries
    assert store.get(keys.group("g")) is None
    sched.create(spec)  # fits again: capacity and group slot were released
    sched.stop()


def test_lease_expiry_makes_nodes_unschedulable() -> None:
    store = MemoryStore()
    sched = setup(store, n=2)
    store.expire_leases_now()
    with pytest.raises(Unschedulable) as e:
        sched.create(VmSpec("a", Resources(1, 1024)))
    assert e.value.details.retryable and e.value.details.filters[0].filter == "node_ready"
    sched.stop()


class HeldStore(MemoryStore):
    """Placement commits wait until the test lets them through."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.go = threading.Event(), threading.Event()

    def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        if any(c.key.startswith(keys.ALLOC) for c in compares):
            self.entered.set()
            assert self.go.wait(10)
        return super().txn(compares, success, failure)


def test_idle_for_counts_from_the_last_placement_and_is_zero_while_one_is_made() -> None:
    store = HeldStore()
    sched = setup(store)
    assert sched.idle_for() > 0  # nothing placed yet: idle since it started
    placed = sched.submit(VmSpec("a", Resources(1, 1024)))
    assert store.entered.wait(10)
    assert sched.idle_for() == 0
    store.go.set()
    placed.result(10)
    wait_until(lambda: sched.idle_for() > 0, every=0.01)
    first = sched.idle_for()
    time.sleep(0.05)
    assert 0 < first < sched.idle_for()
    sched.stop()


def test_a_batch_takes_what_its_project_quota_has_left_and_a_delete_gives_it_back() -> None:
    """One batch of 6 creates against a quota of 4 VMs: 4 placed, 2 refused with the quota named;
    the quota record is charged in the batch's own transaction, and released by each delete."""
    from vdcos.errors import QuotaExceeded
    from vdcos.projects import records as projects

    store = MemoryStore()
    projects.create(store, "p")
    projects.set_limits(store, "p", {"vms": 4})
    sched = setup(store)
    wait_until(lambda: "p" in sched.cache.quotas)
    futures = sched.submit_all([(VmSpec(f"v{i}", Resources(1, 1024), project="p"), f"r{i}") for i in range(6)])
    errors = [f.exception(10) for f in futures]
    assert sum(e is None for e in errors) == 4
    refused = [e for e in errors if e is not None]
    assert all(isinstance(e, QuotaExceeded) for e in refused), refused
    assert refused[0].details[0].quota == "vms" and refused[0].details[0].limit == 4  # type: ignore[union-attr]
    assert projects.quota(store, "p").used.vms == 4
    assert projects.quota(store, "p").used.vcpus == 4
    sched.delete("v0")
    assert projects.quota(store, "p").used.vms == 3
    with pytest.raises(Exception, match="not found"):
        sched.delete("v1", project="other")  # another project's VM is not found, and stays
    assert store.get(keys.vm_spec("v1")) is not None
    # A project that does not exist places nothing.
    with pytest.raises(Exception, match="project 'nope' not found"):
        sched.create(VmSpec("x", Resources(1, 1024), project="nope"))
    sched.stop()
