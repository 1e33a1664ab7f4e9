"""The dashboard's HTTPS server: the page (static/), the JSON gateway to the API (gateway.py) and a
VM's history from Prometheus.

    GET  /                          the single page (static/index.html)
    GET  /static/app.js|app.css
    GET  /api/config                what the page needs before signing in (no data)
    POST /api/v1/SERVICE/METHOD     a unary RPC, JSON in and out (gateway.py), as the bearer token
    GET  /api/history?vm=NAME&minutes=M   CPU and memory series of a VM, from Prometheus

Authentication is the API's: each request carries `Authorization: Bearer <token>`, a vdcos token
(`vdcos token create`, or `vdcos dashboard`, which makes a short-lived one). The page keeps it
in the tab's sessionStorage and sends it as a header, never as a cookie, so no other site can
make a browser call the gateway with it (no CSRF). A VM's history is read from Prometheus with the
dashboard's own certificate, only after the API answered GetVm for that VM with the caller's
token: who may not see the VM does not see its series either."""
from __future__ import annotations

import http.client
import json
import logging
import ssl
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any

from vdcos.dashboard.gateway import CallFailed, Gateway
from vdcos.security.https import HttpsServer, Serving, server_context
from vdcos.security.pki import TlsFiles

log = logging.getLogger("vdcos.dashboard")

