"""`python -m vdcos.metrics.discovery`: keeps Prometheus's target files (metrics/prometheus.py)
equal to what etcd says runs: each live API replica and node agent publishes its metrics
address in its lease-bound record, so a host that joins appears and one whose agent is gone
leaves; the etcd members are the ones given. Polls: a few keys every couple of seconds."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from vdcos import logs
from vdcos.metrics.prometheus import write_targets
from vdcos.model import NodeStatus, decode
from vdcos.security.tls import add_etcd_flags, add_insecure_flag, etcd_tls
from vdcos.state import keys
from vdcos.state.etcd import EtcdStore
from vdcos.state.store import Store, StoreError

log = logging.getLogger("vdcos.metrics.discovery")


def targets(store: Store) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """What runs now: API replicas and node agents, each with its metrics address."""
    nodes, replicas = [], []
    kvs, _ = store.get_prefix(keys.NODES)
    for kv in kvs:
        if kv.key.endswith("/status"):
            st = decode(NodeStatus, json.loads(kv.value))
            if st.metrics:
                nodes.append((st.metrics, {"node": keys.split(kv.key, keys.NODES)[0]}))
    kvs, _ = store.get_prefix(keys.SCHEDULERS)
    for kv in kvs:
        rec = json.loads(kv.value)
        if rec.get("metrics"):
            replicas.append((rec["metrics"], {"replica": rec.get("address", "")}))
    return {"vdcos-node": nodes, "vdcos-api": replicas}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vdcos-metrics-discovery")
    ap.add_argument("--etcd", required=True, help="etcd's members: host:port[,host:port...] (scraped too)")
    ap.add_argument("--folder", type=Path, required=True, help="Prometheus's folder (metrics/prometheus.py)")
    ap.add_argument("--every", type=float, default=2.0, help="seconds between looks")
    add_etcd_flags(ap)
    add_insecure_flag(ap)
    args = ap.parse_args(argv)
    logs.setup("discovery")
    store = EtcdStore(args.etcd, tls=etcd_tls(args, ap))
    write_targets(args.folder, "etcd", [(m, {"member": m}) for m in args.etcd.split(",")])
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while True:
        try:
            for job, found in targets(store).items():
                if write_targets(args.folder, job, found):
                    log.info("%s: %d target(s)", job, len(found))
        except StoreError as e:
            log.warning("cannot read the targets from etcd: %s", e)
        if done.wait(args.every):
            break
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
