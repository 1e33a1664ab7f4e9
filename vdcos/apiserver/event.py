"""EventService: the datacenter's events, a page at a time and as they come (vdcos/events/)."""
from __future__ import annotations

import re
from contextlib import aclosing
from typing import AsyncIterator

from vdcos import events
from vdcos.apiserver import scope, validate
from vdcos.apiserver.common import Ctx, blocking, watch
from vdcos.apiserver.convert import ts
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc, stream_rpc
from vdcos.model import EVENT_KINDS, ClusterEvent
from vdcos.state import keys
from vdcos.v1 import event_service_pb2 as ev_pb
from vdcos.v1 import event_service_pb2_grpc as ev_grpc

MAX_PAGE = 1000
_TOKEN = re.compile(re.escape(keys.EVENTS) + r"[0-9]{10}/[0-9]{20}-[0-9a-f]{12,}")
_FAMILIES = {k.partition(".")[0] + "." for k in EVENT_KINDS}


def event_to_pb(key: str, e: ClusterEvent) -> ev_pb.Event:
    return ev_pb.Event(at=ts(e.at), kind=e.kind, name=e.name, node=e.node, project=e.project, message=e.message,
                       fields=dict(e.fields), count=e.count, id=key)


def _filter(f: ev_pb.EventFilter, out: validate.Violations) -> events.Filter:
    validate.name(f.vm, "filter.vm", out, required=False)
    validate.name(f.node, "filter.node", out, required=False)
    validate.name(f.project, "filter.project", out, required=False)
    if f.kind and f.kind not in EVENT_KINDS and f.kind not in _FAMILIES:
        out.append(("filter.kind", f"one of {', '.join(sorted(EVENT_KINDS))}, or a family ({', '.join(sorted(_FAMILIES))})"))
    # A project's caller sees its project's events alone, whatever it asked for.
    project = scope.current().owner(f.project) if f.project or scope.current().project else None
    return events.Filter(f.vm, f.node, f.kind, project)


class EventServicer(ev_grpc.EventServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def ListEvents(self, request: ev_pb.ListEventsRequest, context: Ctx) -> ev_pb.ListEventsResponse:
        out: validate.Violations = []
        f = _filter(request.filter, out)
        if request.page_size > MAX_PAGE:
            out.append(("page_size", f"at most {MAX_PAGE}, got {request.page_size}"))
        if request.page_token and not _TOKEN.fullmatch(request.page_token):
            out.append(("page_token", "not a token a ListEvents response gave"))
        validate.check(out)
        since = request.since.ToSeconds() if request.HasField("since") else 0.0
        got, token = await blocking(events.page, self.ops.store, f, request.page_size or 100, request.page_token,
                                    since)
        return ev_pb.ListEventsResponse(events=[event_to_pb(k, e) for k, e in got], next_page_token=token)

    @stream_rpc
    async def WatchEvents(self, request: ev_pb.WatchEventsRequest,
                          context: Ctx) -> AsyncIterator[ev_pb.WatchEventsResponse]:
        out: validate.Violations = []
        f = _filter(request.filter, out)
        validate.check(out)
        async with aclosing(watch(self.ops, keys.EVENTS)) as batches:
            async for evs, _ in batches:
                for ev in evs:
                    if ev.kind != "put":
                        continue  # retention's deletes
                    e = events.decode_event(ev.kv.value)
                    if f.keeps(e):
                        yield ev_pb.WatchEventsResponse(event=event_to_pb(ev.kv.key, e))