MAX_BODY = 1 << 20
DRAIN_MAX = 8 << 20
STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
HTTP_STATUS = {"OK": 200, "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
               "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
               "ABORTED": 409, "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "UNIMPLEMENTED": 501,
               "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}
HEADERS = {
    # Everything the page loads is its own: no inline script, nothing from elsewhere, no framing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
HISTORY_MAX_MIN = 24 * 60
HISTORY_POINTS = 120
# PromQL per series: the VM's name is checked by GetVm first and quoted here.
HISTORY = {"cpu_percent": '100 * rate(vdcos_vm_cpu_seconds_total{{vm="{vm}"}}[1m])',
           "memory_mib": 'vdcos_vm_memory_used_bytes{{vm="{vm}"}} / 1048576'}


def _asset(name: str) -> bytes:
    return resources.files("vdcos.dashboard").joinpath("static", name).read_bytes()


class Prometheus:
    """Range queries to the datacenter's Prometheus, as the dashboard (its certificate)."""

    def __init__(self, url: str, tls: TlsFiles | None) -> None:
        u = urllib.parse.urlsplit(url)
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname or "127.0.0.1", u.port or (443 if self.https else 80)
        self.context: ssl.SSLContext | None = None
        if self.https:
            assert tls is not None
            self.context = ssl.create_default_context(cafile=str(tls.ca))
            self.context.check_hostname = False  # the CA's: its certificates name loopback, not this URL's host
            self.context.load_cert_chain(str(tls.cert), str(tls.key))

    def range(self, query: str, start: float, end: float, step: float) -> list[list[float]]:
        q = urllib.parse.urlencode({"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
        conn = (http.client.HTTPSConnection(self.host, self.port, timeout=10, context=self.context) if self.https
                else http.client.HTTPConnection(self.host, self.port, timeout=10))
        try:
            conn.request("GET", f"/api/v1/query_range?{q}")
            resp = conn.getresponse()
            body = json.loads(resp.read())
        finally:
            conn.close()
        if resp.status != 200 or body.get("status") != "success":
            raise RuntimeError(f"Prometheus answered {resp.status}: {body.get('error', '')}")
        result = body["data"]["result"]
        return [[float(t), float(v)] for t, v in result[0]["values"]] if result else []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in {**HEADERS, **(extra or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", {"Cache-Control": "no-store"})

    def _error(self, e: CallFailed) -> None:
        self._json(HTTP_STATUS.get(e.code, 500), {"error": e.body})

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            self._send(200, _asset("index.html"), "text/html; charset=utf-8", {"Cache-Control": "no-cache"})
        elif url.path.startswith("/static/") and url.path[8:] in STATIC:
            self._send(200, _asset(url.path[8:]), STATIC[url.path[8:]], {"Cache-Control": "no-cache"})
        elif url.path == "/api/config":
            self._json(200, {"insecure": self.server.insecure, "prometheus": self.server.prometheus is not None})
        elif url.path == "/api/history":
            self._history(urllib.parse.parse_qs(url.query))
        else:
            self._json(404, {"error": {"code": "NOT_FOUND", "message": f"nothing at {url.path}",
                                       "lines": [f"nothing at {url.path}"]}})

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            # Read what a client sends anyway (up to a bound) before answering: a reply it gets
            # while still sending is lost to the reset of a socket closed under its feet.
            self.close_connection = True
            self.rfile.read(min(max(length, 0), DRAIN_MAX))
            self._json(413, {"error": CallFailed("INVALID_ARGUMENT", f"the body is over {MAX_BODY} bytes").body})
            return
        raw = self.rfile.read(length)
        try:
            if not path.startswith("/api/v1/"):
                raise CallFailed("NOT_FOUND", f"nothing at {path}")
            # A form or a simple cross-site request cannot send this type without the API's say.
            if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
                raise CallFailed("INVALID_ARGUMENT", "the body must be application/json")
            try:
                body = json.loads(raw or b"{}")
            except ValueError as e:
                raise CallFailed("INVALID_ARGUMENT", f"the body is not JSON: {e}") from None
            if not isinstance(body, dict):
                raise CallFailed("INVALID_ARGUMENT", "the body must be a JSON object (the request message)")
            answer = self.server.gateway.call(path[len("/api/v1/"):], body, self.headers.get("Authorization"))
        except CallFailed as e:
            self._error(e)
            return
        self._json(200, answer)

    def _history(self, query: dict[str, list[str]]) -> None:
        prom = self.server.prometheus
        vm = (query.get("vm") or [""])[0]
        try:
            minutes = min(max(int((query.get("minutes") or ["30"])[0]), 1), HISTORY_MAX_MIN)
        except ValueError:
            self._error(CallFailed("INVALID_ARGUMENT", "minutes: not a whole number"))
            return
        if prom is None:
            self._error(CallFailed("FAILED_PRECONDITION", "no Prometheus: the page charts the agents' samples"))
            return
        try:  # the caller's say first: GetVm with its token (NOT_FOUND for another project's VM)
            got = self.server.gateway.call("VmService/GetVm", {"name": vm}, self.headers.get("Authorization"))
        except CallFailed as e:
            self._error(e)
            return
        name = got["vm"]["spec"]["name"]
        end = time.time()
        start = end - minutes * 60
        step = max(15.0, minutes * 60 / HISTORY_POINTS)
        try:
            series = {k: prom.range(q.format(vm=name.replace("\\", "").replace('"', "")), start, end, step)
                      for k, q in HISTORY.items()}
        except (OSError, RuntimeError, ValueError, KeyError) as e:
            self._error(CallFailed("UNAVAILABLE", f"Prometheus: {e}"))
            return
        self._json(200, {"vm": name, "step": step, "series": series})


class _Server(HttpsServer):
    gateway: Gateway
    prometheus: Prometheus | None
    insecure: bool


class DashboardServer(Serving):
    """The dashboard at https://ADDR/ (plain http when `tls` is None: an --insecure datacenter)."""

    def __init__(self, gateway: Gateway, addr: str, tls: TlsFiles | None, prometheus: Prometheus | None = None) -> None:
        server = self.listen(addr, _Handler, _Server)
        assert isinstance(server, _Server)
        server.gateway, server.prometheus, server.insecure = gateway, prometheus, tls is None
        super().__init__(server, None if tls is None else server_context(tls, client_certs=False), "dashboard")

    @property
    def url(self) -> str:
        return f"{'https' if self._server.context else 'http'}://{self.host}:{self.port}/"
