"""The dashboard's JSON gateway on a real API replica in TLS: each call is made with the browser's
own token, so the API's authorization and project scoping decide (a reader cannot create, a
tenant sees only its project's VMs); bad requests are refused with the field named and change
nothing; what is not a unary vdcos RPC is not reachable through it."""
from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import secure_etcd, sim_agent, wait_until
from vdcos.apiserver.server import create_server
from vdcos.cli.client import Client
from vdcos.dashboard.gateway import METHODS, Gateway
from vdcos.dashboard.server import MAX_BODY, DashboardServer
from vdcos.model import Resources
from vdcos.security.pki import Identity, TlsFiles
from vdcos.v1 import project_service_pb2 as proj_pb
from vdcos.v1 import token_service_pb2 as tok_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

HOST = Resources(vcpus=16, memory_mib=65_536, disk_gib=1_000)


@dataclass
class Site:
    url: str
    ca: Path
    admin: Client
    tokens: dict[str, str]

    def request(self, method: str, path: str, body: bytes | None = None, token: str | None = None,
                ctype: str = "application/json") -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", ctype)
        if token:
            req.add_header("Authorization", f"Bearer {self.tokens.get(token, token)}")
        ctx = ssl.create_default_context(cafile=str(self.ca))
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=20) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def call(self, method: str, body: Any, token: str | None = "admin") -> tuple[int, Any]:
        status, _, raw = self.request("POST", f"/api/v1/{method}", json.dumps(body).encode(), token)
        return status, json.loads(raw)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("dashboard")
    with secure_etcd(base, "dash") as (ca, etcd, store, replica):
        server = create_server("127.0.0.1:0", store, tls=replica, authority=ca)
        admin = Client(f"127.0.0.1:{server.mtls_port}", ca.issue(Identity("user", "admin")))
        api = Client(f"127.0.0.1:{server.port}", TlsFiles(ca.cert_path))
        dash = DashboardServer(Gateway(api), "127.0.0.1:0", ca.issue(Identity("dashboard", "dashboard"))).start()
        agent, node_store = sim_agent(etcd, ca, "h1", HOST, base)
        try:
            wait_until(lambda: server.cache.node_names() == ["h1"], timeout=20)
            for p in ("red", "blue"):
                admin.projects.CreateProject(proj_pb.CreateProjectRequest(project=proj_pb.Project(name=p)))
            tokens = {name: admin.tokens.CreateToken(tok_pb.CreateTokenRequest(name=name, role=role, project=proj)).secret
                      for name, role, proj in (("admin", "admin", ""), ("reader", "reader", ""),
                                               ("red", "member", "red"))}
            for name, project in (("red-1", "red"), ("blue-1", "blue")):
                admin.vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(
                    name=name, project=project, resources=pb.Resources(vcpus=1, memory_mib=256))))
            yield Site(dash.url, ca.cert_path, admin, tokens)
        finally:
            dash.stop()
            api.channel.close()
            admin.channel.close()
            agent.stop()
            node_store.close()
            server.stop(0)


def vm_names(site: Site) -> set[str]:
    return {v.spec.name for v in site.admin.vms.ListVms(vm_pb.ListVmsRequest()).vms}


def test_serves_the_page_with_a_strict_content_security_policy(site: Site) -> None:
    status, headers, body = site.request("GET", "/")
    assert status == 200 and b'<script src="/static/app.js"' in body
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'self': no inline script
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, _ = site.request("GET", "/static/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/index.html", "/etc/passwd"):
        assert site.request("GET", path)[0] == 404, path
    status, _, body = site.request("GET", "/api/config")
    assert status == 200 and json.loads(body) == {"insecure": False, "prometheus": False}


