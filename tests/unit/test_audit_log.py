"""The audit log's store side: entries written in batches under their UTC hour, read back
newest first within a window, hours past the retention dropped whole, a full queue counted."""
from __future__ import annotations

import time

from vdcos.apiserver.audit import AuditLog, entries, target_of
from vdcos.state.journal import hour_prefix
from vdcos.model import AuditEntry
from vdcos.state import keys
from vdcos.state.store import MemoryStore
from vdcos.v1 import project_service_pb2 as proj_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb


def entry(at: float, target: str) -> AuditEntry:
    return AuditEntry(at, "user:admin", "admin", "", "/vdcos.v1.VmService/DeleteVm", "vms", "delete", target, "OK")


def test_written_read_back_newest_first_and_trimmed_by_hour() -> None:
    store = MemoryStore()
    log = AuditLog(store, "r1", retention_s=86400)
    now = time.time()
    log._write([entry(now - 10 * 86400, "old"), entry(now - 7200, "earlier"), entry(now - 5, "recent")])
    assert [e.target for e in entries(store, now - 30 * 86400, now, 10)] == ["recent", "earlier", "old"]
    assert [e.target for e in entries(store, now - 3 * 3600, now, 10)] == ["recent", "earlier"]
    assert [e.target for e in entries(store, now - 30 * 86400, now, 1)] == ["recent"]
    log.trim()
    assert [e.target for e in entries(store, now - 30 * 86400, now, 10)] == ["recent", "earlier"]
    assert store.get_prefix(hour_prefix(keys.AUDIT, now - 10 * 86400))[0] == []


def test_a_full_queue_drops_and_the_next_entry_says_how_many() -> None:
    store = MemoryStore()
    log = AuditLog(store)
    for i in range(10_005):
        log.record(entry(time.time(), f"v{i}"))
    assert log.dropped == 5
    log._write([entry(time.time(), "after")])
    assert "[5 audit entries before this one were lost]" in entries(store, 0, time.time(), 1)[0].message


def test_target_names_what_the_request_names() -> None:
    assert target_of(vm_pb.DeleteVmRequest(name="web-1")) == "web-1"
    assert target_of(vm_pb.CreateVmRequest(spec=pb.VmSpec(name="db"))) == "db"
    assert target_of(vm_pb.BatchCreateVmsRequest(requests=[vm_pb.CreateVmRequest()] * 3)) == "3 items"
    assert target_of(proj_pb.SetQuotaRequest(project="acme")) == "acme"
    assert target_of(object()) == "(stream)"
