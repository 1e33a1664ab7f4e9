"""Netlink changes to a host's network namespaces, as small idempotent commands (ovsdbapp's
shape): each says what must be true and makes it so, does nothing when it already is, and
raises NetworkError when it cannot; nothing is swallowed.

Through pyroute2, without an `ip` process per change. pyroute2 opens a socket in another
namespace by forking a child that enters it; the node agent runs gRPC and watch threads, and a
fork of a multi-threaded process may deadlock in the child. So a socket for a namespace is
opened here by a short-lived thread that enters it (setns changes the calling thread alone),
and a namespace is created the same way (unshare in a thread, bound to /run/netns/NAME as
iproute2's `ip netns add` does). Running a program inside a namespace is not netlink: that
stays `ip netns exec` (host.network.HostNetwork.exec).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink import NETLINK_ROUTE
from pyroute2.netlink.exceptions import NetlinkError

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_REC, MS_SHARED, MS_BIND, MNT_DETACH = 0x4000, 1 << 20, 0x1000, 2
TUNSETIFF, TUNSETPERSIST, IFF_TAP, IFF_NO_PI = 0x400454CA, 0x400454CB, 0x0002, 0x1000
T = TypeVar("T")

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class NetworkError(Exception):
    """A host network change failed: what was asked, and the kernel's or the tool's words."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise NetworkError(f"{what}: {os.strerror(e)}")


def _in_thread(fn: Callable[[], T]) -> T:
    """Run `fn` on a thread of its own, which ends with it: whatever namespace it entered goes
    with it."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["ok"] = fn()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e
    t = threading.Thread(target=run, name="netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["ok"]  # type: ignore[no-any-return]


def namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def _enter(name: str) -> None:
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"enter network namespace {name}")
    finally:
        os.close(fd)


def _socket(ns: str) -> socket.socket:
    if not ns:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)

    def opened() -> socket.socket:
        _enter(ns)
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    if not netns_exists(ns):
        raise NetworkError(f"network namespace {ns} does not exist")
    return _in_thread(opened)


class Command(Protocol):
    ns: str  # "" = the root namespace

    def run(self, ip: IPRoute) -> None: ...


def _index(ip: IPRoute, ns: str, name: str) -> int:
    got = ip.link_lookup(ifname=name)
    if not got:
        raise NetworkError(f"no link {name} in {ns or 'the root namespace'}")
    return int(got[0])


def _has(ip: IPRoute, name: str) -> bool:
    return bool(ip.link_lookup(ifname=name))


@dataclass(frozen=True, slots=True)
class AddBridge:
    ns: str
    name: str

    def run(self, ip: IPRoute) -> None:
        if not _has(ip, self.name):
            ip.link("add", ifname=self.name, kind="bridge")


@dataclass(frozen=True, slots=True)
class AddTap:
    """A persistent tap, as `ip tuntap add mode tap` makes it. A tap is made by an ioctl on
    /dev/net/tun, not by netlink, and lands in the namespace of the thread that makes it: so a
    thread that entered `ns` makes it."""

    ns: str
    name: str

    def run(self, ip: IPRoute) -> None:
        if _has(ip, self.name):
            return

        def made() -> None:
            if self.ns:
                _enter(self.ns)
            fd = os.open("/dev/net/tun", os.O_RDWR)
            try:
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", self.name.encode(), IFF_TAP | IFF_NO_PI))
                fcntl.ioctl(fd, TUNSETPERSIST, 1)
            finally:
                os.close(fd)
        try:
            _in_thread(made)
        except OSError as e:
            raise NetworkError(f"{self}: {e}") from e


@dataclass(frozen=True, slots=True)
class AddVeth:
    """A veth pair: `name` in `ns`, its peer `peer` in `peer_ns`."""

    ns: str
    name: str
    peer: str
    peer_ns: str

    def run(self, ip: IPRoute) -> None:
        if not _has(ip, self.name):
            ip.link("add", ifname=self.name, kind="veth", peer={"ifname": self.peer, "net_ns_fd": self.peer_ns})


@dataclass(frozen=True, slots=True)
class SetLink:
    ns: str
    name: str
    up: bool | None = None
    mtu: int | None = None
    address: str | None = None
    master: str | None = None  # a bridge of the same namespace
    arp: bool | None = None

    def run(self, ip: IPRoute) -> None:
        attrs: dict[str, Any] = {}
        if self.mtu is not None:
            attrs["mtu"] = self.mtu
        if self.address is not None:
            attrs["address"] = self.address
        if self.master is not None:
            attrs["master"] = _index(ip, self.ns, self.master)
        if self.arp is not None:
            attrs["arp"] = self.arp
        if self.up is not None:
            attrs["state"] = "up" if self.up else "down"
        if attrs:
            ip.link("set", index=_index(ip, self.ns, self.name), **attrs)


@dataclass(frozen=True, slots=True)
class AddAddress:
    ns: str
    dev: str
    cidr: str  # address/prefix

    def run(self, ip: IPRoute) -> None:
        address, _, prefix = self.cidr.partition("/")
        try:
            ip.addr("add", index=_index(ip, self.ns, self.dev), address=address, prefixlen=int(prefix or 32))
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise


@dataclass(frozen=True, slots=True)
class DelLink:
    ns: str
    name: str

    def run(self, ip: IPRoute) -> None:
        got = ip.link_lookup(ifname=self.name)
        if got:
            ip.link("del", index=got[0])


def execute(*commands: Command) -> None:
    """Run the commands in order, one netlink socket per namespace they name."""
    sockets: dict[str, IPRoute] = {}
    try:
        for c in commands:
            ip = sockets.get(c.ns)
            if ip is None:
                ip = sockets[c.ns] = IPRoute(use_socket=_socket(c.ns))
            try:
                c.run(ip)
            except NetlinkError as e:
                raise NetworkError(f"{c}: {e}") from e
    finally:
        for ip in sockets.values():
            ip.close()


def link_exists(ns: str, name: str) -> bool:
    with IPRoute(use_socket=_socket(ns)) as ip:
        return _has(ip, name)


def addresses(ns: str, dev: str) -> list[str]:
    """The IPv4 addresses of `dev`, as address/prefix."""
    with IPRoute(use_socket=_socket(ns)) as ip:
        return [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in ip.get_addr(family=socket.AF_INET,
                                                                                  index=_index(ip, ns, dev))]


_mount_lock = threading.Lock()


def add_namespace(name: str) -> None:
    """`ip netns add NAME`, and nothing if it exists."""
    if netns_exists(name):
        return
    path = os.path.join(NETNS_DIR, name)
    with _mount_lock:
        os.makedirs(NETNS_DIR, exist_ok=True)
        # Mounts under /run/netns are shared, so that other mount namespaces see them (iproute2).
        if _libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None) != 0:
            _check(_libc.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", MS_BIND | MS_REC, None),
                   f"bind {NETNS_DIR}")
            _check(_libc.mount(b"", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None), f"share {NETNS_DIR}")
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))

    def made() -> None:
        _check(_libc.unshare(CLONE_NEWNET), f"create network namespace {name}")
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        _check(_libc.mount(src, path.encode(), b"none", MS_BIND, None), f"bind network namespace {name}")
    try:
        _in_thread(made)
    except BaseException:
        os.unlink(path)
        raise


def del_namespace(name: str) -> None:
    """`ip netns del NAME`, and nothing if it does not exist."""
    path = os.path.join(NETNS_DIR, name)
    if not os.path.exists(path):
        return
    _libc.umount2(path.encode(), MNT_DETACH)
    os.unlink(path)
