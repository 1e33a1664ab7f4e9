"""What every servicer module shares: the servicer context type, blocking calls kept off the
event loop, name checks, and etcd watches as async generators."""
from __future__ import annotations

import asyncio
from typing import AsyncGenerator, Callable, TypeVar

import grpc
import grpc.aio

from vdcos.apiserver import validate
from vdcos.apiserver.operations import Operations
from vdcos.errors import Aborted, Unavailable
from vdcos.state.store import Event

Ctx = grpc.aio.ServicerContext
T = TypeVar("T")


async def blocking(fn: Callable[..., T], *args: object) -> T:
    """etcd reads and writes block: keep them off the event loop."""
    return await asyncio.to_thread(fn, *args)


def check_name(value: str, field: str = "name") -> None:
    out: validate.Violations = []
    validate.name(value, field, out)
    validate.check(out)


def check_node_and_reason(name: str, reason: str) -> None:
    """A node named for cordoning or draining, and the reason given."""
    out: validate.Violations = []
    validate.name(name, "name", out)
    if len(reason) > 256:
        out.append(("reason", "at most 256 characters"))
    validate.check(out)


WATCH_BUFFER = 10_000  # batches of events a stream may fall behind before it ends


async def watch(ops: Operations, prefix: str, start_revision: int = 0,
                also: tuple[str, ...] = ()) -> AsyncGenerator[tuple[list[Event], int], None]:
    """etcd watch -> async generator, from `start_revision` (default: from now on); the watch is
    cancelled when the client goes away or the generator is closed. `also`: more prefixes,
    watched from the same revision into the same stream.

    It never drops an event: a client that reads too slowly for WATCH_BUFFER batches ends with
    ABORTED, and a watch that fails (its etcd member died, the revision was compacted) with
    UNAVAILABLE; either way the client lists again and watches from the list's revision."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[tuple[list[Event], int] | Exception] = asyncio.Queue()
    if not start_revision:
        _, rev = await blocking(ops.store.get_prefix, prefix + "\x00none")  # the current revision
        start_revision = rev + 1
    behind = False

    def put(item: tuple[list[Event], int] | Exception) -> None:  # on the loop
        nonlocal behind
        if behind:
            return
        if q.qsize() >= WATCH_BUFFER and not isinstance(item, Exception):
            behind = True
            item = Aborted(f"the watch fell {WATCH_BUFFER} batches behind (the client reads too slowly); "
                           "list again and watch from the list's revision")
        q.put_nowait(item)

    def events(evs: list[Event], rev: int) -> None:
        loop.call_soon_threadsafe(put, (evs, rev))

    def ended(e: Exception) -> None:
        loop.call_soon_threadsafe(put, Unavailable(f"the watch on the cluster state ended ({e}); "
                                                   "list again and watch from the list's revision"))
    cancels = [ops.store.watch_prefix(p, start_revision, events, ended) for p in (prefix, *also)]
    try:
        while True:
            item = await q.get()
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        for cancel in cancels:
            cancel()
