"""A guest's network during live migration: how long its peers lose it.

    python -m benchmarks.netcutover --runs 10 --json FILE

Brings up its own local datacenter of three libvirt hosts (each its own namespace, Open vSwitch
and libvirtd), a tenant network, a guest on it and an endpoint on the third host. Each run the
endpoint pings the guest every 10 ms (a bounded count) while the guest live-migrates between the
other two hosts through the gRPC API. blackout_ms is the longest time without any reply in the
whole run (it contains one 10 ms interval, and stalls of the guest while the migration streams its
memory count too); downtime_ms is libvirt's own figure for the guest's pause.

The gap across the switch-over (cutover_gap_ms) is split in two with captures on both hosts, where
the replies leave the guest: guest_silence_ms runs from the last reply the guest sent on the
source to the first it sent on the destination (the guest was paused, then resumed in a QEMU with
a cold TCG translation cache), and network_added_ms is the rest, what the switch and the cutover
added on top. stale_answers counts requests the guest answered on both hosts: they waited in the
destination's tap while the guest moved. guest_fault is the first line in which the guest's kernel
has so far reported a virtio ring or page that came through a move corrupted (QEMU's TCG, see
vdcos/vswitch/README.md); guest_fault_after_run is the run that first saw one.

tunnel_throughput_mbps is iperf3 between endpoints on two hosts, over the VXLAN tunnel.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import emit, wait
from vdcos.cli.client import Client
from vdcos.cli.localdc import down, host_root, up
from vdcos.host.network import HostNetwork
from vdcos.images import ensure
from vdcos.nodeagent.libvirt.domain import read_console
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.vswitch import probe

TARGET_BLACKOUT_MS = 50.0
VM = "mover"


def endpoint_ns(home: Path, host: str, port: str) -> str:
    net = HostNetwork.load(host_root(home, host))
    assert net is not None
    return net.endpoint_netns("bench", port)


def host_ns(home: Path, host: str) -> str:
    net = HostNetwork.load(host_root(home, host))
    assert net is not None
    return net.netns


def split(ping: probe.PingResult, on_src: list[tuple[float, int]], on_dst: list[tuple[float, int]]) -> dict[str, Any]:
    """The peer's gap across the switch-over, and how much of it the guest itself was silent."""
    none = {"cutover_gap_ms": None, "guest_silence_ms": None, "network_added_ms": None, "stale_answers": None}
    if not on_src or not on_dst:
        return none
    last = on_src[-1][1]
    at = next((k for k, (_, seq) in enumerate(ping.replies) if seq == last), None)
    if at is None or at + 1 >= len(ping.replies):
        return none
    gap = (ping.replies[at + 1][0] - ping.replies[at][0]) * 1000
    silence = (on_dst[0][0] - on_src[-1][0]) * 1000
    answered = {seq for _, seq in on_src}
    return {"cutover_gap_ms": round(gap, 1), "guest_silence_ms": round(silence, 1),
            "network_added_ms": round(gap - silence, 1), "stale_answers": sum(seq in answered for _, seq in on_dst)}


def node_of(c: Client, vm: str) -> str:
    return str(c.vms.GetVm(vm_pb.GetVmRequest(name=vm)).vm.placement.node)


def migrate(c: Client, vm: str, to: str) -> mig_pb.Migration:
    m = c.migrations.MigrateVm(mig_pb.MigrateVmRequest(vm=vm, target_node=to)).migration
    return wait(lambda: (x := c.migrations.GetMigration(mig_pb.GetMigrationRequest(id=m.id)).migration).phase in
                (mig_pb.MIGRATION_PHASE_COMPLETED, mig_pb.MIGRATION_PHASE_FAILED, mig_pb.MIGRATION_PHASE_CANCELLED)
                and x, 120, f"migration {m.id}")


