"""`python -m vdcos.host.fencer --root HOST_ROOT`: one host's watchdog, a process apart from its
node agent (this machine has no /dev/watchdog and no softdog; on a real host the same part is
played by the hardware watchdog the agent pets).

The agent pets it after every renewal of its etcd lease, with a deadline: the moment the lease
could first expire (when that renewal was sent + the lease's TTL, on CLOCK_MONOTONIC, which every
process of the machine shares). Once the deadline passes unpetted, because the agent died, froze,
lost etcd, or is cut off, the fencer kills the host's libvirtd and every QEMU it recorded, and
keeps killing any QEMU that appears until a new pet comes. etcd cannot expire the lease before
that deadline, so by the time the HA controller sees the host's lease gone, the host's guests
are gone too; the controller still waits a margin before it restarts them elsewhere
(vdcos/controllers/ha.py), and the disk locks (virtlockd) are the second safeguard.

Files, in <root>/fence: `deadline` (written by the agent: "<monotonic seconds> <lease hex>"),
`fenced` (written here: when, and what was killed). No deadline file = not armed (a host whose
agent never started has nothing to fence)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from vdcos import logs
from vdcos.host.libvirtd import LibvirtHost

log = logging.getLogger("vdcos.fencer")
POLL_S = 0.1


def fence_dir(root: Path) -> Path:
    return root / "fence"


def pet(root: Path, deadline: float, lease: int) -> None:
    """The agent's side: the fencer may not fire before `deadline` (monotonic)."""
    d = fence_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f"deadline.{os.getpid()}"
    tmp.write_text(f"{deadline:.3f} {lease:x}\n")
    tmp.replace(d / "deadline")


def read_deadline(root: Path) -> float | None:
    try:
        return float((fence_dir(root) / "deadline").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def fenced_at(root: Path) -> dict[str, object] | None:
    """What the last fence did (tests and the agent's report)."""
    try:
        return dict(json.loads((fence_dir(root) / "fenced").read_text()))
    except (OSError, ValueError):
        return None


def _kill_qemus(host: LibvirtHost) -> list[int]:
    killed = []
    for pid in host.qemus().values():
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            continue
    return killed


def fence(root: Path) -> dict[str, object]:
    """Kill the host's hypervisor daemon and its guests: nothing of this host may write a disk."""
    host = LibvirtHost.load(root)
    daemon = host.pid()
    host.kill_daemon()
    killed = _kill_qemus(host)
    return {"at": time.time(), "monotonic": time.monotonic(), "daemon_pid": daemon, "qemu_pids": killed}


def run(root: Path, poll_s: float = POLL_S) -> None:
    # A deadline already past when the fencer starts (the host was down, or this process was
    # restarted while its agent is gone) was fenced for, or its host restarted since: the
    # daemon that runs now is not killed for it, but a QEMU is, until the agent pets again.
    deadline = read_deadline(root)
    fenced_for = deadline if deadline is not None and time.monotonic() > deadline else None
    while True:
        deadline = read_deadline(root)
        now = time.monotonic()
        if deadline is not None and now > deadline:
            if fenced_for != deadline:
                what = fence(root)
                what["late_by_s"] = round(now - deadline, 3)
                (fence_dir(root) / "fenced").write_text(json.dumps(what))
                log.warning("no pet since the lease could expire (%.1f s ago): fenced %s", now - deadline, what)
                fenced_for = deadline
            else:
                # A QEMU started after the fence (an agent that woke up mid-start) dies too.
                late = _kill_qemus(LibvirtHost.load(root))
                if late:
                    log.warning("killed QEMUs started while fenced: %s", late)
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vdcos-fencer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="the host's folder (its host.json)")
    ap.add_argument("--poll-s", type=float, default=POLL_S)
    args = ap.parse_args(argv)
    logs.setup("fencer")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("fencer of %s armed by the agent's pets (%s)", args.root.name, fence_dir(args.root))
    run(args.root, args.poll_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
