"""The datacenter's events through the API: written where a change happens (the API, the
scheduler, the agents, the controllers), listed newest first a page at a time, filtered,
watched as they come, refused when asked badly; and a burst folded by the writer's rate."""
from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2

from tests.conftest import Cluster, details, wait_until
from vdcos.events import Filter, Recorder, page
from vdcos.v1 import event_service_pb2 as ev_pb
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb


def spec(name: str, vcpus: int = 1) -> pb.VmSpec:
    return pb.VmSpec(name=name, resources=pb.Resources(vcpus=vcpus, memory_mib=512, disk_gib=1))


def kinds(c: Cluster, **f: str) -> list[tuple[str, str]]:
    got = c.client.events.ListEvents(ev_pb.ListEventsRequest(filter=ev_pb.EventFilter(**f), page_size=1000)).events
    return [(e.kind, e.name) for e in got]


def test_a_vms_life_is_told_in_order_and_filters_and_pages_hold(cluster: Cluster) -> None:
    for n in ("h0", "h1"):
        cluster.add_node(n)
    watched: list[ev_pb.Event] = []
    stream = cluster.client.events.WatchEvents(ev_pb.WatchEventsRequest(filter=ev_pb.EventFilter(vm="web-1")))

    def follow() -> None:
        try:
            for r in stream:
                watched.append(r.event)
        except grpc.RpcError:
            pass  # cancelled at the end
    threading.Thread(target=follow, daemon=True).start()
    time.sleep(0.5)  # the watch is open before the VM exists
    node = cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec("web-1"))).vm.placement.node
    with pytest.raises(grpc.RpcError):
        cluster.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec("huge", vcpus=10_000 // 16)))
    wait_until(lambda: ("vm.started", "web-1") in kinds(cluster), timeout=10)
    cluster.client.nodes.CordonNode(node_pb.CordonNodeRequest(name="h1", reason="maintenance"))
    cluster.client.vms.DeleteVm(vm_pb.DeleteVmRequest(name="web-1"))
    wait_until(lambda: ("vm.deleted", "web-1") in kinds(cluster), timeout=10)
    mine = [k for k, _ in reversed(kinds(cluster, vm="web-1"))]  # oldest first
    assert mine == ["vm.created", "vm.placed", "vm.started", "vm.deleted"]
    placed = next(e for e in cluster.client.events.ListEvents(ev_pb.ListEventsRequest(
        filter=ev_pb.EventFilter(kind="vm.placed"))).events if e.name == "web-1")
    assert placed.node == node and placed.count == 1 and "placed on" in placed.message and "score" in placed.fields
    refused = kinds(cluster, kind="vm.refused")
    assert refused == [("vm.refused", "huge")]
    assert ("node.cordoned", "h1") in kinds(cluster, node="h1")
    assert {k for k, _ in kinds(cluster, kind="node.")} >= {"node.joined", "node.cordoned"}
    # The watch saw the VM's events as they came, in order.
    wait_until(lambda: len(watched) >= 4, timeout=10)
    assert [e.kind for e in watched] == mine
    # Pages: newest first, each older than the last, none lost or repeated.
    everything = kinds(cluster)
    seen: list[tuple[str, str]] = []
    token = ""
    while True:
        r = cluster.client.events.ListEvents(ev_pb.ListEventsRequest(page_size=2, page_token=token))
        seen += [(e.kind, e.name) for e in r.events]
        assert len(r.events) <= 2
        token = r.next_page_token
        if not token:
            break
    assert seen == everything and len(seen) >= 8
    stream.cancel()


@pytest.mark.parametrize("request_, field", [
    (ev_pb.ListEventsRequest(page_size=5000), "page_size"),
    (ev_pb.ListEventsRequest(page_token="/vdcos/events/../x"), "page_token"),
    (ev_pb.ListEventsRequest(filter=ev_pb.EventFilter(kind="vm.exploded")), "filter.kind"),
    (ev_pb.ListEventsRequest(filter=ev_pb.EventFilter(vm="Not A Name")), "filter.vm"),
])
def test_bad_requests_name_the_field(cluster: Cluster, request_: ev_pb.ListEventsRequest, field: str) -> None:
    with pytest.raises(grpc.RpcError) as e:
        cluster.client.events.ListEvents(request_)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (detail,) = details(e.value)
    br = error_details_pb2.BadRequest()
    assert detail.Unpack(br)  # type: ignore[attr-defined]
    assert [v.field for v in br.field_violations] == [field]


def test_a_burst_is_folded_into_one_event_that_counts_it(cluster: Cluster) -> None:
    rec = Recorder(cluster.store, rate=1.0, burst=5).start()
    try:
        for i in range(50):
            rec.emit("vm.created", f"burst-{i:02d}", project="p1")
    finally:
        rec.stop()
    got = [e for _, e in page(cluster.store, Filter(kind="vm.created", project="p1"), 100)[0]]
    assert sum(e.count for e in got) == 50  # nothing lost, nothing counted twice
    assert len(got) <= 7  # 5 one by one, then one or two that fold the rest
    folded = [e for e in got if e.count > 1]
    assert folded and all(e.name == "" and "more vm.created events" in e.message for e in folded)
