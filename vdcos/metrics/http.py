"""One `/metrics` per process: the Prometheus exposition of a registry (prometheus-client's own
handler writes the format), over mutual TLS with the datacenter CA, like the rest of vdcos.

A scraper proves who it is by its certificate. The operator (`user:*`), the control plane
(`scheduler:*`) and the datacenter's Prometheus (`monitor:*`) may read; a node agent's or a
tenant credential's certificate is refused with 403: per-VM series name every project's VMs.
With --insecure the same handler serves plaintext and checks nothing."""
from __future__ import annotations

import ssl

from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import CollectorRegistry

from vdcos.security.https import Serving, peer_identity, server_context
from vdcos.security.pki import TlsFiles

# The identity kinds (pki.GROUPS) that may read metrics.
SCRAPERS = frozenset({"user", "scheduler", "monitor"})


class _Handler(MetricsHandler):
    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404, "only /metrics is served here")
            return
        if isinstance(self.connection, ssl.SSLSocket):
            who = peer_identity(self.connection)
            if who is None or who.kind not in SCRAPERS:
                self.send_error(403, f"{who.common_name if who else 'this certificate'} may not read metrics "
                                     f"(one of {', '.join(sorted(SCRAPERS))} may)")
                return
        super().do_GET()


class MetricsServer(Serving):
    """Serves `registry` at https://ADDR/metrics (plain http without `tls`) on its own thread."""

    def __init__(self, registry: CollectorRegistry, addr: str, tls: TlsFiles | None) -> None:
        handler = type("Handler", (_Handler,), {"registry": registry})
        super().__init__(self.listen(addr, handler), None if tls is None else server_context(tls, client_certs=True),
                         "metrics")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def scrape(addr: str, tls: TlsFiles | None, timeout: float = 10.0) -> str:
    """GET /metrics as `tls`'s identity: what Prometheus does, for tests, benchmarks and `vdcos`."""
    import http.client

    host, _, port = addr.rpartition(":")
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    else:
        ctx = ssl.create_default_context(cafile=str(tls.ca))
        if tls.cert is not None and tls.key is not None:
            ctx.load_cert_chain(str(tls.cert), str(tls.key))
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=ctx)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        if resp.status != 200:
            raise PermissionError(f"{addr}: HTTP {resp.status}: {body.strip()[:300]}")
        return body
    finally:
        conn.close()
