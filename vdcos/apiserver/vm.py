"""VmService: create (one, a stream, a batch), get, list, delete and watch VMs."""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

from vdcos.apiserver import console, convert, scope, validate
from vdcos.apiserver.common import Ctx, blocking, check_name, watch
from vdcos.apiserver.operations import Operations, VmRecord
from vdcos.apiserver.status import as_status, rpc, stream_rpc
from vdcos.errors import NotFound
from vdcos.lifecycle import power
from vdcos.model import VmSpec
from vdcos.state import keys
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import vm_service_pb2_grpc as vm_grpc

STREAM_IN_FLIGHT = 256  # requests of one CreateVms stream being placed at once
MAX_BATCH_CREATE = 1000



def _create_violations(request: vm_pb.CreateVmRequest | vm_pb.CreateVmsRequest, field: str = "") -> validate.Violations:
    violations = validate.vm_spec(request.spec, f"{field}spec") if request.HasField("spec") \
        else [(f"{field}spec", "is required")]
    if len(request.request_id) > 128:
        violations.append((f"{field}request_id", "at most 128 characters"))
    return violations


def _create_request(request: vm_pb.CreateVmRequest | vm_pb.CreateVmsRequest) -> VmSpec:
    validate.check(_create_violations(request))
    return _owned(convert.vm_spec_from_pb(request.spec))


def _owned(spec: VmSpec) -> VmSpec:
    """The spec with the project the caller may create it in (scope.py)."""
    return spec.in_project(scope.current().owner(spec.project))


def _batch_create_request(request: vm_pb.BatchCreateVmsRequest) -> list[VmSpec]:
    """All of the batch, or INVALID_ARGUMENT naming every bad request in it."""
    n = len(request.requests)
    if not 1 <= n <= MAX_BATCH_CREATE:
        validate.check([("requests", f"between 1 and {MAX_BATCH_CREATE} VMs, got {n}")])
    violations: validate.Violations = []
    first: dict[str, int] = {}
    for i, req in enumerate(request.requests):
        violations += _create_violations(req, f"requests[{i}].")
        if req.spec.name and (j := first.setdefault(req.spec.name, i)) != i:
            violations.append((f"requests[{i}].spec.name", f"{req.spec.name!r} is also requests[{j}]"))
    validate.check(violations)
    return [convert.vm_spec_from_pb(req.spec) for req in request.requests]


def _result(req: vm_pb.CreateVmRequest | vm_pb.CreateVmsRequest, got: VmRecord | Exception,
            out: vm_pb.CreateVmsResponse | None = None) -> vm_pb.CreateVmsResponse:
    answer = vm_pb.CreateVmsResponse() if out is None else out
    if isinstance(got, Exception):
        answer.error.CopyFrom(as_status(got))
    else:
        convert.vm_to_pb(got, answer.vm)
    answer.name, answer.request_id = req.spec.name, req.request_id
    return answer


def _vm_of(key: str) -> str:
    """The VM a key of its records or of its status names."""
    if key.startswith(keys.VM_STATUSES):
        return keys.split(key, keys.VM_STATUSES)[1]
    return keys.split(key, keys.VMS)[0]


