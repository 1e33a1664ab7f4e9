"""Where the CLI keeps its credentials per datacenter, as kubeconfig does: `vdcos login` checks
a token against a datacenter's API and keeps it with the API's addresses and its CA under a name
(a context); `vdcos context list | use`; `vdcos logout`. The file is `$VDCOS_CONFIG`, else
`~/.config/vdcos/config.json`, readable by its owner only (it holds bearer secrets).

Which credentials a command uses, first found wins: a certificate credential (`--cert`,
`--key`; VDCOS_CERT, VDCOS_KEY); the flags and their variables (`--server`, `--ca`, `--token`;
VDCOS_SERVER, VDCOS_CA, VDCOS_TOKEN); the context named by `--context`
(VDCOS_CONTEXT); the local datacenter under --home, whose operator is admin by certificate; the
file's current context."""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from vdcos.cli.common import Context, Subparsers, UsageError, config_path, load_contexts, save_contexts, table
from vdcos.security.pki import TlsFiles
from vdcos.security.tokens import parse_bearer


def cmd_login(args: argparse.Namespace) -> int:
    from vdcos.cli.client import Client
    from vdcos.v1 import project_service_pb2 as proj_pb

    api, ca = args.api, args.ca
    if args.cluster:
        try:
            raw = json.loads(Path(args.cluster).read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"--cluster: cannot read {args.cluster}: {e}") from e
        api = api or ",".join(raw.get("api", []))
        ca = ca or raw.get("ca", "")
    if not api:
        raise UsageError("login: --api HOST:PORT[,HOST:PORT] (or --cluster cluster.json) is required")
    if not ca or not Path(ca).is_file():
        raise UsageError(f"--ca: the datacenter's CA certificate is required, and {ca or 'none'} is no file")
    token = args.token or os.environ.get("VDCOS_TOKEN") or (
        getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.readline().strip())
    if parse_bearer(f"Bearer {token}") is None:
        raise UsageError("--token: not a vdcos token (vdcos.tok-<12 hex>.<secret>, from `vdcos token create`)")
    addrs = [a.strip() for a in api.split(",") if a.strip()]
    # A call every role may make: the token is good, and the CA is this API's.
    with Client(addrs, TlsFiles(Path(ca).resolve()), token) as c:
        projects = c.projects.ListProjects(proj_pb.ListProjectsRequest(), timeout=args.timeout).projects
    _, contexts = load_contexts()
    contexts[args.name] = Context(addrs, str(Path(ca).resolve()), token)
    save_contexts(args.name, contexts)
    scope = f"project {projects[0].name}" if len(projects) == 1 else f"{len(projects)} projects visible"
    print(f"logged in to {args.name} ({', '.join(addrs)}; {scope}); it is the current context, kept in {config_path()}")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    current, contexts = load_contexts()
    name = args.name or current
    if name not in contexts:
        raise UsageError(f"logout: no context {name or '(current)'!r} in {config_path()}")
    del contexts[name]
    save_contexts("" if name == current else current, contexts)
    print(f"logged out of {name}; its token is forgotten here (revoke it with `vdcos token revoke`)")
    return 0


def cmd_context(args: argparse.Namespace) -> int:
    current, contexts = load_contexts()
    if args.context_command == "use":
        if args.name not in contexts:
            raise UsageError(f"context use: no context {args.name!r} ({', '.join(contexts) or 'none yet'})")
        save_contexts(args.name, contexts)
        print(f"current context: {args.name}")
        return 0
    print(table(["CURRENT", "NAME", "API", "CA"], [["*" if n == current else "", n, ",".join(c.api), c.ca]
                                                    for n, c in sorted(contexts.items())]))
    return 0


def register(sub: Subparsers) -> None:
    lg = sub.add_parser("login", help="check a token against a datacenter and keep it (a context)")
    lg.add_argument("name", help="what to call this datacenter here")
    lg.add_argument("--api", help="the API's token addresses, HOST:PORT[,HOST:PORT] (cluster.json `api`)")
    lg.add_argument("--cluster", help="a datacenter's cluster.json: its `api` and `ca`")
    lg.set_defaults(fn=cmd_login)
    lo = sub.add_parser("logout", help="forget a context's token (default: the current one)")
    lo.add_argument("name", nargs="?")
    lo.set_defaults(fn=cmd_logout)
    cx = sub.add_parser("context", help="the datacenters logged in to")
    csub = cx.add_subparsers(dest="context_command", required=True)
    csub.add_parser("list")
    csub.add_parser("use").add_argument("name")
    cx.set_defaults(fn=cmd_context)
