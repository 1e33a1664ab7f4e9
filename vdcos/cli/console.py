"""`vdcos vm console VM`: the guest's serial console, like `virsh console`. On a terminal, keys go
to the guest as typed (raw mode) and Ctrl-] leaves; with stdin from a pipe, its lines are sent,
and what the guest prints meanwhile is shown for --linger seconds after the input ends."""
from __future__ import annotations

import argparse
import os
import queue
import sys
import termios
import threading
import time
import tty
from typing import Iterator

import grpc

from vdcos.cli.client import Client
from vdcos.cli.common import Subparsers
from vdcos.v1 import vm_service_pb2 as vm_pb

ESCAPE = b"\x1d"  # Ctrl-], as virsh and telnet


def _keys(name: str, raw: bool, done: threading.Event, linger: float) -> Iterator[vm_pb.ConsoleVmRequest]:
    """The requests: the VM's name, then stdin's bytes as they come."""
    yield vm_pb.ConsoleVmRequest(name=name)
    chunks: queue.Queue[bytes] = queue.Queue()

    def read() -> None:
        fd = sys.stdin.fileno()
        while True:
            try:
                data = os.read(fd, 1024)
            except OSError:
                data = b""
            chunks.put(data)
            if not data or (raw and ESCAPE in data):
                return

    threading.Thread(target=read, daemon=True, name="console-stdin").start()
    while not done.is_set():
        try:
            data = chunks.get(timeout=0.2)
        except queue.Empty:
            continue
        if raw and ESCAPE in data:
            data = data[:data.index(ESCAPE)]
            if data:
                yield vm_pb.ConsoleVmRequest(data=data)
            done.set()
            return
        if not data:  # the pipe ended: let the guest answer, then leave
            time.sleep(linger)
            done.set()
            return
        yield vm_pb.ConsoleVmRequest(data=data)


def run(c: Client, args: argparse.Namespace) -> int:
    raw = sys.stdin.isatty()
    done = threading.Event()
    saved = termios.tcgetattr(sys.stdin.fileno()) if raw else None
    out = sys.stdout.buffer
    answers = c.vms.ConsoleVm(_keys(args.name, raw, done, args.linger))
    # Leaving ends the call at once, whether or not the guest is printing.
    threading.Thread(target=lambda: (done.wait(), answers.cancel()), daemon=True).start()
    try:
        if raw:
            tty.setraw(sys.stdin.fileno())
        for answer in answers:
            if answer.notice:
                hint = "; Ctrl-] leaves" if raw and answer.notice.startswith("attached") else ""
                out.write(f"\r\n[vdcos: {answer.notice}{hint}]\r\n".encode())
            else:
                out.write(answer.data)
            out.flush()
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.CANCELLED:
            raise
    finally:
        answers.cancel()
        if saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
            out.write(b"\r\n")
            out.flush()
    return 0


def register(vsub: Subparsers) -> None:
    p = vsub.add_parser("console", help="attach to a running VM's serial console (Ctrl-] leaves)")
    p.add_argument("name")
    p.add_argument("--linger", type=float, default=2.0, metavar="S",
                   help="with input from a pipe: how long to show the guest's output after the input ends")
