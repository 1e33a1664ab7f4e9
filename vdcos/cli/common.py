"""What every command group shares: usage errors, tables, JSON output, the server's address."""
from __future__ import annotations

import argparse
import datetime
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from google.protobuf import json_format

from vdcos.cli import localdc
from vdcos.cli.client import Client
from vdcos.security.pki import TlsFiles, write_private

Subparsers = argparse._SubParsersAction  # what each group's register() adds its commands to


class UsageError(Exception):
    """Bad input caught before anything was sent; names the field."""


def enum_name(enum: Any, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower().replace("_", "-")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers)] + [fmt.format(*r) for r in cells])


def emit(args: argparse.Namespace, msg: Any, human: Callable[[], str]) -> None:
    if args.output == "json":
        print(json.dumps(json_format.MessageToDict(msg, preserving_proto_field_name=True), indent=2))
    else:
        print(human())


def _server_addr(args: argparse.Namespace, dc: localdc.LocalDatacenter | None) -> str:
    if args.server:
        return str(args.server)
    if os.environ.get("VDCOS_SERVER"):
        return os.environ["VDCOS_SERVER"]
    if dc is None or not dc.scheduler:
        raise UsageError(f"no datacenter is up under {args.home}: run `vdcos up` or pass --server HOST:PORT")
    return dc.scheduler


def _client_tls(args: argparse.Namespace, dc: localdc.LocalDatacenter | None) -> TlsFiles | None:
    """What the CLI checks the API's certificate against (--ca, VDCOS_CA, else the local
    datacenter's CA) and proves itself with (the local operator's certificate, when it is
    that datacenter's). None with --insecure only."""
    if args.insecure:
        return None
    ca = args.ca or os.environ.get("VDCOS_CA")
    if ca:
        if not Path(ca).is_file():
            raise UsageError(f"--ca: no file {ca}")
        mine = dc.operator_tls() if dc is not None and not dc.insecure and Path(dc.ca) == Path(ca) else None
        return mine or TlsFiles(Path(ca))
    if dc is None:
        raise UsageError(f"no datacenter is up under {args.home} and none is logged in to: `vdcos login NAME "
                         "--cluster cluster.json` (or --ca with --server and --token; --insecure for a development "
                         "datacenter started with it)")
    if dc.insecure:
        raise UsageError(f"the datacenter under {args.home} was started with --insecure: pass --insecure to talk "
                         "plaintext to it")
    return dc.operator_tls()


@dataclass(frozen=True)
class Context:
    api: list[str]
    ca: str
    token: str


def config_path() -> Path:
    return Path(os.environ.get("VDCOS_CONFIG") or Path.home() / ".config" / "vdcos" / "config.json")


