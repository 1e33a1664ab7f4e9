"""A guest's serial console, attached through its host's libvirt (virDomainOpenConsole, what
`virsh console` does): bytes in both directions over a libvirt stream. The API's ConsoleVm
(apiserver/console.py) pumps one between a client's gRPC stream and the guest."""
from __future__ import annotations

import libvirt

from vdcos.nodeagent.driver import DriverError


class ConsoleSession:
    """One attached console. `read` blocks until the guest prints (b"" once the console is
    gone: the guest stopped or moved); `write` sends keystrokes. Thread-safe as libvirt's
    connections are: one thread reads while another writes."""

    def __init__(self, uri: str, name: str) -> None:
        try:
            self._conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise DriverError(f"the host's hypervisor does not answer: {e}") from e
        try:
            dom = self._conn.lookupByName(name)
            if not dom.isActive():
                raise DriverError(f"{name} is not running")
            self._stream = self._conn.newStream(0)
            # FORCE: a second attach takes the console over, as `virsh console --force` does.
            dom.openConsole(None, self._stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        except libvirt.libvirtError as e:
            self._conn.close()
            raise DriverError(f"attaching to {name}'s console: {e}") from e
        except DriverError:
            self._conn.close()
            raise
        self._closed = False

    def read(self, size: int = 4096) -> bytes:
        if self._closed:
            return b""
        try:
            got = self._stream.recv(size)
        except libvirt.libvirtError:
            return b""
        return got if isinstance(got, bytes) else b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._closed:
            try:
                sent = self._stream.send(bytes(view))
            except libvirt.libvirtError as e:
                raise DriverError(f"console write: {e}") from e
            if sent < 0:
                raise DriverError("console write: the stream would block")
            view = view[sent:]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.abort()
        except libvirt.libvirtError:
            pass
        try:
            self._conn.close()
        except libvirt.libvirtError:
            pass
