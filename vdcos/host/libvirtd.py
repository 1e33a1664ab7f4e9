"""One simulated host's libvirtd: a system-mode daemon of its own, owned by the project.

How one machine holds several independent hypervisor hosts (../shared/recipes/libvirt, qos):
  - a mount namespace per host with /etc/libvirt, /run/libvirt, /var/lib/libvirt,
    /var/log/libvirt and /var/cache/libvirt bind-mounted from the host's own folder;
  - a cgroup root per host (cpu, cpuacct, cpuset, memory, blkio and the cgroup2 mount) that
    is bind-mounted over /sys/fs/cgroup/<c> inside that namespace, so libvirt enforces cputune
    natively and two hosts never share a machine cgroup, not even mid-migration;
  - a unique host_uuid (else libvirt refuses with "migrate guest to the same host");
  - its own address for incoming migrations: in the host's network namespace (host/network.py)
    when it has one, else a loopback address of its own (127.0.0.1 itself is refused);
  - with the datacenter's CA, migrations only in TLS (`install_tls`): QEMU's migration stream
    (memory and copied disks) between two hosts holding node certificates from the CA, each
    checking the other's (the destination's must name the address it listens on);
  - run under a child subreaper (see subreaper.py).
Everything it starts is recorded (daemon PID, QEMU pid files) and stopped by those PIDs only.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from vdcos.process import alive
from vdcos.security.pki import TlsFiles, write_private, write_public

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "blkio", "unified")
BIND_DIRS = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt",
             "log": "/var/log/libvirt", "cache": "/var/cache/libvirt"}
# sockaddr_un.sun_path is 108 bytes.
MAX_SOCKET_PATH = 107


class HostError(Exception):
    pass



def write_qemu_tls(folder: Path, files: TlsFiles) -> None:
    """A node's certificate as QEMU's migration TLS folder wants it (migrate_tls_x509_cert_dir):
    the same certificate serves incoming migrations and presents itself on outgoing ones (it is
    good for both)."""
    assert files.cert is not None and files.key is not None
    for name, src in (("ca-cert.pem", files.ca), ("server-cert.pem", files.cert), ("client-cert.pem", files.cert)):
        write_public(folder / name, src.read_bytes())
    for name in ("server-key.pem", "client-key.pem"):
        write_private(folder / name, files.key.read_bytes())

@dataclass(frozen=True)
class LibvirtHost:
    name: str
    root: str          # the host's own folder
    address: str       # where incoming migrations listen
    host_uuid: str
    cgroup: str        # per-host cgroup directory name under every controller
    migration_port_min: int = 49152
    # The machine CPUs this host's guests may run on ("" = all): a simulated host's sockets.
    cpus: str = ""
    # The host's network namespace (its switch and guest taps live there); "" = the root one.
    netns: str = ""
    # virtlockd's lockspace on storage every host sees: a QEMU cannot open a disk whose lease
    # another host's QEMU holds (HA's second safeguard against one VM running twice). "" = off.
    lockspace: str = ""
    # QEMU's TLS files for migrations (install_tls); "" = migrations in plaintext (--insecure).
    tls_dir: str = ""

    @classmethod
    def create(cls, root: Path, name: str, datacenter: str, address: str, cpus: str = "",
               netns: str = "", lockspace: str = "", tls: TlsFiles | None = None) -> LibvirtHost:
        host_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"vdcos:{datacenter}:{name}"))
        host = cls(name, str(root), address, host_uuid, f"vdcos-{datacenter}-{name}", cpus=cpus, netns=netns,
                   lockspace=lockspace, tls_dir=str(root / "pki") if tls is not None else "")
        if tls is not None:
            host.install_tls(tls)
        return host

    def install_tls(self, files: TlsFiles) -> None:
        write_qemu_tls(Path(self.tls_dir), files)

    @classmethod
    def load(cls, root: Path) -> LibvirtHost:
        return cls(**json.loads((root / "host.json").read_text()))

    # --- paths --------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return Path(self.root).joinpath(*parts)

    @property
    def socket(self) -> Path:
        return self.path("run", "libvirt-sock")

    @property
    def uri(self) -> str:
        """Works from any namespace, also as a peer-to-peer migration target."""
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def pid_file(self) -> Path:
        return self.path("daemon.pid")

    def pid(self) -> int:
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return 0

    def running(self) -> bool:
        pid = self.pid()
        return bool(pid) and alive(pid)

    # --- config -------------------------------------------------------------------------
    def _write_config(self) -> None:
        for d in (*BIND_DIRS, "lib/qemu", "log/qemu"):
            self.path(d).mkdir(parents=True, exist_ok=True)
        self.path("etc", "libvirtd.conf").write_text(f"""\
