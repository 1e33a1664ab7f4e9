"""MigrationService: start, get, list, cancel and watch live migrations."""
from __future__ import annotations

import json
from contextlib import aclosing
from typing import AsyncIterator

from vdcos.apiserver import convert, scope, validate
from vdcos.apiserver.common import Ctx, blocking, check_name, watch
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.status import rpc, stream_rpc
from vdcos.errors import NotFound
from vdcos.model import Migration, decode
from vdcos.state import keys
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import migration_service_pb2_grpc as mig_grpc


class MigrationServicer(mig_grpc.MigrationServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def MigrateVm(self, request: mig_pb.MigrateVmRequest, context: Ctx) -> mig_pb.MigrateVmResponse:
        validate.check(validate.migrate(request))
        vm = await blocking(self.ops.get_vm, request.vm)
        scope.current().check(vm.spec.project, f"VM {request.vm!r}")
        m = await blocking(self.ops.migrate_vm, request.vm, request.target_node,
                           convert.migration_options_from_pb(request.options))
        return mig_pb.MigrateVmResponse(migration=convert.migration_to_pb(m))

    @rpc
    async def GetMigration(self, request: mig_pb.GetMigrationRequest, context: Ctx) -> mig_pb.GetMigrationResponse:
        validate.check(validate.migration_id(request.id))
        m = await blocking(self.ops.get_migration, request.id)
        scope.current().check(m.project, f"migration {request.id!r}")
        return mig_pb.GetMigrationResponse(migration=convert.migration_to_pb(m))

    @rpc
    async def ListMigrations(self, request: mig_pb.ListMigrationsRequest,
                             context: Ctx) -> mig_pb.ListMigrationsResponse:
        if request.vm:
            check_name(request.vm, "vm")
        ms = await blocking(self.ops.list_migrations, request.vm)
        sees = scope.current().sees
        return mig_pb.ListMigrationsResponse(migrations=[convert.migration_to_pb(m) for m in ms if sees(m.project)])

    @rpc
    async def CancelMigration(self, request: mig_pb.CancelMigrationRequest,
                              context: Ctx) -> mig_pb.CancelMigrationResponse:
        validate.check(validate.migration_id(request.id))
        scope.current().check((await blocking(self.ops.get_migration, request.id)).project,
                              f"migration {request.id!r}")
        m = await blocking(self.ops.cancel_migration, request.id)
        return mig_pb.CancelMigrationResponse(migration=convert.migration_to_pb(m))

    @stream_rpc
    async def WatchMigration(self, request: mig_pb.WatchMigrationRequest,
                             context: Ctx) -> AsyncIterator[mig_pb.WatchMigrationResponse]:
        validate.check(validate.migration_id(request.id))
        key = keys.migration(request.id)
        kvs, rev = await blocking(self.ops.store.get_prefix, key)
        if not kvs:
            raise NotFound(f"migration {request.id!r} not found")
        m = decode(Migration, json.loads(kvs[0].value))
        scope.current().check(m.project, f"migration {request.id!r}")
        yield mig_pb.WatchMigrationResponse(migration=convert.migration_to_pb(m))
        if m.phase.done:
            return
        # From just after that read: no update in between is lost.
        async with aclosing(watch(self.ops, key, rev + 1)) as updates:
            async for evs, _ in updates:
                for ev in evs:
                    if ev.kind == "put" and ev.kv.key == key:
                        m = decode(Migration, json.loads(ev.kv.value))
                        yield mig_pb.WatchMigrationResponse(migration=convert.migration_to_pb(m))
                if m.phase.done:
                    return