def run(home: Path, runs: int) -> dict[str, Any]:
    ensure()
    t0 = time.monotonic()
    dc = up(home, 3, "libvirt", {"vcpus": 4, "memory_mib": 4096, "disk_gib": 100, "network_mbps": 10000})
    setup_ms = (time.monotonic() - t0) * 1000
    c = dc.client()
    c.networks.CreateNetwork(net_pb.CreateNetworkRequest(network=net_pb.Network(name="bench", cidr="10.9.0.0/24")))
    spec = pb.VmSpec(name=VM, networks=["bench"], resources=pb.Resources(vcpus=1, memory_mib=128, network_mbps=10))
    c.vms.CreateVm(vm_pb.CreateVmRequest(spec=spec))
    ip = c.networks.ListPorts(net_pb.ListPortsRequest(network="bench")).ports[0].ip
    first = node_of(c, VM)
    a, b, peer = ([first] + [h for h in ("host-1", "host-2", "host-3") if h != first])
    c.networks.CreatePort(net_pb.CreatePortRequest(network="bench", name="peer", host=peer))
    c.networks.CreatePort(net_pb.CreatePortRequest(network="bench", name="sink", host=a))
    peer_ns = endpoint_ns(home, peer, "peer")
    wait(lambda: "NET-UP" in read_console(host_root(home, a), VM), 120, "guest network up")
    wait(lambda: probe.ping(peer_ns, ip, 2, 0.2).received > 0, 60, "guest answers the peer")

    sink_ip = next(p.ip for p in c.networks.ListPorts(net_pb.ListPortsRequest(network="bench")).ports if p.name == "sink")
    throughput = probe.iperf3(endpoint_ns(home, a, "sink"), peer_ns, sink_ip, seconds=3)

    results = []
    for i in range(runs):
        src = node_of(c, VM)
        dst = b if src == a else a
        caps = [probe.start_reply_capture(host_ns(home, h), ip, 60) for h in (src, dst)]
        time.sleep(0.3)  # tcpdump is listening
        ping = probe.start_ping(peer_ns, ip, count=300, interval_s=0.01)
        time.sleep(0.5)
        m = migrate(c, VM, dst)
        r = probe.finish_ping(ping)
        on_src, on_dst = (probe.finish_reply_capture(p) for p in caps)
        # A guest that stopped answering before the pings ended did not survive the move.
        ok = m.phase == mig_pb.MIGRATION_PHASE_COMPLETED and r.answering_at_end
        faults = [f for h in (src, dst) for f in probe.guest_faults(read_console(host_root(home, h), VM))]
        results.append({"run": i, "from": src, "to": dst, "ok": ok, "lost": r.lost, "duplicates": r.duplicates,
                        "blackout_ms": r.blackout_ms, **split(r, on_src, on_dst), "guest_fault": faults[0] if faults else "",
                        "downtime_ms": m.downtime_ms, "total_ms": m.total_ms})
        print(json.dumps(results[-1]), file=sys.stderr)
    good = [r for r in results if r["ok"]]

    def med(k: str) -> float:
        xs = [r[k] for r in good if r[k] is not None]
        return round(statistics.median(xs), 1) if xs else -1.0
    out = {
        "benchmark": "netcutover", "runs": runs, "failures": runs - len(good),
        "lost_packets_median": med("lost"), "lost_packets_max": max((r["lost"] for r in good), default=-1),
        "blackout_ms_median": med("blackout_ms"), "blackout_ms_max": max((r["blackout_ms"] for r in good), default=-1),
        "cutover_gap_ms_median": med("cutover_gap_ms"), "guest_silence_ms_median": med("guest_silence_ms"),
        "network_added_ms_median": med("network_added_ms"), "stale_answers_median": med("stale_answers"),
        "duplicates_median": med("duplicates"), "guest_downtime_ms_median": med("downtime_ms"),
        "migration_total_ms_median": med("total_ms"), "ping_interval_ms": 10,
        "tunnel_throughput_mbps": round(throughput, 1), "datacenter_setup_ms": round(setup_ms),
        "target_blackout_ms_median": TARGET_BLACKOUT_MS,
        # The run after which the guest's kernel reported a corrupted virtio ring or page (-1:
        # none): from then on its NIC is dead and the runs measure nothing of the switch.
        "guest_fault_after_run": next((r["run"] for r in results if r["guest_fault"]), -1),
        "targets_met": bool(good) and len(good) == runs and med("blackout_ms") <= TARGET_BLACKOUT_MS,
        "per_run": results,
    }
    c.channel.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.netcutover")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    if not 1 <= args.runs <= 100:
        ap.error("--runs must be between 1 and 100")
    home = Path(tempfile.mkdtemp(prefix="vdcos-netcutover-"))
    try:
        out = run(home, args.runs)
    finally:
        down(home, purge=True, keep_logs=False)
        shutil.rmtree(home, ignore_errors=True)  # down empties the datacenter's folder, not the folder
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
