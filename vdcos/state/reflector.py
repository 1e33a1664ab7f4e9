"""List-then-watch, as Kubernetes' reflector does: read a few prefixes at one revision, hand the
records over, watch from the next revision; after any watch error (a member that died, a
compacted revision, a callback that raised) list again and watch from the new list's revision.
While it is between the error and the new list, what its consumer holds may be behind the
store: `synced` says so, and `on_synced` is told at each change."""
from __future__ import annotations

import logging
import threading
from typing import Callable, Sequence

from vdcos.state.store import KV, Event, Get, Store, StoreError

log = logging.getLogger(__name__)

Replace = Callable[[list[KV], int], None]
Apply = Callable[[list[Event], int], None]


class Reflector:
    def __init__(self, store: Store, prefixes: Sequence[str], replace: Replace, apply: Apply, *,
                 name: str = "", on_synced: Callable[[bool], None] | None = None,
                 backoff: tuple[float, float] = (0.1, 5.0)) -> None:
        self.store = store
        self.prefixes = tuple(prefixes)
        self.replace = replace
        self.apply = apply
        self.name = name or ",".join(self.prefixes)
        self.on_synced = on_synced
        self.first_pause, self.max_pause = backoff
        self.last_error: Exception | None = None
        self._synced = False
        self._lock = threading.Lock()
        self._generation = 0
        self._broken = threading.Event()
        self._stopping = threading.Event()
        self._cancels: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None

    @property
    def synced(self) -> bool:
        return self._synced

    def start(self) -> Reflector:
        """Lists once on the caller's thread (a store that cannot be read fails the start),
        then keeps watching on a thread of its own."""
        self._list_and_watch()
        self._thread = threading.Thread(target=self._run, name=f"reflector {self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._broken.set()
        self._cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _set_synced(self, value: bool) -> None:
        if value == self._synced:
            return
        self._synced = value
        if self.on_synced is not None:
            try:
                self.on_synced(value)
            except Exception:
                log.exception("%s: on_synced failed", self.name)

    def _cancel(self) -> None:
        with self._lock:
            cancels, self._cancels = self._cancels, []
        for c in cancels:
            try:
                c()
            except Exception:
                log.debug("%s: cancel failed", self.name, exc_info=True)

    def _list_and_watch(self) -> None:
        res = self.store.txn([], [Get(p, prefix=True) for p in self.prefixes])
        kvs = [kv for got in res.gets for kv in got]
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._broken.clear()
        self.replace(kvs, res.revision)

        def events(evs: list[Event], revision: int) -> None:
            if generation == self._generation:  # a cancelled watch's late batch is not applied
                self.apply(evs, revision)

        def failed(e: Exception) -> None:
            if generation == self._generation and not self._stopping.is_set():
                log.warning("%s: watch failed (%s); listing again", self.name, e)
                self.last_error = e
                self._set_synced(False)
                self._broken.set()

        cancels = [self.store.watch_prefix(p, res.revision + 1, events, failed) for p in self.prefixes]
        with self._lock:
            self._cancels.extend(cancels)
        self._set_synced(True)

    def _run(self) -> None:
        pause = self.first_pause
        while not self._stopping.is_set():
            self._broken.wait()
            if self._stopping.is_set():
                return
            self._cancel()
            try:
                self._list_and_watch()
                pause = self.first_pause
                log.info("%s: listed again and watching", self.name)
            except StoreError as e:
                self.last_error = e
                log.warning("%s: list failed (%s); again in %.1f s", self.name, e, pause)
                self._stopping.wait(pause)
                pause = min(self.max_pause, pause * 2)
            except Exception:  # a consumer's bug: keep trying, never leave the consumer frozen
                log.exception("%s: re-list failed", self.name)
                self._stopping.wait(pause)
                pause = min(self.max_pause, pause * 2)
