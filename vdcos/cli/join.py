"""`vdcos join`: a host outside the local datacenter joins it, as `kubeadm join` does.

    vdcos token create host-4-join --role bootstrap          (an admin, anywhere: 1 h by default)
    vdcos join --api HOST:PORT --ca ca.pem --token <bootstrap> --name host-4 \\
               --libvirt-uri qemu:///system --state-dir /var/lib/vdcos

On the host: a key is made and never leaves it; its signing request goes to the API with the
bootstrap token (JoinNode), which answers with the node's certificate (naming the host and its
addresses), the CA and etcd's endpoints, and gives the node its etcd access. Capacity comes from
the host's own libvirtd and kernel (CPUs and memory, the pool's disk; flags only override).
Then the agent runs against that libvirtd: in place of this command, or as a systemd unit
(`--systemd-unit FILE`), or not at all (`--no-start`, which prints its command line)."""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from vdcos.cli.client import Client
from vdcos.cli.common import Subparsers, UsageError
from vdcos.host.libvirtd import write_qemu_tls
from vdcos.security.pki import Identity, TlsFiles, key_pem, new_key, signing_request, write_private, write_public
from vdcos.v1 import node_service_pb2 as node_pb


@dataclass(frozen=True)
class Capacity:
    vcpus: int
    memory_mib: int
    disk_gib: int


def discover(libvirt_uri: str, pool_dir: Path) -> Capacity:
    """What the host has: CPUs and memory as its libvirtd reports them (never more than the
    kernel says: a libvirtd in a container may see the machine's), and the pool's disk."""
    import libvirt

    try:
        conn = libvirt.open(libvirt_uri)
    except libvirt.libvirtError as e:
        raise UsageError(f"--libvirt-uri: cannot reach {libvirt_uri}: {e}") from e
    try:
        info = conn.getInfo()  # [model, memory MiB, CPUs, MHz, NUMA nodes, sockets, cores, threads]
    finally:
        conn.close()
    kernel_mib = _meminfo_mib()
    cpus = min(int(info[2]), os.cpu_count() or int(info[2]))
    memory = min(int(info[1]), kernel_mib) if kernel_mib else int(info[1])
    pool_dir.mkdir(parents=True, exist_ok=True)
    return Capacity(cpus, memory, shutil.disk_usage(pool_dir).total >> 30)


def _meminfo_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return 0


def cmd_join(args: argparse.Namespace) -> int:
    token = args.join_token or args.token or os.environ.get("VDCOS_TOKEN")
    if not token:
        raise UsageError("--token: the bootstrap token an admin made (`vdcos token create NAME --role bootstrap`)")
    ca = Path(args.join_ca or args.ca or os.environ.get("VDCOS_CA") or "")
    if not ca.is_file():
        raise UsageError(f"--ca: the datacenter's CA certificate is required (cluster.json `ca`); {ca} is no file")
    if not args.api:
        raise UsageError("--api: the API's token addresses, HOST:PORT[,HOST:PORT] (cluster.json `api`)")
    state = Path(args.state_dir).resolve()
    pki = state / "pki"
    addresses = list(dict.fromkeys([*(args.address or []), args.name, socket.gethostname()]))
    key = new_key()
    csr = signing_request(key, Identity("node", args.name), addresses)
    with Client([a for a in args.api.split(",") if a], TlsFiles(ca.resolve()), token) as c:
        got = c.nodes.JoinNode(node_pb.JoinNodeRequest(name=args.name, csr_pem=csr.decode(), addresses=addresses),
                               timeout=args.timeout)
    write_private(pki / "node-key.pem", key_pem(key))
    write_public(pki / "node.pem", got.certificate_pem.encode())
    write_public(pki / "ca.pem", got.ca_pem.encode())
    # QEMU's TLS folder for migrations, should the host's libvirtd point migrate_tls_x509_cert_dir here.
    write_qemu_tls(pki / "qemu", TlsFiles(pki / "ca.pem", pki / "node.pem", pki / "node-key.pem"))
    found = discover(args.libvirt_uri, Path(args.pool_dir) if args.pool_dir else state / "pools")
    capacity = {"vcpus": args.vcpus or found.vcpus, "memory-mib": args.memory_mib or found.memory_mib,
                "disk-gib": args.disk_gib or found.disk_gib, "network-mbps": args.network_mbps}
    argv = [sys.executable, "-m", "vdcos.nodeagent", "--etcd", ",".join(got.etcd_endpoints), "--name", args.name,
            "--driver", "libvirt", "--libvirt-uri", args.libvirt_uri, "--state-dir", str(state),
            "--etcd-cacert", str(pki / "ca.pem"), "--etcd-cert", str(pki / "node.pem"),
            "--etcd-key", str(pki / "node-key.pem"),
            *(a for k, v in capacity.items() for a in (f"--{k}", str(v))),
            *(["--shared-pool", args.shared_pool] if args.shared_pool else []),
            *(["--migrate-tls"] if args.migrate_tls else [])]
    print(f"joined as node {args.name}: certificate in {pki}, capacity {capacity['vcpus']} vCPUs, "
          f"{capacity['memory-mib']} MiB, {capacity['disk-gib']} GiB (libvirt {args.libvirt_uri})", flush=True)
    if args.systemd_unit:
        Path(args.systemd_unit).write_text(unit(args.name, argv))
        print(f"systemd unit written to {args.systemd_unit}: systemctl enable --now {Path(args.systemd_unit).name}")
        return 0
    if args.no_start:
        print(shlex.join(argv))
        return 0
    os.execv(argv[0], argv)  # the agent runs in place of this command


def unit(name: str, argv: list[str]) -> str:
    return f"""[Unit]
Description=vdcos node agent ({name})
After=network-online.target libvirtd.service
Wants=network-online.target

[Service]
ExecStart={shlex.join(argv)}
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""


def register(sub: Subparsers) -> None:
    j = sub.add_parser("join", help="join this host to a datacenter with a bootstrap token (as kubeadm join)")
    j.add_argument("--api", help="the API's token addresses, HOST:PORT[,HOST:PORT] (cluster.json `api`)")
    j.add_argument("--token", dest="join_token", help="the bootstrap token (default $VDCOS_TOKEN)")
    j.add_argument("--ca", dest="join_ca", help="the datacenter's CA certificate (cluster.json `ca`)")
    j.add_argument("--name", required=True, help="the node's name, 1-63 of a-z, 0-9, '-'")
    j.add_argument("--libvirt-uri", default="qemu:///system", help="this host's libvirtd (default qemu:///system)")
    j.add_argument("--state-dir", default="/var/lib/vdcos", help="the agent's folder: its keys, pools, state")
    j.add_argument("--address", action="append", help="a name or address peers reach this host by (repeat)")
    j.add_argument("--pool-dir", help="where the local pool lives (default STATE_DIR/pools): its disk is counted")
    j.add_argument("--shared-pool", help="a folder every host sees, if the datacenter has one")
    j.add_argument("--migrate-tls", action="store_true",
                   help="migrations in TLS (point the libvirtd's migrate_tls_x509_cert_dir at STATE_DIR/pki/qemu)")
    for flag in ("--vcpus", "--memory-mib", "--disk-gib"):
        j.add_argument(flag, type=int, help="override what was discovered")
    j.add_argument("--network-mbps", type=int, default=1000, help="the host's network (default 1000)")
    j.add_argument("--no-start", action="store_true", help="join, print the agent's command line, start nothing")
    j.add_argument("--systemd-unit", help="join, write a systemd unit running the agent to this file")
    j.set_defaults(fn=cmd_join)
