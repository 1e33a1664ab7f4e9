"""`vdcos policy apply | list | delete` and `vdcos config show | set`."""
from __future__ import annotations

import argparse
import json

from google.protobuf import json_format

from vdcos.cli.common import Subparsers, UsageError, connect, emit, enum_name, table, yaml_documents
from vdcos.v1 import placement_service_pb2 as place_pb
from vdcos.v1 import qos_policy_service_pb2 as pol_pb
from vdcos.v1 import types_pb2 as pb

POLICY_FIELDS = {"name": str, "qos_class": str, "cpu_weight": int, "cpu_limit_percent": int,
                 "memory_limit_ratio": (int, float), "disk_iops_limit": int, "disk_mbps_limit": int,
                 "network_mbps_limit": int, "disk_iops_reservation": int, "description": str}


QOS_CLASSES = {"guaranteed": pb.QOS_CLASS_GUARANTEED, "burstable": pb.QOS_CLASS_BURSTABLE,
               "best-effort": pb.QOS_CLASS_BEST_EFFORT}


def load_policies(path: str) -> list[pb.QosPolicy]:
    out = []
    for where, doc in yaml_documents(path, "QosPolicy"):
        for k, v in doc.items():
            want = POLICY_FIELDS.get(k)
            if want is None:
                raise UsageError(f"{where}: {k}: unknown field (known: {', '.join(POLICY_FIELDS)})")
            if isinstance(v, bool) or not isinstance(v, want):
                raise UsageError(f"{where}: {k}: expected {getattr(want, '__name__', 'number')}, got {v!r}")
        cls = doc.pop("qos_class", None)
        if cls not in QOS_CLASSES:
            raise UsageError(f"{where}: qos_class: must be one of {', '.join(QOS_CLASSES)}, got {cls!r}")
        out.append(pb.QosPolicy(qos_class=QOS_CLASSES[cls], **doc))
    return out


def cmd_policy(args: argparse.Namespace) -> int:
    with connect(args) as c:
        if args.policy_command == "apply":
            policies = load_policies(args.file)
            results = [c.policies.CreateQosPolicy(pol_pb.CreateQosPolicyRequest(policy=p, update_existing=True),
                                                  timeout=args.timeout) for p in policies]
            if args.output == "json":
                print(json.dumps([json_format.MessageToDict(r, preserving_proto_field_name=True) for r in results]))
            else:
                for r in results:
                    print(f"qospolicy/{r.policy.name} {'created' if r.created else 'configured'}")
        elif args.policy_command == "list":
            lr = c.policies.ListQosPolicies(pol_pb.ListQosPoliciesRequest(), timeout=args.timeout)
            emit(args, lr, lambda: table(
                ["NAME", "CLASS", "CPU_WEIGHT", "CPU_LIMIT%", "MEM_LIMIT_RATIO", "NET_MBPS", "IOPS(resv/limit)",
                 "DESCRIPTION"],
                [[p.name, enum_name(pb.QosClass, p.qos_class, "QOS_CLASS_"), p.cpu_weight, p.cpu_limit_percent,
                  p.memory_limit_ratio, p.network_mbps_limit, f"{p.disk_iops_reservation}/{p.disk_iops_limit}",
                  p.description] for p in lr.policies]))
        elif args.policy_command == "delete":
            c.policies.DeleteQosPolicy(pol_pb.DeleteQosPolicyRequest(name=args.name), timeout=args.timeout)
            print(f"qospolicy/{args.name} deleted")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    with connect(args) as c:
        if args.config_command == "set":
            cfg = pb.SchedulerConfig(overcommit=pb.Overcommit(
                vcpus=args.cpu_overcommit or 0, memory_mib=args.memory_overcommit or 0,
                disk_gib=args.disk_overcommit or 0, network_mbps=args.network_overcommit or 0,
                disk_iops=args.iops_overcommit or 0),
                strategy={"pack": pb.STRATEGY_PACK, "spread": pb.STRATEGY_SPREAD}.get(args.strategy or "", 0),
                max_migrations_per_host=args.max_migrations_per_host or 0, max_migrations=args.max_migrations or 0,
                rebalance_mode={"manual": pb.REBALANCE_MODE_MANUAL,
                                "automatic": pb.REBALANCE_MODE_AUTOMATIC}.get(args.rebalance or "", 0),
                imbalance_threshold=args.imbalance_threshold or 0, rebalance_max_moves=args.rebalance_max_moves or 0,
                rebalance_interval_s=args.rebalance_interval or 0,
                percentage_of_nodes_to_score=args.nodes_to_score,
                ha_host_failures_to_tolerate=args.ha_host_failures_to_tolerate)
            conf = c.placement.UpdateSchedulerConfig(place_pb.UpdateSchedulerConfigRequest(config=cfg),
                                                     timeout=args.timeout).config
        else:
            conf = c.placement.GetSchedulerConfig(place_pb.GetSchedulerConfigRequest(), timeout=args.timeout).config
    emit(args, conf, lambda: json.dumps(json_format.MessageToDict(conf, preserving_proto_field_name=True), indent=2))
    return 0


def register(sub: Subparsers) -> None:
    pol = sub.add_parser("policy", help="QoS policies")
    psub = pol.add_subparsers(dest="policy_command", required=True)
    psub.add_parser("apply").add_argument("-f", "--file", required=True, help="YAML file, '-' for stdin")
    psub.add_parser("list")
    psub.add_parser("delete").add_argument("name")
    pol.set_defaults(fn=cmd_policy)

    conf = sub.add_parser("config", help="scheduler configuration")
    csub = conf.add_subparsers(dest="config_command", required=True)
    csub.add_parser("show")
    cs = csub.add_parser("set")
    for dim in ("cpu", "memory", "disk", "network", "iops"):
        cs.add_argument(f"--{dim}-overcommit", type=float)
    cs.add_argument("--strategy", choices=["pack", "spread"])
    cs.add_argument("--max-migrations-per-host", type=int, help="live migrations in flight per host")
    cs.add_argument("--max-migrations", type=int, help="live migrations in flight in the cluster")
    cs.add_argument("--rebalance", choices=["manual", "automatic"],
                    help="automatic: the scheduler balances by itself when the load's std. dev. is over the threshold")
    cs.add_argument("--imbalance-threshold", type=float, help="std. dev. of host load tolerated (0..1)")
    cs.add_argument("--rebalance-max-moves", type=int, help="most migrations one automatic round plans")
    cs.add_argument("--rebalance-interval", type=int, metavar="SECONDS", help="between automatic rounds")
    cs.add_argument("--ha-host-failures-to-tolerate", type=int, metavar="N",
                    help="HA admission control: refuse placements that would leave too little room to restart "
                         "every protected VM after N host failures (0 = off)")
    cs.add_argument("--nodes-to-score", type=int, metavar="PERCENT",
                    help="share of the nodes one placement scores, 1-100; 0 = adaptive (5%% on large clusters)")
    conf.set_defaults(fn=cmd_config)

