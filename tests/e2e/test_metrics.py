"""Metrics as an operator gets them: `vdcos up --prometheus`, every process's /metrics over
mutual TLS, and a real Prometheus (Debian's) that scrapes them all, found by file-based
discovery, and follows a host that leaves."""
from __future__ import annotations

import json
import re
import ssl
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest

from tests.conftest import wait_until
from tests.e2e.dc import vdcos
from vdcos.cli.localdc import LocalDatacenter, Proc
from vdcos.metrics.http import scrape
from vdcos.process import alive, stop_pid
from vdcos.security.pki import Authority, Identity, TlsFiles
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDatacenter]:
    home = tmp_path_factory.mktemp("metrics") / "dc"
    out = vdcos(home, "up", "--hosts", "2", "--lease-ttl", "3", "--prometheus")
    state = LocalDatacenter.load(home)
    assert state is not None
    assert f"Prometheus: {state.prometheus}" in out
    yield state
    vdcos(home, "down", "--purge")
    assert not any(alive(p.pid) for p in state.procs), "vdcos down left processes behind"
    assert not (home / "prometheus").exists()


def query(dc: LocalDatacenter, path: str, **params: str) -> Any:
    """Prometheus's HTTP API, as the operator (its web API asks for a certificate too)."""
    tls = dc.operator_tls()
    assert tls is not None and tls.cert and tls.key
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    url = f"{dc.prometheus}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]


def series(text: str, name: str, **labels: str) -> list[float]:
    """The values of `name`'s samples in exposition `text` whose labels include `labels`."""
    out = []
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            out.append(float(m.group(2)))
    return out


def test_every_process_serves_its_metrics_to_the_operator_only(dc: LocalDatacenter) -> None:
    client = dc.client()
    spec = pb.VmSpec(name="web-1", resources=pb.Resources(vcpus=1, memory_mib=512, disk_gib=1, network_mbps=10))
    node = client.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec)).vm.placement.node
    too_big = pb.VmSpec(name="huge", resources=pb.Resources(vcpus=1, memory_mib=200_000, disk_gib=1, network_mbps=10))
    with pytest.raises(grpc.RpcError) as refused:
        client.vms.CreateVm(vm_pb.CreateVmRequest(spec=too_big))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # it can never fit
    operator = dc.operator_tls()
    api = scrape(dc.metrics["scheduler"], operator)
    assert series(api, "vdcos_api_requests_total", method="/vdcos.v1.VmService/CreateVm", code="OK") == [1.0]
    assert series(api, "vdcos_api_requests_total", method="/vdcos.v1.VmService/CreateVm",
                  code="FAILED_PRECONDITION") == [1.0]
    assert series(api, "vdcos_placement_duration_seconds_count") == [1.0]
    assert series(api, "vdcos_placement_refusals_total", reason="insufficient_memory_mib") == [1.0], api
    assert series(api, "vdcos_placement_commits_total", outcome="committed") == [1.0]
    assert series(api, "vdcos_cache_synced") == [1.0]
    assert sum(series(api, "vdcos_controller_leader")) == 4.0  # the one replica leads all four
    # The agent's sample of the VM comes with its next status period.
    wait_until(lambda: series(scrape(dc.metrics[node], operator), "vdcos_vm_cpu_seconds_total", vm="web-1",
                              node=node), timeout=20, every=0.5)
    agent = scrape(dc.metrics[node], operator)
    assert series(agent, "vdcos_node_capacity_vcpus", node=node) == [16.0]
    assert series(agent, "vdcos_node_vms", node=node) == [1.0]
    assert series(agent, "vdcos_vm_memory_used_bytes", vm="web-1", node=node)[0] > 0
    # A node's certificate is from the same CA, but per-VM series are not a node's to read.
    ca = Authority(Path(dc.ca).parent)
    with pytest.raises(PermissionError, match="403"):
        scrape(dc.metrics["scheduler"], ca.issue(Identity("node", "host-1")))
    # No certificate: refused at the handshake.
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        scrape(dc.metrics["scheduler"], TlsFiles(Path(dc.ca)))


def test_prometheus_scrapes_every_target_and_follows_a_host_that_leaves(dc: LocalDatacenter) -> None:
    def healthy() -> dict[str, str]:
        targets = query(dc, "/api/v1/targets")["activeTargets"]
        return {t["scrapeUrl"].split("/")[2]: t["health"] for t in targets}
    expected = {dc.metrics[n] for n in ("etcd", "scheduler", "host-1", "host-2")}
    got = wait_until(lambda: (h := healthy()) and set(h) == expected and set(h.values()) == {"up"} and h,
                     timeout=60, every=1)
    assert set(got) == expected  # type: ignore[arg-type]
    # What it scraped answers queries, labelled by node.
    wait_until(lambda: query(dc, "/api/v1/query", query="vdcos_node_capacity_vcpus")["result"], timeout=30, every=1)
    nodes = {r["metric"]["node"] for r in query(dc, "/api/v1/query", query="vdcos_node_capacity_vcpus")["result"]}
    assert nodes == {"host-1", "host-2"}
    assert query(dc, "/api/v1/query", query="etcd_server_has_leader")["result"][0]["value"][1] == "1"
    # host-2's agent stops for good (the supervisor first, or it would start it again): its lease
    # expires, its status goes, and discovery drops it from the targets.
    stop_pid(dc.proc("supervisor").pid)
    agent: Proc = dc.proc("host-2")
    stop_pid(agent.pid)
    wait_until(lambda: dc.metrics["host-2"] not in healthy(), timeout=60, every=1)
    assert set(healthy()) == expected - {dc.metrics["host-2"]}
