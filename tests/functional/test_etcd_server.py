"""The etcd member vdcos runs: the garbage-collection setting it starts etcd with."""
from __future__ import annotations

from pathlib import Path

import pytest

from vdcos.state.etcd import EtcdStore
from vdcos.state.etcd_server import GOGC, EtcdServer


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_etcd_collects_less_often_than_go_would(etcd_server: EtcdServer) -> None:
    assert _environ(etcd_server.pid)["GOGC"] == GOGC == "400"


def test_the_operators_gogc_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOGC", "150")
    srv = EtcdServer(tmp_path / "etcd").start()
    try:
        assert _environ(srv.pid)["GOGC"] == "150"
        store = EtcdStore(srv.endpoint)
        store.put("/vdcos/probe", b"1")
        assert store.get("/vdcos/probe") is not None
        store.close()
    finally:
        srv.stop()
