"""An etcd member owned by vdcos: started on loopback ports it picks, data in a folder it owns,
stopped by its recorded PID."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from vdcos.process import stop_pid

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
# Go's garbage collector in etcd, unless the environment sets GOGC. A transaction that overlaps a
# collection's mark phase (10-60 ms here, growing with the heap) is slowed by it: against a lone
# etcd, every transaction of a placement's size that took over 10 ms (of 1,500 in a row)
# coincided with one. At 400 etcd collects a quarter as often and holds ~1.5x the memory. In 8
# alternating pairs of the placement benchmark's main run against 100 (Go's default), the p99
# was lower in all 8 (21.3 against 24.5 ms on average); in 4 of them etcd's transactions over
# 10 ms fell from 9.3 to 4.5 per run, and its peak RSS rose from ~240 to ~360 MB. 1000 did no
# better than 400.
GOGC = "400"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdServer:
    data_dir: Path
    client_port: int = 0
    peer_port: int = 0
    host: str = "127.0.0.1"
    name: str = "vdcos"
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    def start(self, timeout: float = 20.0) -> EtcdServer:
        if not os.path.exists(ETCD_BIN):
            raise RuntimeError("etcd is not installed (Debian package etcd-server); run `make setup`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.client_port = self.client_port or free_port(self.host)
        self.peer_port = self.peer_port or free_port(self.host)
        client = f"http://{self.host}:{self.client_port}"
        peer = f"http://{self.host}:{self.peer_port}"
        log_path = self.log_path or self.data_dir.parent / f"{self.name}-etcd.log"
        cmd = [ETCD_BIN, "--name", self.name, "--data-dir", str(self.data_dir / "member-data"),
               "--listen-client-urls", client, "--advertise-client-urls", client,
               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", f"{self.name}={peer}", "--initial-cluster-state", "new",
               # A batch of placements is one txn of up to ~6 ops per VM.
               "--max-txn-ops", "2048", "--quota-backend-bytes", str(4 * 1024**3),
               "--auto-compaction-mode", "revision", "--auto-compaction-retention", "100000",
               "--logger", "zap", "--log-outputs", "stderr"]
        env = dict(os.environ, ETCD_UNSUPPORTED_ARCH=os.environ.get("ETCD_UNSUPPORTED_ARCH", ""))
        env.setdefault("GOGC", GOGC)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        from vdcos.state.etcd import EtcdStore
        from vdcos.state.store import StoreError

        deadline = time.monotonic() + timeout
        store = EtcdStore(self.endpoint, timeout=1.0)
        try:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"etcd exited with {self.proc.returncode}; see its log")
                try:
                    store.get("/vdcos/ping")
                    return
                except StoreError:
                    time.sleep(0.05)
        finally:
            store.close()
        self.stop()
        raise RuntimeError(f"etcd did not answer on {self.endpoint} within {timeout}s")

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_pid(self.proc.pid, self.proc)
        self.proc = None
