"""gRPC credentials from the datacenter's TLS files, and the flags every daemon takes for them.

A daemon speaks TLS unless it is given `--insecure`, which exists for developers only and
says so when it starts."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import grpc

from vdcos.security.pki import TlsFiles

log = logging.getLogger("vdcos.security")

INSECURE_WARNING = ("INSECURE: plaintext, no certificates. Anyone who reaches this process's ports can read and "
                    "change the whole datacenter. For development only; never on a network")


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    ca, cert, key = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def server_credentials(files: TlsFiles, require_client_cert: bool) -> grpc.ServerCredentials:
    """The server's certificate; client certificates from the same CA are asked for (and, if
    `require_client_cert`, required) and verified."""
    ca, cert, key = files.read()
    if cert is None or key is None:
        raise ValueError("a server needs its certificate and key")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=require_client_cert)


def secure_channel(target: str, files: TlsFiles, options: list[tuple[str, object]],
                   token: str | None = None, server_name: str = "") -> grpc.Channel:
    """A channel that checks the servers' certificates against the datacenter CA and against
    `server_name`, the name of the kind of server it wants (pki.API_NAME, pki.ETCD_NAME), which
    only that kind's certificates carry, whatever address it reached; without one, since neither
    a UNIX socket nor a list of addresses has one host name, against `localhost`. `token`: sent
    with every call as `authorization: Bearer <token>`."""
    if server_name or target.startswith(("unix:", "ipv4:")):
        options = [*options, ("grpc.ssl_target_name_override", server_name or "localhost")]
    creds = channel_credentials(files)
    if token:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    return grpc.secure_channel(target, creds, options=options)


def add_etcd_flags(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("etcd TLS (etcd accepts only clients with a certificate from the datacenter CA)")
    g.add_argument("--etcd-cacert", type=Path, help="the datacenter CA (PEM)")
    g.add_argument("--etcd-cert", type=Path, help="this process's certificate (PEM)")
    g.add_argument("--etcd-key", type=Path, help="its private key (PEM)")


def etcd_flags(files: TlsFiles | None) -> list[str]:
    """The command-line flags that give a daemon `files` for etcd (None: --insecure)."""
    if files is None:
        return ["--insecure"]
    return ["--etcd-cacert", str(files.ca), "--etcd-cert", str(files.cert), "--etcd-key", str(files.key)]


def etcd_tls(args: argparse.Namespace, ap: argparse.ArgumentParser) -> TlsFiles | None:
    """The etcd client's files from the flags (add_etcd_flags, add_insecure_flag); None only
    with --insecure."""
    given = [args.etcd_cacert, args.etcd_cert, args.etcd_key]
    if args.insecure:
        if any(given):
            ap.error("--insecure and --etcd-cacert/--etcd-cert/--etcd-key exclude each other")
        return None
    if not all(given):
        ap.error("--etcd-cacert, --etcd-cert and --etcd-key are required (or --insecure, for development only)")
    for flag, p in zip(("--etcd-cacert", "--etcd-cert", "--etcd-key"), given):
        if not p.is_file():
            ap.error(f"{flag}: no file {p}")
    return TlsFiles(args.etcd_cacert, args.etcd_cert, args.etcd_key)


def add_insecure_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--insecure", action="store_true",
                    help="DEVELOPMENT ONLY: plaintext and no certificates anywhere this process connects or listens")


def warn_insecure() -> None:
    log.warning(INSECURE_WARNING)
