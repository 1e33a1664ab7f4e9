"""`python -m vdcos.nodeagent`: one node agent process for one host."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from vdcos import logs
from vdcos.events import Recorder
from vdcos.host.network import HostNetwork
from vdcos.metrics.agent import AgentMetrics
from vdcos.metrics.http import MetricsServer
from vdcos.model import NodeSpec, Resources, pairs
from vdcos.nodeagent.agent import NodeAgent
from vdcos.nodeagent.driver import HypervisorDriver
from vdcos.nodeagent.sim import SimDriver
from vdcos.security.tls import add_etcd_flags, add_insecure_flag, etcd_tls, warn_insecure
from vdcos.state.etcd import EtcdStore
from vdcos.storagepool.pool import LibvirtPools, SimPools, StoragePools


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vdcos-nodeagent")
    ap.add_argument("--etcd", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--driver", choices=["sim", "libvirt"], default="sim")
    ap.add_argument("--libvirt-uri", default="", help="the host's own libvirtd (libvirt driver)")
    ap.add_argument("--state-dir", type=Path, required=True, help="the host's own folder")
    ap.add_argument("--vcpus", type=int, default=16)
    ap.add_argument("--memory-mib", type=int, default=65536)
    ap.add_argument("--disk-gib", type=int, default=1000)
    ap.add_argument("--network-mbps", type=int, default=10000)
    ap.add_argument("--disk-iops", type=int, default=20000,
                    help="IOPS the host's disks sustain (measure with fio): what VMs may reserve")
    ap.add_argument("--migrate-tls", action="store_true",
                    help="live migrations in QEMU's TLS with the host's certificate (its libvirtd set up for it)")
    ap.add_argument("--shared-pool", type=Path, help="a folder every host sees: the shared storage pool")
    ap.add_argument("--label", action="append", default=[], help="key=value, repeatable")
    ap.add_argument("--lease-ttl", type=int, default=10)
    ap.add_argument("--fence", action="store_true",
                    help="pet this host's fencer (python -m vdcos.host.fencer --root STATE_DIR) after every "
                         "lease renewal: it kills the host's guests once the lease could have expired")
    ap.add_argument("--log-json", action="store_true",
                    help="log JSON lines, with the request id of the call behind each VM's work (also with "
                         "VDCOS_LOG_JSON=1)")
    ap.add_argument("--metrics-listen", default="", metavar="ADDR",
                    help="serve Prometheus metrics at https://ADDR/metrics (mutual TLS with the etcd "
                         "certificate's CA; port 0 picks one). Off unless given")
    add_etcd_flags(ap)
    add_insecure_flag(ap)
    args = ap.parse_args(argv)
    tls = etcd_tls(args, ap)
    logs.setup(args.name, json_lines=True if args.log_json else None)
    if tls is None:
        warn_insecure()
    labels = dict(lbl.split("=", 1) for lbl in args.label)
    capacity = Resources(args.vcpus, args.memory_mib, args.disk_gib, args.network_mbps, args.disk_iops)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    driver: HypervisorDriver
    network = None
    pools: StoragePools
    if args.driver == "libvirt":
        if not args.libvirt_uri:
            ap.error("--libvirt-uri is required with --driver libvirt")
        from vdcos.images import ensure
        from vdcos.nodeagent.libvirt.driver import LibvirtDriver

        lv = LibvirtDriver(args.libvirt_uri, capacity, ensure(), args.state_dir, migrate_tls=args.migrate_tls)
        driver = lv
        uri = args.libvirt_uri
        # A host started with its own namespace set (vdcos.host.network) has a switch to program.
        network = HostNetwork.load(args.state_dir)
        pools = LibvirtPools(args.name, lv.connection, args.state_dir / "pools" / "local", args.shared_pool)
    else:
        pools = SimPools(args.name, args.disk_gib)
        driver = SimDriver(capacity, args.state_dir / "domains.json")
        uri = f"sim://{args.state_dir / 'domains.json'}"
    store = EtcdStore(args.etcd, tls=tls)
    spec = NodeSpec(args.name, capacity, pairs(labels), driver.name, uri,
                    network.underlay_ip if network else "", network.underlay_mac if network else "",
                    fence_timeout_s=float(args.lease_ttl) if args.fence else 0.0)
    metrics = served = None
    if args.metrics_listen:
        metrics = AgentMetrics(args.name)
        served = MetricsServer(metrics.registry, args.metrics_listen, tls).start()
    recorder = Recorder(store).start()
    agent = NodeAgent(store, spec, driver, lease_ttl=args.lease_ttl, network=network, pools=pools,
                      fence_root=args.state_dir if args.fence else None, metrics=metrics,
                      metrics_address=served.address if served else "", emit=recorder.emit).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    agent.stop()
    recorder.stop()
    if served is not None:
        served.stop()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
