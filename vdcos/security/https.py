"""HTTPS servers of vdcos (metrics, the dashboard): the standard library's threading HTTP server
with the datacenter's TLS, each handshake in its request's own thread, so a slow or silent
client holds no other."""
from __future__ import annotations

import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from vdcos.security.pki import Identity, TlsFiles

log = logging.getLogger("vdcos.security")

HANDSHAKE_TIMEOUT_S = 5.0


def server_context(tls: TlsFiles, client_certs: bool) -> ssl.SSLContext:
    """The server's certificate; with `client_certs`, a certificate from the datacenter CA is
    required of every client."""
    assert tls.cert is not None and tls.key is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    if client_certs:
        ctx.load_verify_locations(str(tls.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def peer_identity(sock: socket.socket) -> Identity | None:
    """Who the client's certificate names (the handshake verified it against the CA)."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    der = sock.getpeercert(binary_form=True)
    return Identity.of(ssl.DER_cert_to_PEM_cert(der).encode()) if der else None


class HttpsServer(ThreadingHTTPServer):
    """Plain HTTP while `context` is None."""
    daemon_threads = True
    context: ssl.SSLContext | None = None
    # A client silent this long between requests is dropped: kept-alive browser connections
    # each hold a thread.
    idle_timeout_s = 30.0

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.context is not None:
            request.settimeout(HANDSHAKE_TIMEOUT_S)
            try:
                request = self.context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log.debug("%s: refused %s at the handshake: %s", type(self).__name__, client_address, e)
                return
        request.settimeout(self.idle_timeout_s)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("%s: a request from %s failed", type(self).__name__, client_address, exc_info=True)


def bind(addr: str) -> tuple[str, int]:
    """host:port (port 0 picks one; no host: loopback)."""
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port)


class Serving:
    """An HttpsServer on `addr`, on a thread of its own, with the datacenter's TLS unless `context`
    is None (an --insecure datacenter)."""

    def __init__(self, server: HttpsServer, context: ssl.SSLContext | None, name: str) -> None:
        self._server = server
        self._server.context = context
        self.host = str(server.server_address[0])
        self._thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)

    @staticmethod
    def listen(addr: str, handler: type[BaseHTTPRequestHandler], server: type[HttpsServer] = HttpsServer
               ) -> HttpsServer:
        return server(bind(addr), handler)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
