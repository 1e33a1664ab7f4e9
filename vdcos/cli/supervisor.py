"""The local datacenter's supervisor (`python -m vdcos.cli.supervisor --home H`): restarts any
of its recorded processes that dies, as systemd's Restart=on-failure would on real hosts.

A process that keeps dying is started again after 1, 2, 4 ... up to 30 s; one that has run
for a minute since its last start is forgiven its past failures. `vdcos down` stops the
supervisor first, so nothing it stops comes back."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vdcos import logs
from vdcos.cli.localdc import LocalDatacenter, locked, restart, wait_etcd

log = logging.getLogger("vdcos.supervisor")

FIRST_PAUSE, MAX_PAUSE, FORGIVE_AFTER = 1.0, 30.0, 60.0


@dataclass
class _Backoff:
    failures: int = 0
    started_at: float = 0.0
    due: float = 0.0


def supervise_once(home: Path, backoff: dict[str, _Backoff], now: float) -> list[str]:
    """One look: restarts the dead processes that are due, returns their names."""
    restarted: list[str] = []
    with locked(home):
        dc = LocalDatacenter.load(home)
        if dc is None:
            return restarted
        for p in dc.procs:
            if p.kind == "supervisor":
                continue
            b = backoff.setdefault(p.name, _Backoff(started_at=now))
            if p.running():
                if b.failures and now - b.started_at >= FORGIVE_AFTER:
                    b.failures = 0
                continue
            if now < b.due:
                continue
            b.failures += 1
            b.due = now + min(MAX_PAUSE, FIRST_PAUSE * 2 ** (b.failures - 1))
            b.started_at = now
            try:
                restart(dc, p)
                dc.save()
                restarted.append(p.name)
                log.info("%s had died; started again (pid %d, failure %d, next retry no sooner than %.0f s)",
                         p.name, p.pid, b.failures, b.due - now)
            except Exception as e:  # the next look tries again, after its backoff
                log.error("%s had died and did not start again: %s", p.name, e)
        if any(dc.proc(n).kind == "etcd" for n in restarted):
            try:
                wait_etcd(dc, 10.0)
            except RuntimeError as e:
                log.warning("%s", e)
    return restarted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vdcos-supervisor")
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--every", type=float, default=0.5, help="seconds between looks")
    args = ap.parse_args(argv)
    logs.setup("supervisor")
    backoff: dict[str, _Backoff] = {}
    log.info("supervising %s", args.home)
    while (args.home / "cluster.json").exists():
        try:
            supervise_once(args.home, backoff, time.monotonic())
        except Exception:
            log.exception("supervision round failed")
        time.sleep(args.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