class VmServicer(vm_grpc.VmServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @rpc
    async def CreateVm(self, request: vm_pb.CreateVmRequest, context: Ctx) -> vm_pb.CreateVmResponse:
        rec = await self.ops.create_vm_async(_create_request(request), request.request_id)
        answer = vm_pb.CreateVmResponse()
        convert.vm_to_pb(rec, answer.vm)
        return answer

    async def _answer(self, req: vm_pb.CreateVmsRequest) -> vm_pb.CreateVmsResponse:
        """One VM of a stream: placed, or the status CreateVm would have failed with."""
        try:
            got: VmRecord | Exception = await self.ops.create_vm_async(_create_request(req), req.request_id)
        except Exception as e:
            got = e
        return _result(req, got)

    async def CreateVms(self, requests: AsyncIterator[vm_pb.CreateVmsRequest],
                        context: Ctx) -> AsyncIterator[vm_pb.CreateVmsResponse]:
        """Each request is placed concurrently with the others (the worker batches them) and
        answered as soon as it is decided; at most STREAM_IN_FLIGHT wait at once, so a client
        that sends faster than we place is slowed down, not buffered without bound."""
        answers: asyncio.Queue[vm_pb.CreateVmsResponse | None] = asyncio.Queue()
        room = asyncio.Semaphore(STREAM_IN_FLIGHT)

        async def one(req: vm_pb.CreateVmsRequest) -> None:
            try:
                answers.put_nowait(await self._answer(req))
            finally:
                room.release()

        async def read() -> None:
            tasks: set[asyncio.Task[None]] = set()
            try:
                async for req in requests:
                    await room.acquire()
                    t = asyncio.create_task(one(req))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.wait(tasks)
            finally:
                answers.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
            await reader  # a broken request stream ends the call with its error
        finally:
            reader.cancel()

    @rpc
    async def BatchCreateVms(self, request: vm_pb.BatchCreateVmsRequest,
                             context: Ctx) -> vm_pb.BatchCreateVmsResponse:
        specs = _batch_create_request(request)
        items: list[tuple[VmSpec, str]] = []
        refused: dict[int, Exception] = {}  # one item in another project fails alone
        for i, (s, r) in enumerate(zip(specs, request.requests)):
            try:
                items.append((_owned(s), r.request_id))
            except NotFound as e:
                refused[i] = e
        placed = iter(await self.ops.create_vms_async(items))
        got = [refused[i] if i in refused else next(placed) for i in range(len(specs))]
        answer = vm_pb.BatchCreateVmsResponse()
        add = answer.results.add
        for r, g in zip(request.requests, got):
            _result(r, g, add())
        return answer

    @rpc
    async def GetVm(self, request: vm_pb.GetVmRequest, context: Ctx) -> vm_pb.GetVmResponse:
        check_name(request.name)
        rec = await blocking(self.ops.get_vm, request.name)
        scope.current().check(rec.spec.project, f"vm {request.name!r}")
        return vm_pb.GetVmResponse(vm=convert.vm_to_pb(rec))

    @rpc
    async def ListVms(self, request: vm_pb.ListVmsRequest, context: Ctx) -> vm_pb.ListVmsResponse:
        if request.node:
            check_name(request.node, "node")
        if request.project:
            check_name(request.project, "project")
        sees = scope.current().sees
        return vm_pb.ListVmsResponse(vms=[
            convert.vm_to_pb(r) for r in await blocking(self.ops.list_vms, request.node)
            if sees(r.spec.project) and (not request.project or r.spec.project == request.project)])

    @rpc
    async def DeleteVm(self, request: vm_pb.DeleteVmRequest, context: Ctx) -> vm_pb.DeleteVmResponse:
        check_name(request.name)
        await blocking(self.ops.delete_vm, request.name, request.keep_volumes, scope.current().project)
        return vm_pb.DeleteVmResponse()

    # --- power operations (lifecycle/power.py) ------------------------------------------
    async def _power(self, name: str, action: power.Action, hard: bool = False,
                     timeout_s: int = power.DEFAULT_STOP_TIMEOUT_S) -> pb.Vm:
        check_name(name)
        rec = await blocking(self.ops.set_power, name, action, scope.current().project, hard, timeout_s)
        return convert.vm_to_pb(rec)

    @rpc
    async def StartVm(self, request: vm_pb.StartVmRequest, context: Ctx) -> vm_pb.StartVmResponse:
        return vm_pb.StartVmResponse(vm=await self._power(request.name, power.Action.START))

    @rpc
    async def StopVm(self, request: vm_pb.StopVmRequest, context: Ctx) -> vm_pb.StopVmResponse:
        validate.check(validate.stop_timeout(request.timeout_s))
        return vm_pb.StopVmResponse(vm=await self._power(request.name, power.Action.STOP, request.force,
                                                         request.timeout_s or power.DEFAULT_STOP_TIMEOUT_S))

    @rpc
    async def RebootVm(self, request: vm_pb.RebootVmRequest, context: Ctx) -> vm_pb.RebootVmResponse:
        return vm_pb.RebootVmResponse(vm=await self._power(request.name, power.Action.REBOOT, request.hard))

    @rpc
    async def SuspendVm(self, request: vm_pb.SuspendVmRequest, context: Ctx) -> vm_pb.SuspendVmResponse:
        return vm_pb.SuspendVmResponse(vm=await self._power(request.name, power.Action.SUSPEND))

    @rpc
    async def ResumeVm(self, request: vm_pb.ResumeVmRequest, context: Ctx) -> vm_pb.ResumeVmResponse:
        return vm_pb.ResumeVmResponse(vm=await self._power(request.name, power.Action.RESUME))

    @rpc
    async def ShelveVm(self, request: vm_pb.ShelveVmRequest, context: Ctx) -> vm_pb.ShelveVmResponse:
        check_name(request.name)
        rec = await blocking(self.ops.shelve, request.name, scope.current().project)
        return vm_pb.ShelveVmResponse(vm=convert.vm_to_pb(rec))

    @rpc
    async def ResizeVm(self, request: vm_pb.ResizeVmRequest, context: Ctx) -> vm_pb.ResizeVmResponse:
        validate.check(validate.resize(request))
        rec = await blocking(self.ops.resize, request.name,
                             convert.resources_from_pb(request.resources) if request.HasField("resources") else None,
                             request.qos_policy or None, request.restart, scope.current().project)
        return vm_pb.ResizeVmResponse(vm=convert.vm_to_pb(rec))

    @stream_rpc
    async def ConsoleVm(self, requests: AsyncIterator[vm_pb.ConsoleVmRequest],
                        context: Ctx) -> AsyncIterator[vm_pb.ConsoleVmResponse]:
        async for answer in console.console(self.ops, requests):
            yield answer

    @stream_rpc
    async def WatchVms(self, request: vm_pb.WatchVmsRequest, context: Ctx) -> AsyncIterator[vm_pb.WatchVmsResponse]:
        within = scope.current()
        # A project's watch names only its VMs, deletions too: those it saw, and those it had
        # when the watch began (a deleted VM's record no longer says whose it was).
        mine: set[str] | None = None
        if within.project is not None:
            mine = {r.spec.name for r in await blocking(self.ops.list_vms) if r.spec.project == within.project}
        async for events, rev in watch(self.ops, keys.VMS, also=(keys.VM_STATUSES,)):
            for name in dict.fromkeys(_vm_of(e.kv.key) for e in events):
                try:
                    rec = await blocking(self.ops.get_vm, name)
                    if not within.sees(rec.spec.project):
                        continue
                    vm, kind = convert.vm_to_pb(rec), pb.EVENT_TYPE_PUT
                    if mine is not None:
                        mine.add(name)
                except NotFound:
                    if mine is not None:
                        if name not in mine:
                            continue
                        mine.discard(name)
                    vm, kind = pb.Vm(spec=pb.VmSpec(name=name)), pb.EVENT_TYPE_DELETE
                yield vm_pb.WatchVmsResponse(type=kind, vm=vm, revision=rev)
