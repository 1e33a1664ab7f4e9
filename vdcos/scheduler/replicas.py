"""Scheduler replicas on one etcd: each keeps a key under its own lease, and its place among
the live keys is its lane (core.Lane), the stretch of the node ring its decisions look at first.

Without lanes, pack sends every replica to the fullest nodes it sees, the same ones, and their
commits keep conflicting. Lanes never decide correctness: the commit compares every touched
record whatever the lanes are, so a replica that has not yet seen another come or go only
conflicts more until its next refresh (every `refresh_s`)."""
from __future__ import annotations

import json
import logging
import os
import threading
import time

from vdcos.scheduler.core import SOLO, Lane
from vdcos.state import keys
from vdcos.state.store import Store, StoreError

log = logging.getLogger(__name__)


class Replicas:
    def __init__(self, store: Store, *, ttl: int = 10, refresh_s: float = 2.0) -> None:
        self.store = store
        self.address = ""
        self.metrics = ""
        self.ttl = ttl
        self.refresh_s = refresh_s
        self._lease = 0
        self._lane = SOLO
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="replicas", daemon=True)

    @property
    def lane(self) -> Lane:
        return self._lane

    def start(self, address: str = "", metrics: str = "") -> Replicas:
        """Join: from here on the other replicas leave this one a lane. `address` is where it
        serves, `metrics` where Prometheus scrapes it (metrics/discovery.py reads both)."""
        self.address = address
        self.metrics = metrics
        self._refresh()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._lease:
            try:
                self.store.revoke_lease(self._lease)  # the others widen their lanes at once
            except StoreError:
                pass

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self._refresh()
            except StoreError as e:
                log.warning("scheduler replica membership: %s", e)
            except Exception:  # membership must outlive any bug: a replica without it shares no lane
                log.exception("scheduler replica membership round failed")

    def _refresh(self) -> None:
        if not self._lease or self.store.keepalive(self._lease) <= 0:
            # First start, or etcd dropped our lease (a long pause): register again.
            self._lease = self.store.grant_lease(self.ttl)
            record = {"address": self.address, "metrics": self.metrics, "pid": os.getpid(), "started_at": time.time()}
            self.store.put(keys.scheduler(self._lease), json.dumps(record).encode(), self._lease)
        kvs, _ = self.store.get_prefix(keys.SCHEDULERS)
        mine = keys.scheduler(self._lease)
        members = sorted(kv.key for kv in kvs)
        lane = Lane(members.index(mine), len(members)) if mine in members else SOLO
        if lane != self._lane:
            log.info("scheduler lane %d of %d", lane.index, lane.count)
            self._lane = lane
