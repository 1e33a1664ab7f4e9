"""What every benchmark does the same way: wait for a condition, take medians of the runs that
worked, print its one JSON object (also written where --json says), and run an etcd of its own."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vdcos.security.pki import Authority, Identity, TlsFiles
from vdcos.state.etcd_server import EtcdServer


def wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise TimeoutError(what)


def med(rows: list[dict[str, Any]], key: str, digits: int = 1) -> float | None:
    """Median of `key` over the rows whose run worked (`ok`)."""
    vals = [r[key] for r in rows if r["ok"]]
    return round(float(statistics.median(vals)), digits) if vals else None


def p95(rows: list[dict[str, Any]], key: str, digits: int = 1) -> float | None:
    """95th percentile (linear interpolation) of `key` over the rows whose run worked."""
    vals = [r[key] for r in rows if r["ok"]]
    return round(float(np.percentile(vals, 95)), digits) if vals else None


def emit(result: dict[str, Any], path: Path | None) -> None:
    text = json.dumps(result)
    print(text)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def start_etcd(secure: bool) -> tuple[Path, EtcdServer]:
    """An etcd of the benchmark's own, its data in a new folder on tmpfs where there is one.
    `stop_etcd` stops it and removes the folder. `secure`: TLS with client certificates, from
    a CA of its own in base/pki (issue the scheduler's and clients' with `issue`)."""
    base = Path(tempfile.mkdtemp(prefix="vdcos-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        tls = Authority.ensure(base / "pki", "bench").issue(Identity("etcd", "etcd-1")) if secure else None
        return base, EtcdServer(base / "etcd", tls=tls).start()
    except BaseException:  # an etcd that did not come up leaves no folder behind either
        shutil.rmtree(base, ignore_errors=True)
        raise


def issue(etcd: EtcdServer, who: Identity) -> TlsFiles | None:
    """A certificate from the CA of a secure `start_etcd`'s; None for a plaintext one."""
    return None if etcd.tls is None else Authority(etcd.tls.ca.parent).issue(who)


def stop_etcd(base: Path, etcd: EtcdServer) -> None:
    etcd.stop()
    shutil.rmtree(base, ignore_errors=True)
