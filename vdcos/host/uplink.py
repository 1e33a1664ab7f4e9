"""`python -m vdcos.host.uplink --socket PATH --etcd host:port[,...]`: one simulated host's
management link to the control plane.

A host's node agent runs in the machine's root namespace, where etcd listens on loopback, so
nothing short of a cable stands between them to cut. Each libvirt host started by `vdcos up`
reaches etcd through its own uplink instead: a UNIX socket this process forwards to etcd's
members (the first that accepts). Stopping this process (SIGSTOP) cuts the host off the way
a dead switch port does: connections neither fail nor answer, and requests time out. Tests and
the failover benchmark cut it, with the host's underlay cables, to isolate a host that keeps
running; nothing else is in the path (etcd, the agent and its client are the real ones)."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("vdcos.uplink")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(path: Path, members: list[str]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for m in members:
            host, _, port = m.rpartition(":")
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
                break
            except (OSError, asyncio.TimeoutError):
                continue
        else:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    path.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(handle, str(path))
    os.chmod(path, 0o600)
    async with server:
        await server.serve_forever()


def endpoint(path: Path) -> str:
    """What the agent gives its etcd client."""
    return f"unix:{path}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vdcos-uplink", description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", type=Path, required=True)
    ap.add_argument("--etcd", required=True, help="etcd's members: host:port[,host:port...]")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    members = [m.strip() for m in args.etcd.split(",") if m.strip()]
    if not all(m.startswith("127.") for m in members):
        ap.error("--etcd: loopback members only")
    asyncio.run(_serve(args.socket, members))
    return 0


if __name__ == "__main__":
    sys.exit(main())
