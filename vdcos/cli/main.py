"""`vdcos`: the operator's command line. Human tables by default, `-o json` for scripts.

One module per command group (datacenter, nodes, vms, networks, volumes, migrations, policies,
capacity); each registers its commands with `register(sub)`."""
from __future__ import annotations

import argparse
import sys

import grpc

from vdcos.cli import (audit, capacity, credentials, dashboard, datacenter, events, ha, join, localdc, migrations,
                       networks, nodes,
                       policies, projects, tokens, usage, vms, volumes)
from vdcos.cli.client import describe_error
from vdcos.cli.common import UsageError


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vdcos", description="Virtual Datacenter OS: many hosts, one computer")
    ap.add_argument("-o", "--output", choices=["table", "json"], default="table")
    ap.add_argument("--server", help="scheduler address HOST:PORT (default: the local datacenter's)")
    ap.add_argument("--home", help="local datacenter state folder (default $VDCOS_HOME or ~/.vdcos)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per API call")
    ap.add_argument("--ca", help="the datacenter's CA certificate (PEM) to check the API against; default $VDCOS_CA, "
                                 "else the local datacenter's (cluster.json's `ca`)")
    ap.add_argument("--token", help="a bearer token (vdcos token create) to call the API with; default "
                                    "$VDCOS_TOKEN, else the local operator's certificate")
    ap.add_argument("--cert", help="a client certificate (vdcos token create --certificate) to call the API with, "
                                   "on a mutual-TLS address (--server; else the local datacenter's); default "
                                   "$VDCOS_CERT")
    ap.add_argument("--key", help="its key; default $VDCOS_KEY, else the certificate's name with -key.pem")
    ap.add_argument("--context", help="a datacenter logged in to (`vdcos login`); default $VDCOS_CONTEXT, else "
                                      "the local datacenter, else the current context")
    ap.add_argument("--insecure", action="store_true",
                    help="DEVELOPMENT ONLY: plaintext, to a datacenter started with `vdcos up --insecure`")
    sub = ap.add_subparsers(dest="command", required=True)
    datacenter.register(sub)
    nodes.register(sub)
    vms.register(sub)
    networks.register(sub)
    volumes.register(sub)
    migrations.register(sub)
    vms.register_explain(sub)
    policies.register(sub)
    capacity.register(sub)
    ha.register(sub)
    tokens.register(sub)
    projects.register(sub)
    audit.register(sub)
    events.register(sub)
    usage.register(sub)
    credentials.register(sub)
    dashboard.register(sub)
    join.register(sub)
    nodes.register_drain(sub)
    datacenter.register_demo(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.home_set = bool(args.home)
    args.home = args.home or str(localdc.home_dir())
    try:
        return int(args.fn(args))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except grpc.RpcError as e:
        print(describe_error(e), file=sys.stderr)
        return 1
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
