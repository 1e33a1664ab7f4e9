"""`vdcos migration list | show | cancel`."""
from __future__ import annotations

import argparse
import json

from google.protobuf import json_format

from vdcos.cli.common import Subparsers, connect, emit, table
from vdcos.cli.vms import phase_name
from vdcos.v1 import migration_service_pb2 as mig_pb


def cmd_migration(args: argparse.Namespace) -> int:
    with connect(args) as c:
        if args.migration_command == "list":
            r = c.migrations.ListMigrations(mig_pb.ListMigrationsRequest(vm=args.vm or ""), timeout=args.timeout)
            emit(args, r, lambda: table(
                ["ID", "VM", "FROM", "TO", "PHASE", "DOWNTIME_MS", "TOTAL_MS", "MESSAGE"],
                [[m.id, m.vm, m.source_node, m.target_node, phase_name(m), m.downtime_ms if m.downtime_ms >= 0 else "-",
                  m.total_ms, m.message[:60]] for m in r.migrations]))
        elif args.migration_command == "show":
            m = c.migrations.GetMigration(mig_pb.GetMigrationRequest(id=args.id), timeout=args.timeout).migration
            emit(args, m, lambda: json.dumps(json_format.MessageToDict(m, preserving_proto_field_name=True), indent=2))
        elif args.migration_command == "cancel":
            m = c.migrations.CancelMigration(mig_pb.CancelMigrationRequest(id=args.id), timeout=args.timeout).migration
            emit(args, m, lambda: f"{m.id}: {phase_name(m)}{' (cancel requested)' if m.cancel_requested else ''}")
    return 0


def register(sub: Subparsers) -> None:
    mig = sub.add_parser("migration", help="live migrations: list, show, cancel")
    msub = mig.add_subparsers(dest="migration_command", required=True)
    msub.add_parser("list").add_argument("--vm")
    msub.add_parser("show").add_argument("id")
    msub.add_parser("cancel").add_argument("id")
    mig.set_defaults(fn=cmd_migration)

