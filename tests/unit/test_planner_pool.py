"""Planner work runs in worker processes, a bounded number at once; one more is refused at once."""
from __future__ import annotations

import os
import pickle
import threading
import time

import pytest

from tests.conftest import wait_until
from vdcos.apiserver.planner_pool import PlannerPool
from vdcos.errors import ResourceExhausted, Unavailable
from vdcos.model import NodeSpec, Resources
from vdcos.planner.cluster import capacity_numbers
from vdcos.scheduler.core import build_snapshot


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_a_job_runs_in_another_process_and_its_answer_comes_back() -> None:
    pool = PlannerPool(size=1)
    snap = build_snapshot([NodeSpec(f"n{i}", Resources(16, 65536, 1000, 10000)) for i in range(3)])
    try:
        assert pool.run(_pid_after, 0.0) != os.getpid()
        # A capacity report's numbers, worked out in the child on a copy of the snapshot.
        shapes = (("small", Resources(1, 2048)),)
        assert pool.run(capacity_numbers, snap, shapes) == capacity_numbers(pickle.loads(pickle.dumps(snap)), shapes)
    finally:
        pool.close()


def test_one_job_past_the_bound_is_refused_at_once_and_the_next_runs() -> None:
    pool = PlannerPool(size=1)
    got: list[int] = []
    busy = threading.Thread(target=lambda: got.append(pool.run(_pid_after, 2.0)))
    try:
        pool.run(_pid_after, 0.0)  # the worker is up: the 2 s job starts at once
        busy.start()
        assert wait_until(lambda: pool._slots._value == 0, 5)  # type: ignore[attr-defined]
        with pytest.raises(ResourceExhausted, match="planning jobs are running"):
            pool.run(_pid_after, 0.0)
        assert busy.is_alive()  # refused while the job runs, not queued behind it
        busy.join(10)
        assert len(got) == 1
        assert pool.run(_pid_after, 0.0) > 0  # its place is free again
    finally:
        pool.close()


def _die() -> None:
    os._exit(3)


def test_a_worker_that_dies_fails_its_job_unavailable_and_the_next_job_runs() -> None:
    pool = PlannerPool(size=1)
    try:
        with pytest.raises(Unavailable, match="planner process died"):
            pool.run(_die)
        assert pool.run(_pid_after, 0.0) != os.getpid()
    finally:
        pool.close()