def load_contexts() -> tuple[str, dict[str, Context]]:
    """(the current context's name, every context)."""
    p = config_path()
    if not p.exists():
        return "", {}
    try:
        raw = json.loads(p.read_text())
        return str(raw.get("current", "")), {n: Context(list(c["api"]), str(c["ca"]), str(c["token"]))
                                             for n, c in raw.get("datacenters", {}).items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{p}: not a vdcos config file ({e}); fix or remove it") from e


def save_contexts(current: str, contexts: dict[str, Context]) -> None:
    """The config file holds bearer secrets: its owner's only, from its first byte."""
    data = {"current": current, "datacenters": {n: asdict(c) for n, c in sorted(contexts.items())}}
    write_private(config_path(), json.dumps(data, indent=2).encode())


def selected_context(args: argparse.Namespace, local_dc_up: bool) -> Context | None:
    """The context this command uses, if any (the order: cli/credentials.py)."""
    name = getattr(args, "context", None) or os.environ.get("VDCOS_CONTEXT")
    current, contexts = load_contexts()
    if name:
        if name not in contexts:
            raise UsageError(f"--context: no context {name!r} in {config_path()} ({', '.join(contexts) or 'none yet'}: "
                             "`vdcos login`)")
        return contexts[name]
    if local_dc_up or not current:
        return None
    return contexts.get(current)


def connect(args: argparse.Namespace) -> Client:
    """A client with the caller's credentials: a bearer token (--token, VDCOS_TOKEN, or a
    context's from `vdcos login`) to the replicas' token addresses, else the local operator's
    certificate to their mutual-TLS ones. The order: cli/credentials.py."""
    dc = localdc.LocalDatacenter.load(Path(args.home))
    cert = getattr(args, "cert", None) or os.environ.get("VDCOS_CERT")
    if cert and not args.insecure:
        return _by_certificate(args, dc, Path(cert))
    ctx = None if args.insecure else selected_context(args, local_dc_up=dc is not None)
    if ctx is not None:
        server = args.server or os.environ.get("VDCOS_SERVER") or ",".join(ctx.api)
        ca = Path(args.ca or os.environ.get("VDCOS_CA") or ctx.ca)
        if not ca.is_file():
            raise UsageError(f"--ca: no file {ca} (the context's CA moved? `vdcos login` again)")
        return Client(server.split(","), tls=TlsFiles(ca), token=args.token or os.environ.get("VDCOS_TOKEN")
                      or ctx.token)
    tls = _client_tls(args, dc)
    token = args.token or os.environ.get("VDCOS_TOKEN")
    if tls is None:
        if token:
            raise UsageError("--token: a token is sent over TLS only, and this datacenter runs --insecure")
        return Client(_server_addr(args, dc))
    if token:
        return Client(_server_addr(args, dc), tls=TlsFiles(tls.ca), token=token)
    if tls.cert is None:
        raise UsageError("no credentials: pass --token (or set VDCOS_TOKEN), made by an admin with "
                         "`vdcos token create`")
    if args.server or os.environ.get("VDCOS_SERVER") or dc is None:
        return Client(_server_addr(args, dc), tls=tls)
    return Client(dc.api_mtls or dc.scheduler, tls=tls)


def _by_certificate(args: argparse.Namespace, dc: localdc.LocalDatacenter | None, cert: Path) -> Client:
    """A client proving itself with a certificate from the datacenter CA (a credential's), on a
    mutual-TLS address."""
    key = Path(getattr(args, "key", None) or os.environ.get("VDCOS_KEY") or cert.with_name(cert.stem + "-key.pem"))
    ca = args.ca or os.environ.get("VDCOS_CA") or (dc.ca if dc is not None else "")
    for flag, path in (("--cert", cert), ("--key", key), ("--ca", Path(ca) if ca else None)):
        if path is None or not path.is_file():
            raise UsageError(f"{flag}: no file {path or '(none given, and no local datacenter)'}")
    given = args.server or os.environ.get("VDCOS_SERVER")
    servers = given.split(",") if given else list(dc.api_mtls) if dc is not None and dc.api_mtls else []
    if not servers:
        raise UsageError("--server: a mutual-TLS address of the API (cluster.json's `api_mtls`)")
    return Client(servers, tls=TlsFiles(Path(ca), cert, key))


def when(ts: object) -> str:
    """A protobuf Timestamp as local time of day to the millisecond; "-" when unset."""
    seconds = getattr(ts, "seconds", 0) + getattr(ts, "nanos", 0) / 1e9
    return datetime.datetime.fromtimestamp(seconds).strftime("%H:%M:%S.%f")[:-3] if seconds else "-"


def kv_list(values: list[str], field: str) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise UsageError(f"{field}: expected key=value, got {v!r}")
        k, val = v.split("=", 1)
        out[k] = val
    return out


def yaml_documents(path: str, kind: str) -> list[tuple[str, dict[str, Any]]]:
    """The mappings in a YAML file ('-' for stdin), each with where it is, for -f options:
    documents of another `kind` are refused, their `kind:` key taken out."""
    import sys

    import yaml
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as e:
        raise UsageError(f"-f: cannot read {path}: {e.strerror}")
    except yaml.YAMLError as e:
        raise UsageError(f"-f: {path} is not valid YAML: {e}")
    out = []
    for i, doc in enumerate(docs):
        where = f"{path} document {i + 1}"
        if not isinstance(doc, dict):
            raise UsageError(f"{where}: expected a mapping of {kind} fields")
        got = doc.pop("kind", kind)
        if got != kind:
            raise UsageError(f"{where}: kind: expected {kind}, got {got!r}")
        out.append((where, doc))
    if not out:
        raise UsageError(f"-f: {path} holds no {kind}")
    return out

