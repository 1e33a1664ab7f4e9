"""`vdcos events`: the datacenter's events, newest first, or as they come with -w."""
from __future__ import annotations

import argparse
import datetime
import json

from google.protobuf import json_format

from vdcos.cli.common import Subparsers, connect, emit, table
from vdcos.v1 import event_service_pb2 as ev_pb


def _row(e: ev_pb.Event) -> list[str]:
    what = e.name or f"({e.count} of them)"
    return [datetime.datetime.fromtimestamp(e.at.ToSeconds()).strftime("%Y-%m-%d %H:%M:%S"), e.kind, what,
            e.node or "-", e.project or "-", e.message[:100]]


HEADER = ["WHEN", "KIND", "OBJECT", "NODE", "PROJECT", "MESSAGE"]


def cmd_events(args: argparse.Namespace) -> int:
    f = ev_pb.EventFilter(vm=args.vm or "", node=args.node or "", kind=args.kind or "", project=args.project or "")
    with connect(args) as c:
        if args.watch:
            if args.output != "json":
                print("\t".join(HEADER), flush=True)
            for r in c.events.WatchEvents(ev_pb.WatchEventsRequest(filter=f)):
                if args.output == "json":
                    print(json.dumps(json_format.MessageToDict(r.event, preserving_proto_field_name=True)), flush=True)
                else:
                    print("\t".join(_row(r.event)), flush=True)
            return 0
        got: list[ev_pb.Event] = []
        token = ""
        while len(got) < args.limit:
            page = c.events.ListEvents(ev_pb.ListEventsRequest(filter=f, page_size=min(1000, args.limit - len(got)),
                                                               page_token=token), timeout=args.timeout)
            got += page.events
            token = page.next_page_token
            if not token:
                break
    emit(args, ev_pb.ListEventsResponse(events=got, next_page_token=token),
         lambda: table(HEADER, [_row(e) for e in got]))
    return 0


def register(sub: Subparsers) -> None:
    e = sub.add_parser("events", help="the datacenter's events: VMs created, placed, refused, started, stopped, "
                                      "migrated, restarted by HA; nodes joined, NotReady, cordoned, drained, fenced")
    e.add_argument("-w", "--watch", action="store_true", help="print events as they come, until interrupted")
    e.add_argument("--vm", help="only this VM's")
    e.add_argument("--node", help="only those on or about this node")
    e.add_argument("--kind", help="only this kind (vm.migrated) or family (vm., node.)")
    e.add_argument("--project", help="only this project's (admins; a project's callers see their own)")
    e.add_argument("--limit", type=int, default=100, help="newest first, at most this many (default 100)")
    e.set_defaults(fn=cmd_events)
