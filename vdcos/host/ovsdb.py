"""A small OVSDB client for one host's Open_vSwitch database, on the official python `ovs` IDL.

Every change is one OVSDB transaction. Like ovs-vsctl without --no-wait, a write bumps
Open_vSwitch.next_cfg and returns only once ovs-vswitchd reports cur_cfg >= it, i.e. once the
switch really has the change (and has given new interfaces their ofport).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import ovs.db.idl
import ovs.poller

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
_PORT_COLUMNS = {"tag", "trunks", "vlan_mode", "protected", "qos", "other_config", "external_ids"}
# How long a capped port may send at line rate after an idle spell (tc's own default is one
# timer tick, 4 ms at HZ=250). A stalled datapath then catches up instead of losing the time:
# under load a 50 ms bucket kept TCP at 48 Mbit/s where 10 ms dipped to 46; over any span it
# lets through at most rate x 50 ms more than the cap.
HTB_BURST_S = 0.050


def htb_burst_bits(max_rate_bps: int) -> int:
    return max(int(max_rate_bps * HTB_BURST_S), 2 * 1514 * 8)

Row = Any  # ovs.db.idl.Row: columns are attributes


class OvsdbError(Exception):
    pass


class Ovsdb:
    def __init__(self, socket: str, timeout: float = 10.0) -> None:
        helper = ovs.db.idl.SchemaHelper(location=SCHEMA)
        helper.register_all()
        self.idl = ovs.db.idl.Idl(f"unix:{socket}", helper)
        self.timeout = timeout
        # The IDL is not thread-safe; one controller thread and the agent share this client.
        self.lock = threading.RLock()
        self._wait(lambda: bool(self.idl.has_ever_connected()))

    def _wait(self, cond: Callable[[], bool], timeout: float | None = None) -> None:
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self.idl.run()
            if cond():
                return
            if time.monotonic() > end:
                raise OvsdbError("timed out waiting for ovsdb-server/ovs-vswitchd")
            p = ovs.poller.Poller()
            self.idl.wait(p)
            p.timer_wait(100)
            p.block()

    # --- reads -----------------------------------------------------------------------------
    @property
    def root(self) -> Row | None:
        rows = list(self.idl.tables["Open_vSwitch"].rows.values())
        return rows[0] if rows else None

    def rows(self, table: str) -> list[Row]:
        with self.lock:
            self.idl.run()
            return list(self.idl.tables[table].rows.values())

    def find(self, table: str, name: str) -> Row | None:
        return next((r for r in self.idl.tables[table].rows.values() if r.name == name), None)

    def ofport(self, iface: str, timeout: float = 5.0) -> int:
        """The OpenFlow port number vswitchd gave an interface (waits for it)."""
        with self.lock:
            def ready() -> bool:
                r = self.find("Interface", iface)
                return r is not None and bool(r.ofport) and r.ofport[0] > 0
            self._wait(ready, timeout)
            row = self.find("Interface", iface)
            assert row is not None
            return int(row.ofport[0])

    # --- writes ----------------------------------------------------------------------------
    def transact(self, fn: Callable[[ovs.db.idl.Transaction, dict[str, Any]], None], *, wait: bool = True) -> None:
        with self.lock:
            for _ in range(20):
                self.idl.run()
                txn = ovs.db.idl.Transaction(self.idl)
                fn(txn, self.idl.tables)
                if wait and self.root is not None:
                    self.root.increment("next_cfg")
                status = txn.commit_block()
                if status == ovs.db.idl.Transaction.TRY_AGAIN:
                    continue
                if status not in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
                    raise OvsdbError(f"ovsdb transaction failed: "
                                     f"{ovs.db.idl.Transaction.status_to_string(status)} {txn.get_error()}")
                if wait and status == ovs.db.idl.Transaction.SUCCESS and self.root is not None:
                    n = txn.get_increment_new_value()
                    self._wait(lambda: self.root is not None and self.root.cur_cfg >= n)
                return
            raise OvsdbError("ovsdb transaction kept conflicting")

    def init(self) -> None:
        """ovs-vsctl --no-wait init: the one Open_vSwitch row."""
        with self.lock:
            if self.root is None:
                self.transact(lambda txn, t: txn.insert(t["Open_vSwitch"]), wait=False)

    @staticmethod
    def _new_port(txn: ovs.db.idl.Transaction, t: dict[str, Any], name: str,
                  iface_cols: dict[str, Any], port_cols: dict[str, Any]) -> Row:
        i = txn.insert(t["Interface"])
        i.name = name
        for k, v in iface_cols.items():
            setattr(i, k, v)
        p = txn.insert(t["Port"])
        p.name = name
        p.interfaces = [i]
        for k, v in port_cols.items():
            setattr(p, k, v)
        return p

    def ensure_bridge(self, name: str, **cols: Any) -> None:
        def fn(txn: ovs.db.idl.Transaction, t: dict[str, Any]) -> None:
            br = self.find("Bridge", name)
            if br is None:
                br = txn.insert(t["Bridge"])
                br.name = name
                br.ports = [self._new_port(txn, t, name, {"type": "internal"}, {})]
                self.root.bridges = [*self.root.bridges, br]
            for k, v in cols.items():
                setattr(br, k, v)
        self.transact(fn)

    def add_ports(self, bridge: str, ports: dict[str, dict[str, Any]]) -> None:
        """Adds or updates ports (name -> Port and Interface columns) in one transaction."""
        if not ports:
            return

        def fn(txn: ovs.db.idl.Transaction, t: dict[str, Any]) -> None:
            br = self.find("Bridge", bridge)
            if br is None:
                raise OvsdbError(f"no bridge {bridge}")
            new = []
            for name, cols in ports.items():
                pc = {k: v for k, v in cols.items() if k in _PORT_COLUMNS}
                ic = {k: v for k, v in cols.items() if k not in _PORT_COLUMNS}
                port = next((p for p in br.ports if p.name == name), None)
                if port is None:
                    new.append(self._new_port(txn, t, name, ic, pc))
                    continue
                for k, v in pc.items():
                    setattr(port, k, v)
                for k, v in ic.items():
                    setattr(port.interfaces[0], k, v)
            if new:
                br.ports = [*br.ports, *new]
        self.transact(fn)

    def del_ports(self, bridge: str, names: set[str]) -> None:
        if not names:
            return

        def fn(txn: ovs.db.idl.Transaction, t: dict[str, Any]) -> None:
            br = self.find("Bridge", bridge)
            if br is not None:
                br.ports = [p for p in br.ports if p.name not in names]  # Port and Interface rows are GC'd
        self.transact(fn)

    def set_port_qos(self, port: str, max_rate_bps: int) -> None:
        """linux-htb on the port (limits what the switch sends out of it); 0 removes it. On the
        userspace datapath this works where ingress_policing_rate does not (RECIPES.md).

        The cap is the queue's, with a bucket of HTB_BURST_S; the QoS row gets no max-rate, so
        the root class runs at the link's rate. OVS gives a root class one packet of bucket
        (MTU + 64 bytes), and capped there, every dequeue a quarter of a millisecond late loses
        that time for good at 50 Mbit/s: on busy hosts TCP through the cap measured 21-45."""
        def fn(txn: ovs.db.idl.Transaction, t: dict[str, Any]) -> None:
            p = self.find("Port", port)
            if p is None:
                return
            if max_rate_bps <= 0:
                p.qos = []
                return
            cap = {"max-rate": str(max_rate_bps), "burst": str(htb_burst_bits(max_rate_bps))}
            if p.qos:
                q = p.qos[0]
                q.other_config = {}
                q.queues[0].other_config = cap
                return
            queue = txn.insert(t["Queue"])
            queue.other_config = cap
            qos = txn.insert(t["QoS"])
            qos.type = "linux-htb"
            qos.queues = {0: queue}
            p.qos = [qos]
        self.transact(fn)

    def close(self) -> None:
        with self.lock:
            self.idl.close()
