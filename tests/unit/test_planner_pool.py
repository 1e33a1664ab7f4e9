"""Planner work runs in worker processes, a bounded number at once; one more is refused at once."""
from __future__ import annotations

import os
import threading
import time

import pytest

from tests.conftest import wait_until
from vdcos.apiserver.planner_pool import PlannerPool
from vdcos.errors import ResourceExhausted


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_a_job_runs_in_another_process() -> None:
    pool = PlannerPool(size=1)
    try:
        assert pool.run(_pid_after, 0.0) != os.getpid()
    finally:
        pool.close()


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_one_job_past_the_bound_is_refused_at_once_and_the_next_runs(kind: str) -> None:
    pool = PlannerPool(size=1, in_thread=1)
    run = pool.run if kind == "process" else pool.run_here
    got: list[int] = []
    busy = threading.Thread(target=lambda: got.append(run(_pid_after, 2.0)))
    try:
        if kind == "process":
            pool.run(_pid_after, 0.0)  # the worker is up: the 2 s job starts at once
        busy.start()
        assert wait_until(lambda: pool._slots._value == 0 if kind == "process"  # type: ignore[attr-defined]
                          else pool._thread_slots._value == 0, 5)  # type: ignore[attr-defined]
        with pytest.raises(ResourceExhausted, match="planning jobs of this kind are running"):
            run(_pid_after, 0.0)
        assert busy.is_alive()  # refused while the job runs, not queued behind it
        busy.join(10)
        assert len(got) == 1
        assert run(_pid_after, 0.0) > 0
    finally:
        pool.close()
