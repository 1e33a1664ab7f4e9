"""ConsoleVm's pump: a client's bidirectional gRPC stream joined to the guest's serial console on
its host (nodeagent/libvirt/console.py, through the host's hypervisor URI, as the HA probe and
migrations reach it). A reader thread per attachment feeds the answers; keystrokes are written
as they arrive. When the console goes away because the VM live-migrated, the stream attaches
again on the VM's new host and says so; when it goes away for any other reason, it ends."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, AsyncIterator

from vdcos.apiserver import scope, validate
from vdcos.apiserver.common import check_name
from vdcos.apiserver.operations import Operations
from vdcos.errors import FailedPrecondition
from vdcos.model import VmPhase
from vdcos.nodeagent.driver import DriverError
from vdcos.state import keys
from vdcos.v1 import vm_service_pb2 as vm_pb

if TYPE_CHECKING:  # imported where it runs: only a replica that attaches a console needs libvirt
    from vdcos.nodeagent.libvirt.console import ConsoleSession

# After the console went away: how long a VM whose migration is finishing may take to show up
# running on its new host.
MOVE_WAIT_S = 15.0
MAX_KEYSTROKES = 64 * 1024  # per request


def _where(ops: Operations, name: str) -> tuple[str, str]:
    """The VM's host and that host's hypervisor URI, if the VM runs there with a console."""
    rec = ops.get_vm(name)
    scope.current().check(rec.spec.project, f"vm {name!r}")
    node = rec.placement.node if rec.placement else ""
    if rec.status.phase not in (VmPhase.RUNNING, VmPhase.PAUSED) or not node:
        raise FailedPrecondition(f"vm {name!r} is {rec.status.phase.value}: only a running VM has a console")
    view = ops.cache.node(node)
    if view is None or view.spec.driver != "libvirt" or not view.spec.hypervisor_uri:
        raise FailedPrecondition(f"vm {name!r} runs on {node}, a host without guest consoles "
                                 f"({view.spec.driver if view else 'unknown'} driver)")
    return node, view.spec.hypervisor_uri


def _open(ops: Operations, name: str) -> tuple[str, ConsoleSession]:
    from vdcos.nodeagent.libvirt.console import ConsoleSession  # where libvirt runs
    node, uri = _where(ops, name)
    try:
        return node, ConsoleSession(uri, name)
    except DriverError as e:
        raise FailedPrecondition(f"vm {name!r}: {e}") from e


async def console(ops: Operations, requests: AsyncIterator[vm_pb.ConsoleVmRequest]
                  ) -> AsyncIterator[vm_pb.ConsoleVmResponse]:
    first = await anext(requests, None)
    if first is None or not first.name:
        validate.check([("name", "is required in the first request")])
    assert first is not None
    name = first.name
    check_name(name)
    node, session = await asyncio.to_thread(_open, ops, name)
    loop = asyncio.get_running_loop()
    out: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)
    current = [session]

    def pump(s: ConsoleSession) -> None:
        """The guest's output into the queue, until its console goes away."""
        while True:
            data = s.read()
            fut = asyncio.run_coroutine_threadsafe(out.put(data or None), loop)
            try:
                fut.result()
            except Exception:
                return
            if not data:
                return

    async def keystrokes() -> None:
        if first.data:
            await asyncio.to_thread(current[0].write, first.data)
        async for req in requests:
            if len(req.data) > MAX_KEYSTROKES:
                continue  # one oversized message is dropped; the console goes on
            if req.data:
                try:
                    await asyncio.to_thread(current[0].write, req.data)
                except DriverError:
                    pass  # the console is moving or gone: the reader side says which

    writer = asyncio.create_task(keystrokes())
    try:
        yield vm_pb.ConsoleVmResponse(notice=f"attached to {name} on {node}")
        while True:
            threading.Thread(target=pump, args=(current[0],), name=f"console-{name}", daemon=True).start()
            while (data := await out.get()) is not None:
                yield vm_pb.ConsoleVmResponse(data=data)
            current[0].close()
            moved = await _moved(ops, name, node)
            if moved is None:
                yield vm_pb.ConsoleVmResponse(notice=f"console of {name} closed: it is no longer running on {node}")
                return
            node, current[0] = moved
            yield vm_pb.ConsoleVmResponse(notice=f"{name} moved: attached on {node}")
    finally:
        writer.cancel()
        await asyncio.to_thread(current[0].close)


async def _moved(ops: Operations, name: str, was: str) -> tuple[str, ConsoleSession] | None:
    """The console again on the VM's new host, if it went away because the VM migrated."""
    deadline = time.monotonic() + MOVE_WAIT_S
    while time.monotonic() < deadline:
        try:
            rec = await asyncio.to_thread(ops.get_vm, name)
        except Exception:
            return None
        migrating = await asyncio.to_thread(ops.store.get, keys.vm_migration(name)) is not None
        node = rec.placement.node if rec.placement else ""
        if node and node != was and rec.status.phase is VmPhase.RUNNING:
            try:
                return await asyncio.to_thread(_open, ops, name)
            except Exception:
                pass
        elif not migrating and node == was:
            return None
        await asyncio.sleep(0.2)
    return None
