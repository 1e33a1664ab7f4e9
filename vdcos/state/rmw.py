"""One way to change state: read, decide, commit comparing what was read, retry a bounded number
of times (OpenStack Placement's generations; Kubernetes' resourceVersion on update).

An attempt is a function of a `Reads`: every record it reads through it is compared in the
commit (its mod_revision, or that it is still absent), so a decision made from those records
either commits as made or is made again from fresh ones. `Reads.load` fetches several keys in
one round trip, at one revision. An attempt raises a domain error to refuse (that is final, not
retried) and returns a `Write`: what to put or delete, any compares of its own (a key it did
not read, a prefix), and the result to hand back once committed. A write with no ops commits
nothing and returns its result at once.

Every compare-and-swap in vdcos goes through `read_modify_write`, except the placement worker's
batches, which read through the scheduler's cache and retry per VM (scheduler/worker.py);
vdcos/state/README.md lists who writes which key.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

from vdcos.errors import Aborted
from vdcos.model import decode
from vdcos.state.store import KV, Compare, Get, Op, Store

T = TypeVar("T")
R = TypeVar("R")

ATTEMPTS = 20
# The pause before attempt n is up to BACKOFF_S * n (at most 8x): writers that collided spread out.
BACKOFF_S = 0.002


class Reads:
    """The records one attempt has read, each to be compared when it commits."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._kvs: dict[str, KV | None] = {}

    def load(self, *keys: str) -> None:
        """Read these keys (those not read yet) in one round trip, all at one revision."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._kvs]
        if not missing:
            return
        if len(missing) == 1:
            self._kvs[missing[0]] = self.store.get(missing[0])
            return
        res = self.store.txn([], [Get(k) for k in missing])
        for key, got in zip(missing, res.gets):
            self._kvs[key] = got[0] if got else None

    def kv(self, key: str) -> KV | None:
        self.load(key)
        return self._kvs[key]

    def get(self, cls: type[R], key: str) -> R | None:
        """The record decoded, or None when there is none (compared as absent)."""
        kv = self.kv(key)
        return decode(cls, json.loads(kv.value)) if kv is not None else None

    def peek(self, key: str) -> KV | None:
        """Read without comparing: for a record that changes all the time (an agent's status)
        and decides nothing, or that the attempt compares in its own way."""
        return self._kvs[key] if key in self._kvs else self.store.get(key)

    def track(self, kv: KV) -> None:
        """Compare a record read some other way (a prefix read) like the others."""
        self._kvs.setdefault(kv.key, kv)

    def compares(self) -> list[Compare]:
        return [Compare(k, "mod", "==", kv.mod_revision) if kv is not None else Compare(k, "create", "==", 0)
                for k, kv in self._kvs.items()]


@dataclass(frozen=True, slots=True)
class Write(Generic[T]):
    result: T
    ops: Sequence[Op] = ()
    compares: Sequence[Compare] = ()  # beyond the reads' own


def read_modify_write(store: Store, attempt: Callable[[Reads], Write[T]], what: str, *,
                      attempts: int = ATTEMPTS, on_commit: Callable[[int], None] | None = None,
                      on_conflict: Callable[[int], None] | None = None) -> T:
    """Run `attempt` until its write commits with every record it read unchanged, at most
    `attempts` times; then ABORTED naming `what` (the client may retry the whole call).
    `on_commit` and `on_conflict` get the store's revision after a commit or a failed one (a
    cache that the next attempt reads from waits for it)."""
    for n in range(1, attempts + 1):
        reads = Reads(store)
        write = attempt(reads)
        if not write.ops:
            return write.result
        res = store.txn([*reads.compares(), *write.compares], write.ops)
        if res.succeeded:
            if on_commit is not None:
                on_commit(res.revision)
            return write.result
        if on_conflict is not None:
            on_conflict(res.revision)
        time.sleep(random.uniform(0, BACKOFF_S * min(n, 8)))
    raise Aborted(f"{what}: the records it changes kept changing ({attempts} attempts); try again")
