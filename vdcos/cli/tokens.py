"""`vdcos token create | list | revoke`: bearer tokens for callers without a certificate from
the datacenter CA (users, service accounts, outside tools). Cluster admins make any; a project's
owners make, list and revoke their project's. `--certificate DIR` makes the credential a client
certificate instead: its key is made here and never leaves DIR."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from google.protobuf import json_format

from vdcos.cli.client import Client
from vdcos.cli.common import Subparsers, UsageError, connect, emit, table, when
from vdcos.security.pki import Identity, key_pem, new_key, signing_request, write_private, write_public
from vdcos.security.tokens import CLUSTER_ROLES, PROJECT_ROLES
from vdcos.v1 import token_service_pb2 as tok_pb

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> int:
    """`90`, `90s`, `15m`, `24h`, `30d` (0: never expires)."""
    unit = text[-1:] if text[-1:] in UNITS else "s"
    number = text[:-1] if text[-1:] in UNITS else text
    if not number.isdigit():
        raise UsageError(f"--ttl: {text!r} is not a duration like 3600, 15m, 24h or 30d")
    return int(number) * UNITS[unit]


def cmd_token(args: argparse.Namespace) -> int:
    with connect(args) as c:
        if args.token_command == "create" and args.certificate:
            return _create_certificate(c, args)
        if args.token_command == "create":
            r = c.tokens.CreateToken(tok_pb.CreateTokenRequest(
                name=args.name, role=args.role, project=args.project or "",
                ttl_seconds=seconds(args.ttl or ("1h" if args.role == "bootstrap" else "0"))),
                timeout=args.timeout)
            # The JSON has the bearer secret under `token`, for scripts and outside clients.
            if args.output == "json":
                print(json.dumps({**json_format.MessageToDict(r.token, preserving_proto_field_name=True),
                                  "token": r.secret}, indent=2))
            else:
                role = f"{r.token.role} in project {r.token.project}" if r.token.project else r.token.role
                print(f"token {r.token.accessor} for {r.token.name} (role {role}, "
                      f"expires {when(r.token.expires_at) if r.token.HasField('expires_at') else 'never'})")
                print(f"secret (shown once; send it as `authorization: Bearer <secret>`):\n{r.secret}")
            return 0
        if args.token_command == "list":
            lr = c.tokens.ListTokens(tok_pb.ListTokensRequest(project=args.project or ""), timeout=args.timeout)
            emit(args, lr, lambda: table(["ACCESSOR", "NAME", "PROJECT", "ROLE", "CREATED", "EXPIRES", "REVOKED"], [
                [t.accessor, t.name, t.project or "-", t.role, when(t.created_at),
                 when(t.expires_at) if t.HasField("expires_at") else "never", "yes" if t.revoked else "no"]
                for t in lr.tokens]))
            return 0
        rr = c.tokens.RevokeToken(tok_pb.RevokeTokenRequest(accessor=args.accessor), timeout=args.timeout)
        emit(args, rr, lambda: f"revoked {rr.token.accessor} ({rr.token.name}); every replica refuses it within 2 s")
        return 0


def _create_certificate(c: Client, args: argparse.Namespace) -> int:
    """A certificate credential: the key made and kept in DIR (0600), the certificate and the CA
    written beside it, ready for `vdcos --cert DIR/NAME.pem --key DIR/NAME-key.pem`."""
    folder = Path(args.certificate)
    key = new_key()
    csr = signing_request(key, Identity("cred", args.name))
    r = c.tokens.CreateToken(tok_pb.CreateTokenRequest(
        name=args.name, role=args.role, project=args.project or "", ttl_seconds=seconds(args.ttl or "0"),
        csr_pem=csr.decode()), timeout=args.timeout)
    paths = {"cert": folder / f"{args.name}.pem", "key": folder / f"{args.name}-key.pem", "ca": folder / "ca.pem"}
    write_private(paths["key"], key_pem(key))
    write_public(paths["cert"], r.certificate_pem.encode())
    write_public(paths["ca"], r.ca_pem.encode())
    if args.output == "json":
        print(json.dumps({**json_format.MessageToDict(r.token, preserving_proto_field_name=True),
                          **{k: str(p) for k, p in paths.items()}}, indent=2))
    else:
        role = f"{r.token.role} in project {r.token.project}" if r.token.project else r.token.role
        print(f"certificate credential {r.token.accessor} for {r.token.name} (role {role}, expires "
              f"{when(r.token.expires_at)})\n  certificate {paths['cert']}\n  key         {paths['key']} (yours alone)\n"
              f"  CA          {paths['ca']}\nuse: vdcos --cert {paths['cert']} --key {paths['key']} --ca {paths['ca']} "
              "--server <an api_mtls address of cluster.json> ...")
    return 0


def register(sub: Subparsers) -> None:
    tok = sub.add_parser("token", help="bearer tokens for users and service accounts (admins; owners of a project)")
    tsub = tok.add_subparsers(dest="token_command", required=True)
    cr = tsub.add_parser("create", help="a new token; its secret is printed once (-o json: under `token`)")
    cr.add_argument("name", help="who or what holds it")
    cr.add_argument("--role", required=True, choices=sorted(set(CLUSTER_ROLES) | set(PROJECT_ROLES)),
                    help="without --project, a cluster role: admin (everything), reader (every get, list and "
                         "watch) or bootstrap (a host joining with `vdcos join`, and nothing else); with it, a role in the project: owner (its resources and tokens), member (its "
                         "resources) or reader (their gets, lists and watches)")
    cr.add_argument("--project", help="a role in this project (a project's owner: its own)")
    cr.add_argument("--ttl", help="lifetime: 3600, 15m, 24h, 30d (default 0: never expires; a bootstrap token's: "
                                  "1h, at most 24h; a certificate's: 365d, at most that)")
    cr.add_argument("--certificate", metavar="DIR",
                    help="a client certificate instead of a secret: its key is made in DIR and never leaves it; "
                         "DIR gets NAME.pem, NAME-key.pem (0600) and ca.pem")
    ls = tsub.add_parser("list", help="every token the caller may see (never their secrets)")
    ls.add_argument("--project", help="only this project's")
    rv = tsub.add_parser("revoke", help="refuse a token from now on")
    rv.add_argument("accessor", help="tok-... as `token list` shows it")
    tok.set_defaults(fn=cmd_token)
