"""Capacity planning in domain terms, for the API: what-if answers from the pure planner
(vdcos/planner) on the live cluster, and rebalancing plans run by the Rebalancer."""
from __future__ import annotations

from dataclasses import dataclass

from vdcos.apiserver.planner_pool import PlannerPool
from vdcos.controllers.rebalancer import Cluster, Rebalancer, node_loss
from vdcos.errors import FailedPrecondition, InvalidArgument, NotFound
from vdcos.model import DEFAULT_POLICY, QosClass, QosPolicy, Rebalance, RebalanceGoal, Resources, VmSpec, qos
from vdcos.planner.cluster import Headroom, HostType, Unit, capacity_numbers, headroom, hosts_needed
from vdcos.planner.exact import Plan
from vdcos.planner.problem import ProblemError
from vdcos.scheduler.cache import ClusterCache, NodeView
from vdcos.scheduler.core import Decision, Rejection
from vdcos.state.store import Store

# The shapes a report gives headroom for when none are asked (vCPUs, MiB), like a cloud's flavors.
STANDARD_SHAPES: tuple[tuple[str, Resources], ...] = (
    ("small", Resources(vcpus=1, memory_mib=2048)),
    ("medium", Resources(vcpus=2, memory_mib=4096)),
    ("large", Resources(vcpus=4, memory_mib=8192)),
    ("xlarge", Resources(vcpus=8, memory_mib=16384)),
)


@dataclass(frozen=True, slots=True)
class NodeReport:
    view: NodeView
    schedulable: bool
    allocatable: Resources
    vms: int


@dataclass(frozen=True, slots=True)
class CapacityReport:
    nodes: tuple[NodeReport, ...]
    stranded: dict[str, float]
    headroom: tuple[tuple[str, Resources, int, int], ...]  # (shape, size, guaranteed, burstable)
    imbalance: float


class Planning:
    def __init__(self, store: Store, cache: ClusterCache, rebalancer: Rebalancer, pool: PlannerPool) -> None:
        self.store = store
        self.cache = cache
        self.rebalancer = rebalancer
        self.pool = pool

    def _policy(self, name: str) -> QosPolicy:
        snap = self.cache.snapshot()
        policy = snap.policy(name)
        if policy is None:
            raise NotFound(f"QoS policy {name!r} not found")
        return policy

    def headroom(self, shape: Resources, policy: str = "", selector: tuple[tuple[str, str], ...] = (),
                 one_per_node: bool = False) -> list[Headroom]:
        snap = self.cache.snapshot()
        if policy:
            p = self._policy(policy)
            return [headroom(snap, qos.request(VmSpec("what-if", shape), p), p.qos_class, selector, one_per_node)]
        return [headroom(snap, shape, c, selector, one_per_node) for c in QosClass]

    def plan_hosts(self, vms: list[tuple[Resources, str, int]], types: list[HostType],
                   time_limit: float) -> tuple[Plan, list[str]]:
        shaped = []
        for shape, policy, count in vms:
            p = self._policy(policy or DEFAULT_POLICY.name)
            shaped.append((qos.request(VmSpec("what-if", shape), p), p.qos_class, count))
        try:
            return self.pool.run(hosts_needed, shaped, types, self.cache.config.overcommit, time_limit)
        except ProblemError as e:
            raise FailedPrecondition(str(e)) from e

    def node_loss(self, node: str) -> list[tuple[Unit, Decision | Rejection]]:
        if self.cache.node(node) is None:
            raise NotFound(f"node {node!r} not found")
        return node_loss(Cluster(self.store, self.cache, node), node)

    def report(self, shapes: list[tuple[str, Resources]] | None = None) -> CapacityReport:
        snap = self.cache.snapshot()
        # The numbers in a planner process; the rows of the node views here, meanwhile.
        numbers = self.pool.submit(capacity_numbers, snap, tuple(shapes or STANDARD_SHAPES))
        nodes = []
        for i, name in sorted(enumerate(snap.names), key=lambda x: x[1]):
            view = self.cache.node(name)
            if view is None:
                continue
            vms = sum(1 for e in view.allocation.entries if not e.is_storage)
            nodes.append(NodeReport(view, bool(snap.schedulable[i]), Resources.of(snap.allocatable[:, i]), vms))
        stranded_capacity, rows, load_imbalance = numbers()
        return CapacityReport(tuple(nodes), stranded_capacity, rows, load_imbalance)

    def plan_rebalance(self, goal: RebalanceGoal, max_moves: int, threshold: float, execute: bool) -> Rebalance:
        if goal is RebalanceGoal.EVACUATE:
            raise InvalidArgument("goal evacuate is per node: use DrainNode",
                                  details=[("goal", "evacuate is planned per node by DrainNode")])
        rb = self.rebalancer.plan(goal, max_moves, threshold)
        return self.rebalancer.start(rb) if execute else rb

    def drain(self, node: str, dry_run: bool) -> Rebalance:
        if self.cache.node(node) is None:
            raise NotFound(f"node {node!r} not found")
        rb = self.rebalancer.plan_drain(node)
        return rb if dry_run else self.rebalancer.start(rb)

