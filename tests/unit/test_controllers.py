"""The controllers' framework (work queue, backoff, leadership, runner) and the migration controller,
on the in-memory store."""
from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import wait_until
from vdcos.controllers.migrations import MigrationController
from vdcos.migration import records
from vdcos.model import ActiveMigrations, Migration, MigrationOptions, MigrationPhase, NodeStatus, dumps
from vdcos.reconcile import Backoff, LeaderLease, Runner, WorkQueue
from vdcos.state import keys
from vdcos.state.store import MemoryStore


def test_an_item_is_queued_once_however_often_it_is_added() -> None:
    q = WorkQueue()
    for key in ("a", "b", "a", "a"):
        q.add(key)
    assert [q.get(0.1), q.get(0.1), q.get(0.01)] == ["a", "b", None]


def test_an_item_added_while_busy_comes_back_once_it_is_done() -> None:
    q = WorkQueue()
    q.add("a")
    assert q.get(0.1) == "a"
    q.add("a")
    q.add("a")
    assert q.get(0.01) is None  # not twice at once
    q.done("a")
    assert q.get(0.1) == "a"
    q.done("a")
    assert q.get(0.01) is None


def test_a_delayed_item_waits_for_its_delay() -> None:
    q = WorkQueue()
    q.add("later", delay=0.2)
    q.add("now")
    assert q.get(0.1) == "now"
    assert q.get(0.05) is None
    assert q.get(1.0) == "later"


@pytest.mark.parametrize("failures,expected", [(1, 0.5), (2, 1.0), (4, 4.0), (12, 60.0)],
                         ids=["first", "second", "fourth", "capped"])
def test_backoff_doubles_per_item_up_to_its_cap(failures: int, expected: float) -> None:
    b = Backoff(base_s=0.5, max_s=60.0)
    got = [b.failed("x", "boom") for _ in range(failures)][-1]
    assert got == expected
    assert not b.due("x") and b.errors == {"x": "boom"}
    assert b.failed("y", RuntimeError("bang")) == 0.5  # per item
    b.succeeded("x")
    assert b.due("x") and "x" not in b.errors
    assert b.failed("x", "boom") == 0.5
    b.keep(["y"])  # x is gone
    assert set(b.errors) == {"y"} and b.due("x")


class Flaky:
    """Reconciles "good" items; "bad" fails its first `fails` times."""

    name = "flaky"

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.done: list[str] = []
        self.tries: dict[str, int] = {}
        self.first_success: dict[str, int] = {}  # the try that first succeeded
        self.lock = threading.Lock()

    def keys(self) -> list[str]:
        return ["bad", "good-1", "good-2"]

    def reconcile(self, key: str) -> None:
        with self.lock:
            self.tries[key] = self.tries.get(key, 0) + 1
            if key == "bad" and self.tries[key] <= self.fails:
                raise RuntimeError("cannot do it yet")
            self.done.append(key)
            self.first_success.setdefault(key, self.tries[key])


def test_one_failing_item_never_blocks_the_others_and_is_retried_after_its_backoff() -> None:
    c = Flaky(fails=2)
    runner = Runner(c, resync_s=0.05, backoff=Backoff(base_s=0.2, max_s=1.0)).start()
    try:
        assert wait_until(lambda: {"good-1", "good-2"} <= set(c.done), 5)
        assert runner.errors.get("bad") == "cannot do it yet"
        assert wait_until(lambda: "bad" in c.done, 5)
        assert "bad" not in runner.errors
        # Retried after its backoff, not at every resync (0.05 s): 2 failures, then success.
        assert c.first_success["bad"] == 3
    finally:
        runner.stop()


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.done: list[str] = []

    def keys(self) -> list[str]:
        return []

    def reconcile(self, key: str) -> None:
        self.done.append(key)