host_uuid = "{self.host_uuid}"
auth_unix_rw = "none"
auth_unix_ro = "none"
unix_sock_rw_perms = "0700"
listen_tls = 0
listen_tcp = 0
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
""")
        pmin = self.migration_port_min
        self.path("etc", "qemu.conf").write_text(f"""\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ "cpu", "cpuacct", "cpuset", "memory", "blkio" ]
namespaces = [ ]
stdio_handler = "file"
migration_address = "{self.address}"
migration_host = "{self.address}"
migration_port_min = {pmin}
migration_port_max = {pmin + 63}
""" + ('lock_manager = "lockd"\n' if self.lockspace else "") + (f"""\
migrate_tls_x509_cert_dir = "{self.tls_dir}"
migrate_tls_x509_verify = 1
migrate_tls_force = 1
""" if self.tls_dir else ""))
        if self.lockspace:
            # Leases on every writable disk, kept as files named by the disk path's hash in the
            # shared lockspace: virtlockd's fcntl locks there are seen by every host's virtlockd.
            Path(self.lockspace).mkdir(parents=True, exist_ok=True)
            self.path("etc", "qemu-lockd.conf").write_text(f"""\
auto_disk_leases = 1
require_lease_for_disks = 1
file_lockspace_dir = "{self.lockspace}"
""")
        self.path("host.json").write_text(json.dumps(asdict(self)))

    def _make_cgroups(self) -> None:
        for c in CONTROLLERS:
            (CGROUP_ROOT / c / self.cgroup).mkdir(exist_ok=True)
        # A new cpuset cgroup has no CPUs or memory nodes until given some.
        cs = CGROUP_ROOT / "cpuset"
        for f in ("cpuset.cpus", "cpuset.mems"):
            (cs / self.cgroup / f).write_text((cs / f).read_text())
        if self.cpus:
            (cs / self.cgroup / "cpuset.cpus").write_text(self.cpus)

    def _remove_cgroups(self) -> None:
        for c in CONTROLLERS:
            top = CGROUP_ROOT / c / self.cgroup
            if not top.is_dir():
                continue
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                try:
                    d.rmdir()
                except OSError:
                    pass
            try:
                top.rmdir()
            except OSError:
                pass

    # --- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> LibvirtHost:
        if self.running():
            return self
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            raise HostError(f"host folder {self.root} is too deep for a UNIX socket path")
        self._write_config()
        self._make_cgroups()
        procs = " ".join(f"echo $$ > {CGROUP_ROOT / c / self.cgroup}/cgroup.procs;" for c in CONTROLLERS)
        mounts = " ".join(f"mount --bind {CGROUP_ROOT / c / self.cgroup} {CGROUP_ROOT / c};" for c in CONTROLLERS)
        mounts += " ".join(f"mkdir -p {dst}; mount --bind {self.path(src)} {dst};" for src, dst in BIND_DIRS.items())
        # virtlockd in the same mount namespace: libvirtd finds it at /run/libvirt/virtlockd-sock.
        lockd = (f"/usr/sbin/virtlockd --daemon --pid-file {self.path('run', 'virtlockd.pid')}; "
                 if self.lockspace else "")
        inner = (f"hostname {self.name}; {mounts} {lockd}exec {sys.executable} -m vdcos.host.subreaper "
                 f"/usr/sbin/libvirtd --pid-file {self.path('run', 'libvirtd.pid')}")
        # nsenter, not `ip netns exec`: that remounts /sys and would hide the cgroup roots.
        netns = f"nsenter --net=/run/netns/{self.netns} " if self.netns else ""
        script = f"{procs} exec {netns}unshare -m -u -C --propagation private bash -c '{inner}'"
        log = open(self.path("libvirtd.stdout"), "ab")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        proc = subprocess.Popen(["bash", "-c", script], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, env=env)
        log.close()
        self.pid_file.write_text(str(proc.pid))
        self._wait_ready(proc, timeout)
        return self

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        import libvirt

        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = self.path("libvirtd.stdout").read_text(errors="replace")[-1500:]
                self._remove_cgroups()
                raise HostError(f"libvirtd for {self.name} exited ({proc.returncode}): {tail}")
            if self.socket.exists():
                try:
                    libvirt.open(self.uri).close()
                    return
                except libvirt.libvirtError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise HostError(f"libvirtd for {self.name} not ready after {timeout:.0f}s")
            time.sleep(0.1)

    def domains(self) -> dict[str, str]:
        """The domains this host's libvirtd has, name -> live XML (tests and benchmarks look)."""
        import libvirt  # only where libvirt runs
        conn = libvirt.open(self.uri)
        out = {}
        try:
            for d in conn.listAllDomains():
                try:
                    out[d.name()] = d.XMLDesc(0)
                except libvirt.libvirtError:
                    pass  # undefined between the listing and the look: it is gone
            return out
        finally:
            conn.close()

    def qemus(self) -> dict[str, int]:
        """The guests whose QEMU runs now, VM name -> pid: libvirt's pid files, each checked to
        be a live QEMU (a killed one leaves its file behind)."""
        out = {}
        for f in self.path("run", "qemu").glob("*.pid"):
            try:
                pid = int(f.read_text().strip())
            except (OSError, ValueError):
                continue
            if alive(pid) and "qemu" in _comm(pid):
                out[f.stem] = pid
        return out

    def lockd_pid(self) -> int:
        try:
            return int(self.path("run", "virtlockd.pid").read_text())
        except (OSError, ValueError):
            return 0

    def kill_daemon(self) -> None:
        """Fault injection: SIGKILL the daemon only; its guests keep running (as on a real host)."""
        try:
            pid = int(self.path("run", "libvirtd.pid").read_text())
        except (OSError, ValueError):
            return
        if alive(pid):
            os.kill(pid, signal.SIGKILL)

    def stop(self, grace: float = 10.0) -> None:
        """Destroy this host's guests, stop its daemon, remove its cgroups. Safe to call twice."""
        import libvirt

        if self.running():
            try:
                conn = libvirt.open(self.uri)
                for dom in conn.listAllDomains():
                    try:
                        if dom.isActive():
                            dom.destroy()
                    except libvirt.libvirtError:
                        pass
                conn.close()
            except libvirt.libvirtError:
                pass
            pid = self.pid()
            os.kill(pid, signal.SIGTERM)  # the subreaper forwards it to libvirtd
            deadline = time.monotonic() + grace
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
                alive(pid)
        lockd = self.lockd_pid()
        if lockd and alive(lockd) and _comm(lockd) == "virtlockd":
            # It lives in the host's cgroups, which are removed below only once it is gone.
            os.kill(lockd, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while alive(lockd) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(lockd):
                os.kill(lockd, signal.SIGKILL)
                while alive(lockd) and time.monotonic() < deadline + 5:
                    time.sleep(0.05)
        # QEMUs that outlived a killed daemon: recorded pid files only, and only real QEMUs.
        for qpid in self.qemus().values():
            try:
                os.kill(qpid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.pid_file.unlink(missing_ok=True)
        self._remove_cgroups()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