def test_each_call_is_the_callers_own(site: Site) -> None:
    status, body = site.call("TokenService/GetCaller", {}, token=None)
    assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")
    status, body = site.call("TokenService/GetCaller", {}, token="vdcos.tok-000000000000.x")
    assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")

    status, me = site.call("TokenService/GetCaller", {}, token="admin")
    assert status == 200 and me["role"] == "admin" and {"nodes:drain", "vms:create"} <= set(me["permissions"])

    status, me = site.call("TokenService/GetCaller", {}, token="reader")
    assert status == 200 and me["role"] == "reader" and "vms:create" not in me["permissions"]
    status, body = site.call("VmService/CreateVm", {"spec": {"name": "by-reader", "resources": {"vcpus": 1,
                                                    "memory_mib": 128}}}, token="reader")
    assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED")
    assert "may not create vms" in body["error"]["message"]
    assert "by-reader" not in vm_names(site)

    status, me = site.call("TokenService/GetCaller", {}, token="red")
    assert (me["role"], me["project"]) == ("member", "red") and "nodes:drain" not in me["permissions"]
    status, body = site.call("VmService/ListVms", {}, token="red")
    assert status == 200 and [v["spec"]["name"] for v in body["vms"]] == ["red-1"]
    status, body = site.call("VmService/GetVm", {"name": "blue-1"}, token="red")
    assert (status, body["error"]["code"]) == (404, "NOT_FOUND")
    status, body = site.call("NodeService/DrainNode", {"name": "h1"}, token="red")
    assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED")


@pytest.mark.parametrize("path,body,ctype,status,says", [
    ("/api/v1/VmService/CreateVm", b"{not json", "application/json", 400, "not JSON"),
    ("/api/v1/VmService/CreateVm", b"[1]", "application/json", 400, "JSON object"),
    ("/api/v1/VmService/CreateVm", b'{"spec": {"nmae": "x"}}', "application/json", 400, 'no field named "nmae"'),
    ("/api/v1/VmService/CreateVm", b'{"spec": {"resources": {"vcpus": "many"}}}', "application/json", 400, "vcpus"),
    ("/api/v1/VmService/CreateVm", b'{"spec": {"name": "x"}}', "text/plain", 400, "application/json"),
    ("/api/v1/VmService/CreateVm", b"{" + b" " * MAX_BODY + b"}", "application/json", 413, "over"),
    ("/api/v1/VmService/WatchVms", b"{}", "application/json", 404, "not a method the dashboard offers"),
    ("/api/v1/NodeService/JoinNode", b"{}", "application/json", 404, "not a method the dashboard offers"),
    ("/api/v1/Nope/Nothing", b"{}", "application/json", 404, "not a method"),
    ("/api/v2/VmService/GetVm", b"{}", "application/json", 404, "nothing at"),
])
def test_bad_requests_are_refused_and_change_nothing(site: Site, path: str, body: bytes, ctype: str, status: int,
                                                     says: str) -> None:
    before = vm_names(site)
    got, _, raw = site.request("POST", path, body, token="admin", ctype=ctype)
    err = json.loads(raw)["error"]
    assert got == status and says in err["message"], err
    assert vm_names(site) == before


def test_refusals_come_back_with_their_fields_and_reasons(site: Site) -> None:
    status, body = site.call("VmService/CreateVm", {"spec": {"name": "Bad_Name", "resources": {"vcpus": 0}}})
    assert status == 400 and body["error"]["code"] == "INVALID_ARGUMENT"
    assert {"spec.name", "spec.resources.vcpus"} <= {v["field"] for v in body["error"]["violations"]}
    status, body = site.call("VmService/CreateVm", {"spec": {"name": "huge", "resources": {"vcpus": 1000,
                                                                                          "memory_mib": 128}}})
    assert status == 400 and body["error"]["code"] == "FAILED_PRECONDITION"
    assert any("vcpus" in line and "largest free" in line for line in body["error"]["rejection"]), body
    assert not {"Bad_Name", "huge"} & vm_names(site)


def test_history_needs_prometheus_and_a_vm_the_caller_sees(site: Site) -> None:
    status, _, raw = site.request("GET", "/api/history?vm=red-1", token="red")
    assert status == 400 and json.loads(raw)["error"]["code"] == "FAILED_PRECONDITION"
    status, _, raw = site.request("GET", "/api/history?vm=red-1&minutes=soon", token="red")
    assert status == 400 and "minutes" in json.loads(raw)["error"]["message"]


def test_a_silent_client_holds_up_no_one(site: Site) -> None:
    host, port = site.url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port))), socket.create_connection((host, int(port))):
        status, body = site.call("VmService/GetVm", {"name": "red-1"})
    assert status == 200 and body["vm"]["placement"]["node"] == "h1"


def test_every_unary_vdcos_rpc_but_join_is_offered() -> None:
    assert "VmService/CreateVm" in METHODS and "MigrationService/MigrateVm" in METHODS
    assert "NodeService/JoinNode" not in METHODS
    assert not {m for m in METHODS if m.split("/")[1].startswith("Watch")}