def test_a_watching_runner_reconciles_a_put_at_once_not_at_the_next_resync() -> None:
    store, c = MemoryStore(), Recorder()
    store.put("/things/before", b"1")
    runner = Runner(c, resync_s=3600, store=store, watch=("/things/", lambda k: k.rsplit("/", 1)[1])).start()
    try:
        assert wait_until(lambda: runner._cancel_watch is not None, 5)
        store.put("/things/a", b"1")
        store.put("/elsewhere/b", b"1")
        store.delete("/things/before")  # a delete names nothing to reconcile
        assert wait_until(lambda: c.done == ["a"], 5)
        time.sleep(0.1)
        assert c.done == ["a"]
    finally:
        runner.stop()


def test_one_replica_leads_and_another_takes_over_when_it_goes() -> None:
    store = MemoryStore()
    first, second = LeaderLease(store, "/lock", ttl=5), LeaderLease(store, "/lock", ttl=5)
    assert first.hold() is True
    assert second.hold() is False
    assert first.hold() is True  # keeps it
    first.release()  # a replica that stops gives it up; one that dies loses it with its lease
    assert second.hold() is True
    assert first.hold() is False


def _pending_migration(store: MemoryStore, source_ready: bool) -> Migration:
    m = Migration("mig-1", "vm-1", "src", "dst", MigrationPhase.PENDING, MigrationOptions(), time.time())
    store.put(keys.migration(m.id), dumps(m))
    store.put(keys.vm_migration(m.vm), m.id.encode())
    store.put(keys.ACTIVE_MIGRATIONS, dumps(ActiveMigrations(((m.id, m.source, m.destination),))))
    if source_ready:
        store.put(keys.node_status("src"), dumps(NodeStatus(True, time.time())))
    return m


@pytest.mark.parametrize("source_ready,grace,phase", [
    (False, 0.0, MigrationPhase.FAILED),
    (False, 60.0, MigrationPhase.PENDING),
    (True, 0.0, MigrationPhase.PENDING),
], ids=["source gone past the grace", "source gone within the grace", "source ready"])
def test_the_reaper_fails_a_pending_migration_only_once_its_source_is_gone_for_the_grace(
        source_ready: bool, grace: float, phase: MigrationPhase) -> None:
    store = MemoryStore()
    m = _pending_migration(store, source_ready)
    reaper = MigrationController(store, grace_s=grace)
    assert reaper.keys() == [m.id]
    reaper.reconcile(m.id)
    got = records.get(store, m.id)
    assert got.phase is phase
    if phase is MigrationPhase.FAILED:
        assert "src went NotReady" in got.message
        assert store.get(keys.vm_migration(m.vm)) is None
        assert reaper.keys() == []


@pytest.mark.parametrize("idle,cancelled", [(400.0, True), (10.0, False)], ids=["stalled", "progressing"])
def test_the_reaper_cancels_a_running_migration_whose_record_stopped_moving(idle: float, cancelled: bool) -> None:
    store = MemoryStore()
    m = _pending_migration(store, source_ready=True)
    running = Migration(m.id, m.vm, m.source, m.destination, MigrationPhase.RUNNING, m.options,
                        time.time() - idle, updated_at=time.time() - idle)
    store.put(keys.migration(m.id), dumps(running))
    reaper = MigrationController(store, stalled_s=300.0)
    assert reaper.keys() == [m.id]
    reaper.reconcile(m.id)
    got = records.get(store, m.id)
    assert got.phase is MigrationPhase.RUNNING  # the source agent aborts it and finishes the record
    assert got.cancel_requested is cancelled
    assert ("no progress" in got.message) is cancelled


def test_the_controller_applies_the_outcome_an_agent_reported_and_the_first_report_stands() -> None:
    store = MemoryStore()
    m = _pending_migration(store, source_ready=True)
    reported = records.report(store, m.id, MigrationPhase.FAILED, "the destination refused it")
    again = records.report(store, m.id, MigrationPhase.COMPLETED, "later words")
    assert (reported.phase, reported.reported, again.message) == (MigrationPhase.PENDING, "failed",
                                                                  "the destination refused it")
    assert store.get(keys.vm_migration(m.vm)) is not None  # nothing applied by the agent's write
    MigrationController(store).reconcile(m.id)
    got = records.get(store, m.id)
    assert (got.phase, got.message) == (MigrationPhase.FAILED, "the destination refused it")
    assert store.get(keys.vm_migration(m.vm)) is None
