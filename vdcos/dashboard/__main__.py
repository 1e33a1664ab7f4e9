"""python -m vdcos.dashboard: the web dashboard, a process beside the API replicas (`vdcos up`
starts one). It reaches the API as each browser's token (gateway.py), and serves HTTPS with its
own certificate from the datacenter CA."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from vdcos import logs
from vdcos.cli.client import Client
from vdcos.dashboard.gateway import Gateway
from vdcos.dashboard.server import DashboardServer, Prometheus
from vdcos.security.pki import TlsFiles
from vdcos.security.tls import add_insecure_flag, warn_insecure


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vdcos-dashboard")
    ap.add_argument("--api", required=True, help="the API replicas' token addresses: host:port[,host:port...]")
    ap.add_argument("--listen", default="127.0.0.1:0", help="host:port to serve the dashboard on")
    ap.add_argument("--port-file", type=Path, help="write the port served here once listening")
    ap.add_argument("--ca", type=Path, help="the datacenter CA (PEM): the API's certificates must chain to it")
    ap.add_argument("--cert", type=Path, help="the dashboard's certificate (PEM), from the datacenter CA")
    ap.add_argument("--key", type=Path, help="its private key (PEM)")
    ap.add_argument("--prometheus", default="", help="the datacenter's Prometheus (URL): VM charts with history")
    add_insecure_flag(ap)
    args = ap.parse_args(argv)
    logs.setup("dashboard")
    if args.insecure:
        if args.ca or args.cert or args.key:
            ap.error("--insecure and --ca/--cert/--key exclude each other")
        warn_insecure()
        tls = None
    else:
        for flag, p in (("--ca", args.ca), ("--cert", args.cert), ("--key", args.key)):
            if p is None or not p.is_file():
                ap.error(f"{flag}: {'required (or --insecure, for development only)' if p is None else f'no file {p}'}")
        tls = TlsFiles(args.ca, args.cert, args.key)
    # The API's TLS port: no client certificate, each call's token says who calls.
    client = Client(args.api, tls=None if tls is None else TlsFiles(tls.ca))
    prom = Prometheus(args.prometheus, tls) if args.prometheus else None
    srv = DashboardServer(Gateway(client), args.listen, tls, prom).start()
    if args.port_file:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(str(srv.port))
        tmp.replace(args.port_file)
    logging.getLogger("vdcos.dashboard").info("serving %s (API %s)", srv.url, args.api)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    srv.stop()
    client.channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
