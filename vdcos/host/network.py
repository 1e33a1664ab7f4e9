"""One simulated host's network: its own network namespace with two cables and its own Open vSwitch.

    netns vdcos-<dc>-fabric: bridge ulbr (the underlay, tunnels)   bridge mgbr (migration traffic)
        | ul<i>                                                      | mg<i>          (veth pairs)
    netns vdcos-<dc>-<host>:
        eth-ul -> br-phy (OVS, netdev datapath; the host's underlay address is on br-phy)
        eth-mg    (plain kernel networking: libvirtd's migration address; through OVS's
                   userspace datapath a migration took 3x as long, recipes/vmnet)
        br-int    (OVS: VM ports and tunnels; programmed by vdcos.vswitch)
        ovsdb-server + ovs-vswitchd of this host only, their sockets in <host root>/ovs

The host's libvirtd runs in the same namespace (vdcos.host.libvirtd), so guest taps it opens are
the ones br-int sees. The addresses exist only inside these namespaces: nothing in the root
namespace ever sends to them (the agent talks to OVS and libvirtd through UNIX sockets).
Daemons are stopped by their recorded PIDs; namespaces by the names recorded here.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vdcos.host import netlink as nl
from vdcos.host.netlink import NetworkError, netns_exists
from vdcos.host.ovsdb import Ovsdb
from vdcos.process import alive

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
UNDERLAY = "172.30"   # <UNDERLAY>.<dc>.<i>/24 on br-phy
MGMT = "172.31"       # <MGMT>.<dc>.<i>/24 on eth-mg
MTU = 1500
# What a guest may send over a VXLAN tunnel on a 1500-byte underlay.
OVERLAY_MTU = 1450


def sh(*argv: str, check: bool = True, timeout: float = 30) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode:
        raise NetworkError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def fabric_netns(datacenter: str) -> str:
    return f"vdcos-{datacenter}-fabric"


def ensure_fabric(datacenter: str) -> str:
    """The underlay and migration bridges every host of one datacenter is cabled into."""
    ns = fabric_netns(datacenter)
    if not netns_exists(ns):
        nl.add_namespace(ns)
        nl.execute(nl.SetLink(ns, "lo", up=True),
                   *(c for br in ("ulbr", "mgbr") for c in (nl.AddBridge(ns, br), nl.SetLink(ns, br, up=True))))
    return ns


def remove_fabric(datacenter: str) -> None:
    nl.del_namespace(fabric_netns(datacenter))


@dataclass(frozen=True)
class HostNetwork:
    datacenter: str
    name: str
    index: int          # 1..250: the host's underlay and migration addresses
    root: str           # the host's folder; OVS lives in <root>/ovs

    @property
    def netns(self) -> str:
        return f"vdcos-{self.datacenter}-{self.name}"

    @property
    def ovs_dir(self) -> Path:
        return Path(self.root, "ovs")

    @property
    def db_socket(self) -> str:
        return str(self.ovs_dir / "db.sock")

    @property
    def vswitchd_ctl(self) -> str:
        return str(self.ovs_dir / "vswitchd.ctl")

    def mgmt_socket(self, bridge: str = "br-int") -> str:
        return str(self.ovs_dir / f"{bridge}.mgmt")

    @property
    def dc_octet(self) -> int:
        return int(self.datacenter, 16)

    @property
    def underlay_ip(self) -> str:
        return f"{UNDERLAY}.{self.dc_octet}.{self.index}"

    @property
    def underlay_mac(self) -> str:
        return f"02:ac:1e:{self.dc_octet:02x}:00:{self.index:02x}"

    @property
    def mgmt_ip(self) -> str:
        return f"{MGMT}.{self.dc_octet}.{self.index}"

    def _env(self) -> dict[str, str]:
        d = str(self.ovs_dir)
        return dict(os.environ, OVS_RUNDIR=d, OVS_LOGDIR=d, OVS_DBDIR=d)

    def _pid(self, daemon: str) -> int:
        try:
            return int((self.ovs_dir / f"{daemon}.pid").read_text().strip())
        except (OSError, ValueError):
            return 0

    def daemon_pids(self) -> list[int]:
        """The switch's ovsdb-server and ovs-vswitchd, as recorded (0 for one never started)."""
        return [self._pid("ovsdb-server"), self._pid("ovs-vswitchd")]

    def vswitchd_pid(self) -> int:
        pid = self._pid("ovs-vswitchd")
        return pid if pid and alive(pid) else 0

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> HostNetwork:
        fabric = ensure_fabric(self.datacenter)
        self.ovs_dir.mkdir(parents=True, exist_ok=True)
        Path(self.root, "network.json").write_text(json.dumps(asdict(self)))
        ns = self.netns
        if not netns_exists(ns):
            nl.add_namespace(ns)
            # No IPv6 autoconfiguration chatter from taps and bridges into the guests.
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
               "net.ipv6.conf.default.disable_ipv6=1")
            nl.execute(
                nl.SetLink(ns, "lo", up=True),
                *(c for kind, br in (("ul", "ulbr"), ("mg", "mgbr"))
                  for c in (nl.AddVeth(fabric, f"{kind}{self.index}", f"eth-{kind}", ns),
                            nl.SetLink(fabric, f"{kind}{self.index}", master=br, up=True))),
                # OVS owns eth-ul: the kernel must not answer ARP on it.
                nl.SetLink(ns, "eth-ul", arp=False, up=True),
                nl.AddAddress(ns, "eth-mg", f"{self.mgmt_ip}/24"),
                nl.SetLink(ns, "eth-mg", up=True))
        self._start_ovsdb()
        self.start_vswitchd()
        db = Ovsdb(self.db_socket)
        try:
            db.ensure_bridge("br-phy", datapath_type="netdev", fail_mode="standalone",
                             other_config={"hwaddr": self.underlay_mac})
            db.add_ports("br-phy", {"eth-ul": {}})
            db.ensure_bridge("br-int", datapath_type="netdev", fail_mode="secure",
                             other_config={"disable-in-band": "true"})
        finally:
            db.close()
        nl.execute(nl.AddAddress(ns, "br-phy", f"{self.underlay_ip}/24"), nl.SetLink(ns, "br-phy", up=True),
                   nl.SetLink(ns, "br-int", up=True))
        return self

    def set_cables(self, up: bool) -> None:
        """Plug or unplug the host's underlay and migration cables at the fabric's end (fault
        injection: an isolated host's tunnels and migrations go nowhere)."""
        fabric = fabric_netns(self.datacenter)
        nl.execute(*(nl.SetLink(fabric, f"{kind}{self.index}", up=up) for kind in ("ul", "mg")))

    def _start_ovsdb(self) -> None:
        pid = self._pid("ovsdb-server")
        if pid and alive(pid):
            return
        db = self.ovs_dir / "conf.db"
        if not db.exists():
            sh("ovsdb-tool", "create", str(db), SCHEMA)
        d = self.ovs_dir
        subprocess.run(["ip", "netns", "exec", self.netns, "ovsdb-server", str(db), f"--remote=punix:{self.db_socket}",
                        f"--pidfile={d}/ovsdb-server.pid", f"--unixctl={d}/ovsdb-server.ctl",
                        f"--log-file={d}/ovsdb-server.log", "--detach", "--no-chdir"],
                       env=self._env(), check=True, capture_output=True, timeout=30)
        c = Ovsdb(self.db_socket)
        c.init()
        c.close()

    def start_vswitchd(self) -> int:
        """Starts ovs-vswitchd if it is not running (also after a crash); returns its pid."""
        pid = self.vswitchd_pid()
        if pid:
            return pid
        d = self.ovs_dir
        subprocess.run(["ip", "netns", "exec", self.netns, "ovs-vswitchd", f"unix:{self.db_socket}",
                        f"--pidfile={d}/ovs-vswitchd.pid", f"--unixctl={self.vswitchd_ctl}",
                        f"--log-file={d}/ovs-vswitchd.log", "--detach", "--no-chdir"],
                       env=self._env(), check=True, capture_output=True, timeout=30)
        return self._pid("ovs-vswitchd")

    def kill_vswitchd(self) -> None:
        """Fault injection: the switch daemon dies; the database and the namespace stay."""
        pid = self.vswitchd_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)

    def stop(self) -> None:
        """Stops both daemons by their pid files and deletes the namespace. Safe to call twice."""
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            pid = self._pid(daemon)
            if pid and alive(pid) and _is(pid, daemon):
                os.kill(pid, signal.SIGTERM)
                if not _wait_gone(pid, 5):
                    os.kill(pid, signal.SIGKILL)
                    _wait_gone(pid)
        for ns in (*self.endpoint_namespaces(), self.netns):
            nl.del_namespace(ns)

    # --- endpoints: namespaces standing in for a guest (probes, peers, iperf3) --------------
    def endpoint_netns(self, network: str, port: str) -> str:
        """Ports are named per network: two of the same name on one host are two namespaces."""
        return f"{self.netns}-{network}-{port}"

    def endpoint_namespaces(self) -> list[str]:
        return [n for n in nl.namespaces() if n.startswith(f"{self.netns}-")]

    def exec(self, *argv: str, check: bool = True, timeout: float = 30) -> str:
        return sh("ip", "netns", "exec", self.netns, *argv, check=check, timeout=timeout)

    @classmethod
    def load(cls, root: Path) -> HostNetwork | None:
        f = root / "network.json"
        return cls(**json.loads(f.read_text())) if f.exists() else None


def _is(pid: int, comm: str) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith(comm[:15])
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    """Detached OVS daemons belong to PID 1, which reaps them late: a zombie counts as gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False
