"""Capacity planning at datacenter scale, through the real gRPC API.

    python -m benchmarks.rebalance --hosts 10000 --vms 20000 --json FILE

Starts its own etcd and scheduler, registers N sim hosts (as benchmarks.placement does), places
VMs through the API with the spread strategy (a fragmented cluster: something to consolidate),
marks them running as their agents would, then times each planning call: consolidate and
balance plans, a drain plan, a node-loss simulation, headroom and the capacity report. Every
plan is replayed move by move against the fit function here, outside the server. Prints one
JSON object.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import emit, start_etcd, stop_etcd
from benchmarks.placement import create_policies, register_hosts, run_clients, start_scheduler, vm_specs


def mark_running(store: Any) -> int:
    """Write each placed VM's status as its node's agent would once the guest runs."""
    import json

    from vdcos.model import PlacementRecord, VmPhase, VmStatus, decode, dumps
    from vdcos.state import keys
    from vdcos.state.store import Put

    kvs, _ = store.get_prefix(keys.VMS)
    puts = []
    for kv in kvs:
        vm, kind = keys.split(kv.key, keys.VMS)
        if kind == "placement":
            node = decode(PlacementRecord, json.loads(kv.value)).node
            puts.append(Put(keys.vm_status(node, vm), dumps(VmStatus(VmPhase.RUNNING, node, "", time.time()))))
    for i in range(0, len(puts), 500):
        store.txn([], puts[i:i + 500])
    return len(puts)


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.rebalance")
    ap.add_argument("--hosts", type=int, default=10000)
    ap.add_argument("--vms", type=int, default=20000)
    ap.add_argument("--max-migrations", type=int, default=1000, help="cap per plan (the API's maximum)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import grpc

    from vdcos.planner.cluster import Move, verify
    from vdcos.scheduler.cache import ClusterCache
    from vdcos.controllers.rebalancer import Cluster
    from vdcos.state.etcd import EtcdStore
    from vdcos.process import stop_pid
    from vdcos.v1 import capacity_service_pb2 as cap_pb
    from vdcos.v1 import capacity_service_pb2_grpc as cap_grpc
    from vdcos.v1 import node_service_pb2 as node_pb
    from vdcos.v1 import node_service_pb2_grpc as node_grpc
    from vdcos.v1 import placement_service_pb2 as place_pb
    from vdcos.v1 import placement_service_pb2_grpc as place_grpc
    from vdcos.v1 import types_pb2 as pb

    base, etcd = start_etcd(secure=False)  # it times the planner; its few calls need no TLS to say so
    sched = None
    try:
        store = EtcdStore(etcd.endpoint, timeout=60)
        create_policies(store)
        register_hosts(store, args.hosts, args.seed)
        sched, addr, _ = start_scheduler(etcd, base)
        channel = grpc.insecure_channel(addr)
        cap = cap_grpc.CapacityServiceStub(channel)
        nodes = node_grpc.NodeServiceStub(channel)
        place = place_grpc.PlacementServiceStub(channel)
        place.UpdateSchedulerConfig(place_pb.UpdateSchedulerConfigRequest(config=pb.SchedulerConfig(
            strategy=pb.STRATEGY_SPREAD)))
        placed_run = run_clients(addr, "stream", vm_specs(args.vms, args.seed, "vm-"), 2, 4, 8)
        place.UpdateSchedulerConfig(place_pb.UpdateSchedulerConfigRequest(config=pb.SchedulerConfig(
            strategy=pb.STRATEGY_PACK)))
        running = mark_running(store)
        time.sleep(1.0)  # the scheduler's cache follows etcd by watch

        timeout = 300
        consolidate, t_cons = timed(lambda: cap.PlanRebalance(cap_pb.PlanRebalanceRequest(
            goal=cap_pb.REBALANCE_GOAL_CONSOLIDATE, max_migrations=args.max_migrations), timeout=timeout).rebalance)
        balance, t_bal = timed(lambda: cap.PlanRebalance(cap_pb.PlanRebalanceRequest(
            goal=cap_pb.REBALANCE_GOAL_BALANCE, max_migrations=args.max_migrations, imbalance_threshold=0.05),
            timeout=timeout).rebalance)
        busiest = max(((n.name, n.vm_count) for n in nodes.ListNodes(node_pb.ListNodesRequest()).nodes),
                      key=lambda x: x[1])[0]
        drain, t_drain = timed(lambda: nodes.DrainNode(node_pb.DrainNodeRequest(name=busiest, dry_run=True),
                                                       timeout=timeout).rebalance)
        loss, t_loss = timed(lambda: cap.SimulateNodeLoss(cap_pb.SimulateNodeLossRequest(node=busiest),
                                                          timeout=timeout))
        head, t_head = timed(lambda: cap.GetHeadroom(cap_pb.GetHeadroomRequest(
            shape=pb.Resources(vcpus=4, memory_mib=8192)), timeout=timeout).headroom)
        report, t_report = timed(lambda: cap.GetCapacityReport(cap_pb.GetCapacityReportRequest(), timeout=timeout))

        # Every plan replayed here, move by move, against the same records the server planned on.
        cache = ClusterCache(store).start()
        cluster = Cluster(store, cache)
        safe = True
        for rb in (consolidate, balance, drain):
            try:
                verify(cluster.snap, cluster.units, tuple(Move(s.vm, s.source_node, s.target_node, s.reason)
                                                          for s in rb.steps))
            except ValueError:
                safe = False
        cache.stop()
        result: dict[str, Any] = {
            "benchmark": "rebalance",
            "hosts": args.hosts,
            "vms": args.vms,
            "placed": placed_run["codes"].get("OK", 0),
            "running": running,
            "consolidate_plan_s": round(t_cons, 2),
            "consolidate_moves": len(consolidate.steps),
            "consolidate_hosts_in_use": [consolidate.hosts_in_use_before, consolidate.hosts_in_use_after],
            "consolidate_hosts_freed": len(consolidate.hosts_freed),
            "hosts_freed_per_move": round(len(consolidate.hosts_freed) / max(len(consolidate.steps), 1), 3),
            "balance_plan_s": round(t_bal, 2),
            "balance_moves": len(balance.steps),
            "balance_std_dev": [round(balance.imbalance_before, 4), round(balance.imbalance_after, 4)],
            "drain_plan_s": round(t_drain, 2),
            "drain_vms": len(drain.steps) + len(drain.unmovable),
            "drain_unmovable": len(drain.unmovable),
            "node_loss_s": round(t_loss, 2),
            "node_loss_replaced": loss.replaced,
            "node_loss_lost": loss.lost,
            "headroom_s": round(t_head, 3),
            "headroom_4cpu_8gib": {cap_pb.Headroom.DESCRIPTOR.fields_by_name["qos_class"].enum_type
                                   .values_by_number[h.qos_class].name: h.count for h in head},
            "report_s": round(t_report, 2),
            "report_nodes": len(report.nodes),
            "every_step_safe": safe,
            "max_migrations": args.max_migrations,
        }
        emit(result, args.json)
        channel.close()
        store.close()
        return 0
    finally:
        if sched is not None:
            stop_pid(sched.pid, sched)
        stop_etcd(base, etcd)


if __name__ == "__main__":
    sys.exit(main())
