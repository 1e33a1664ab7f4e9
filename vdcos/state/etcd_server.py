"""etcd members owned by vdcos: started on loopback ports they pick, data in folders they own,
stopped by their recorded PIDs. One member, or a cluster of three for fault tolerance."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vdcos.process import stop_pid
from vdcos.security.pki import TlsFiles
from vdcos.state.etcd import EtcdStore

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


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` different ports free now: all bound at once, since a port just closed may be the
    next one the kernel hands out."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def answering(endpoints: str, timeout: float, gave_up: Callable[[], bool] = lambda: False,
              tls: TlsFiles | None = None) -> bool:
    """Whether etcd answers a linearizable read within `timeout`: a majority of its members
    runs and has a leader."""
    from vdcos.state.etcd import EtcdStore
    from vdcos.state.store import StoreError

    deadline = time.monotonic() + timeout
    store = EtcdStore(endpoints, timeout=1.0, tls=tls)
    try:
        while time.monotonic() < deadline and not gave_up():
            try:
                store.get("/vdcos/ping")
                return True
            except StoreError:
                time.sleep(0.05)
        return False
    finally:
        store.close()


@dataclass
class EtcdServer:
    data_dir: Path
    client_port: int = 0
    peer_port: int = 0
    host: str = "127.0.0.1"
    name: str = "vdcos"
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    # name=peer-URL of every member; empty: this member alone.
    initial_cluster: str = ""
    # The member's certificate (for its clients and its peers, whom it asks for theirs) and the
    # CA it trusts; None: plaintext, for developers (--insecure) and tests that say so.
    tls: TlsFiles | None = None

    @property
    def scheme(self) -> str:
        return "http" if self.tls is None else "https"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.peer_port}"

    def tls_flags(self) -> list[str]:
        """Client-certificate authentication on both sides: a client or peer without a
        certificate from the datacenter CA is refused at the handshake."""
        if self.tls is None:
            return []
        ca, cert, key = str(self.tls.ca), str(self.tls.cert), str(self.tls.key)
        return ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca, "--client-cert-auth",
                "--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", ca,
                "--peer-client-cert-auth"]

    def argv(self) -> list[str]:
        """The command line, the same at every start: etcd reads the initial-cluster flags only
        when its data folder is empty, so a restarted member rejoins with what it has."""
        client = f"{self.scheme}://{self.host}:{self.client_port}"
        return [ETCD_BIN, "--name", self.name, "--data-dir", str(self.data_dir / "member-data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster or f"{self.name}={self.peer_url}",
                "--initial-cluster-state", "new", "--initial-cluster-token", "vdcos",
                # A batch of placements is one txn of up to ~6 ops per VM.
                "--max-txn-ops", "2048", "--quota-backend-bytes", str(4 * 1024**3),
                "--auto-compaction-mode", "revision", "--auto-compaction-retention", "100000",
                "--logger", "zap", "--log-outputs", "stderr", *self.tls_flags()]

    def launch(self) -> EtcdServer:
        """Starts the process without waiting: a member of a cluster answers only once a
        majority of its members runs."""
        if not os.path.exists(ETCD_BIN):
            raise RuntimeError("etcd is not installed (Debian package etcd-server); run `make setup`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.client_port or not self.peer_port:
            self.client_port, self.peer_port = free_ports(2, self.host)
        log_path = self.log_path or self.data_dir.parent / f"{self.name}-etcd.log"
        env = dict(os.environ, ETCD_UNSUPPORTED_ARCH=os.environ.get("ETCD_UNSUPPORTED_ARCH", ""))
        env.setdefault("GOGC", GOGC)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        return self

    def start(self, timeout: float = 20.0) -> EtcdServer:
        self.launch()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        if not answering(self.endpoint, timeout, self._exited, self.tls):
            self.stop()
            raise RuntimeError(f"etcd {self.name} did not answer on {self.endpoint} within {timeout}s")

    def _exited(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"etcd {self.name} exited with {self.proc.returncode}; see its log")
        return False

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_pid(self.proc.pid, self.proc)
        self.proc = None

    def kill(self) -> None:
        """Fault injection: SIGKILL, as a crash; its data stays for a restart."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@dataclass
class EtcdCluster:
    """`size` members on loopback, each in `base`/member-N with its log beside."""
    base: Path
    size: int = 3
    log_dir: Path | None = None
    members: list[EtcdServer] = field(default_factory=list)
    # One TLS identity per member (by its number, from 1); empty: plaintext.
    tls: dict[int, TlsFiles] = field(default_factory=dict)

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        if not self.members:
            ports = free_ports(2 * self.size)
            self.members = [EtcdServer(self.base / f"member-{i}", name=f"vdcos-{i}", client_port=ports[2 * i - 2],
                                       peer_port=ports[2 * i - 1],
                                       log_path=(self.log_dir or self.base) / f"etcd-{i}.log", tls=self.tls.get(i))
                            for i in range(1, self.size + 1)]
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = cluster
            m.launch()
        try:
            for m in self.members:
                m.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def endpoint(self) -> str:
        """What every component takes: the members, comma-separated."""
        return ",".join(self.endpoints)

    def leader(self) -> EtcdServer | None:
        """The member that leads now, as the members say (None during an election)."""
        from vdcos.state.etcd import member_status

        for m in self.members:
            if m.proc is None:
                continue
            st = member_status(m.endpoint, tls=m.tls)
            if st is not None and st.leader:
                return next((x for x in self.members if x.proc is not None
                             and (s := member_status(x.endpoint, tls=x.tls)) is not None
                             and s.header.member_id == st.leader), None)
        return None

    def enable_access(self, operator: TlsFiles, control_users: list[str], nodes: list[str], admin: str) -> None:
        """etcd's role-based access on (state/access.py), set up through etcd's Auth API as
        `operator`, whose certificate's CN is `admin` (it gets etcd's root role)."""
        store = EtcdStore(self.endpoint, tls=operator)
        try:
            store.enable_access(control_users, nodes, admin)
        finally:
            store.close()

    def restart(self, member: EtcdServer, timeout: float = 30.0) -> None:
        member.launch()
        member.wait_ready(timeout)

    def stop(self) -> None:
        for m in self.members:
            m.stop()
