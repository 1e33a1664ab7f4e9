"""protobuf <-> domain. Generated *_pb2 types go no further than this module and the servicers."""
from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from vdcos.apiserver.operations import CapacitySummary, VmRecord
from vdcos.apiserver.planning import CapacityReport
from vdcos.model import (AffinityPolicy, HaEvent, HaSettings, HostFailure, Migration, MigrationOptions, MigrationPhase,
                         Network, Overcommit, PlacementRecord, PoolKind, PoolStatus, Port, PortKind, Power,
                         PowerState, QosClass, QosPolicy, Rebalance, RebalanceGoal, RebalanceMode, RebalanceState,
                         Resources, RestartPolicy, RestartPriority, SchedulerConfig, Snapshot, Strategy, VmPhase, VmSpec, Volume, VolumeState, pairs)
from vdcos.model.fit import allocatable, demand_vector
from vdcos.model.project import QUOTA_FIELDS, Limits, Project, Quota, Usage
from vdcos.planner.cluster import Headroom
from vdcos.scheduler.cache import NodeView
from vdcos.scheduler.core import Candidate, Rejection
from vdcos.security.tokens import TokenRecord
from vdcos.v1 import capacity_service_pb2 as cap_pb
from vdcos.v1 import ha_service_pb2 as ha_pb
from vdcos.v1 import migration_service_pb2 as mig_pb
from vdcos.v1 import network_service_pb2 as net_pb
from vdcos.v1 import project_service_pb2 as proj_pb
from vdcos.v1 import token_service_pb2 as tok_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import volume_service_pb2 as vol_pb

QOS_TO_PB = {QosClass.GUARANTEED: pb.QOS_CLASS_GUARANTEED, QosClass.BURSTABLE: pb.QOS_CLASS_BURSTABLE,
             QosClass.BEST_EFFORT: pb.QOS_CLASS_BEST_EFFORT}
QOS_FROM_PB = {v: k for k, v in QOS_TO_PB.items()}
AFF_TO_PB = {AffinityPolicy.NONE: pb.AFFINITY_POLICY_UNSPECIFIED, AffinityPolicy.AFFINITY: pb.AFFINITY_POLICY_AFFINITY,
             AffinityPolicy.ANTI_AFFINITY: pb.AFFINITY_POLICY_ANTI_AFFINITY,
             AffinityPolicy.SOFT_AFFINITY: pb.AFFINITY_POLICY_SOFT_AFFINITY,
             AffinityPolicy.SOFT_ANTI_AFFINITY: pb.AFFINITY_POLICY_SOFT_ANTI_AFFINITY}
AFF_FROM_PB = {v: k for k, v in AFF_TO_PB.items()}
STRATEGY_TO_PB = {Strategy.PACK: pb.STRATEGY_PACK, Strategy.SPREAD: pb.STRATEGY_SPREAD}
STRATEGY_FROM_PB = {v: k for k, v in STRATEGY_TO_PB.items()}
REBALANCE_MODE_TO_PB = {RebalanceMode.MANUAL: pb.REBALANCE_MODE_MANUAL,
                        RebalanceMode.AUTOMATIC: pb.REBALANCE_MODE_AUTOMATIC}
REBALANCE_MODE_FROM_PB = {v: k for k, v in REBALANCE_MODE_TO_PB.items()}
RESTART_POLICY_TO_PB = {RestartPolicy.ALWAYS: pb.RESTART_POLICY_ALWAYS,
                        RestartPolicy.ON_HOST_FAILURE: pb.RESTART_POLICY_ON_HOST_FAILURE,
                        RestartPolicy.NEVER: pb.RESTART_POLICY_NEVER}
RESTART_POLICY_FROM_PB = {**{v: k for k, v in RESTART_POLICY_TO_PB.items()},
                          pb.RESTART_POLICY_UNSPECIFIED: RestartPolicy.ALWAYS}
PRIORITY_TO_PB = {RestartPriority.HIGH: pb.RESTART_PRIORITY_HIGH, RestartPriority.MEDIUM: pb.RESTART_PRIORITY_MEDIUM,
                  RestartPriority.LOW: pb.RESTART_PRIORITY_LOW}
PRIORITY_FROM_PB = {**{v: k for k, v in PRIORITY_TO_PB.items()}, pb.RESTART_PRIORITY_UNSPECIFIED: RestartPriority.MEDIUM}
PHASE_TO_PB = {VmPhase.SCHEDULED: pb.VM_PHASE_SCHEDULED, VmPhase.RUNNING: pb.VM_PHASE_RUNNING,
               VmPhase.STOPPED: pb.VM_PHASE_STOPPED, VmPhase.FAILED: pb.VM_PHASE_FAILED,
               VmPhase.UNKNOWN: pb.VM_PHASE_UNKNOWN, VmPhase.PAUSED: pb.VM_PHASE_PAUSED,
               VmPhase.SHELVED: pb.VM_PHASE_SHELVED}
POWER_TO_PB = {PowerState.ON: pb.POWER_STATE_ON, PowerState.OFF: pb.POWER_STATE_OFF,
               PowerState.PAUSED: pb.POWER_STATE_PAUSED, PowerState.SHELVED: pb.POWER_STATE_SHELVED}
POWER_FROM_PB = {**{v: k for k, v in POWER_TO_PB.items()}, pb.POWER_STATE_UNSPECIFIED: PowerState.ON}


def ts(seconds: float, out: Timestamp | None = None) -> Timestamp:
    t = Timestamp() if out is None else out
    if seconds:
        t.FromNanoseconds(int(seconds * 1e9))
    else:
        t.SetInParent()
    return t


# The conversions on the placement path fill `out`, a field of the message being answered,
# when given: a message built apart is copied again each time it is handed to its parent.
def resources_to_pb(r: Resources, out: pb.Resources | None = None) -> pb.Resources:
    m = pb.Resources() if out is None else out
    m.vcpus, m.memory_mib, m.disk_gib, m.network_mbps, m.disk_iops = (
        r.vcpus, r.memory_mib, r.disk_gib, r.network_mbps, r.disk_iops)
    m.SetInParent()
    return m


def resources_from_pb(m: pb.Resources) -> Resources:
    return Resources(m.vcpus, m.memory_mib, m.disk_gib, m.network_mbps, m.disk_iops)


def vm_spec_from_pb(m: pb.VmSpec) -> VmSpec:
    return VmSpec(name=m.name, resources=resources_from_pb(m.resources), qos_policy=m.qos_policy,
                  placement_group=m.placement_group, group_policy=AFF_FROM_PB[m.group_policy],
                  node_selector=pairs(dict(m.node_selector)), networks=tuple(m.networks),
                  volumes=tuple(m.volumes), image=m.image, ha=ha_from_pb(m.ha), project=m.project,
                  power=Power(POWER_FROM_PB[m.power_state]) if m.power_state else Power())


def ha_from_pb(m: pb.HaSettings) -> HaSettings:
    return HaSettings(RESTART_POLICY_FROM_PB[m.restart_policy], PRIORITY_FROM_PB[m.priority],
                      m.admission if m.HasField("admission") else True)


def vm_spec_to_pb(s: VmSpec, out: pb.VmSpec | None = None) -> pb.VmSpec:
    m = pb.VmSpec() if out is None else out
    m.name, m.qos_policy, m.placement_group, m.group_policy, m.image, m.project = (
        s.name, s.qos_policy, s.group_in_project, AFF_TO_PB[s.group_policy], s.image, s.project)
    resources_to_pb(s.resources, m.resources)
    if s.node_selector:
        m.node_selector.update(dict(s.node_selector))
    if s.networks:
        m.networks.extend(s.networks)
    if s.volumes:
        m.volumes.extend(s.volumes)
    m.ha.restart_policy, m.ha.priority, m.ha.admission = (
        RESTART_POLICY_TO_PB[s.ha.restart_policy], PRIORITY_TO_PB[s.ha.priority], s.ha.admission)
    m.power_state, m.reboots = POWER_TO_PB[s.power.state], s.power.reboots
    m.SetInParent()
    return m


def placement_to_pb(p: PlacementRecord, out: pb.Placement | None = None) -> pb.Placement:
    m = pb.Placement() if out is None else out
    q = p.qos
    (m.node, m.qos_class, m.cpu_shares, m.cpu_quota_us, m.cpu_period_us, m.memory_limit_mib, m.disk_iops_limit,
     m.disk_mbps_limit, m.network_mbps_limit, m.score, m.attempts, m.epoch) = (
        p.node, QOS_TO_PB[q.qos_class], q.cpu_shares, q.cpu_quota_us, q.cpu_period_us, q.memory_limit_mib,
        q.disk_iops_limit, q.disk_mbps_limit, q.network_mbps_limit, p.score, p.attempts, p.epoch)
    resources_to_pb(p.reserved, m.reserved)
    ts(p.placed_at, m.placed_at)
    return m


def vm_to_pb(r: VmRecord, out: pb.Vm | None = None) -> pb.Vm:
    m = pb.Vm() if out is None else out
    vm_spec_to_pb(r.spec, m.spec)
    if r.placement:
        placement_to_pb(r.placement, m.placement)
    s, st = r.status, m.status
    st.phase, st.node, st.message, st.cpu_time_ns, st.memory_used_mib, st.reboots = (
        PHASE_TO_PB[s.phase], s.node, s.message, s.cpu_time_ns, s.memory_used_mib, s.reboots)
    ts(s.updated_at, st.updated_at)
    return m


def node_to_pb(v: NodeView, config: SchedulerConfig, ha_state: str = "") -> pb.Node:
    cap = demand_vector(v.spec.capacity)[:, None]
    ready = v.status is not None and v.status.ready
    return pb.Node(
        name=v.spec.name, capacity=resources_to_pb(v.spec.capacity), labels=dict(v.spec.labels),
        state=pb.NODE_STATE_READY if ready else pb.NODE_STATE_NOT_READY, cordoned=v.cordoned,
        allocatable=resources_to_pb(Resources.of(allocatable(cap, config.overcommit)[:, 0])),
        guaranteed=resources_to_pb(v.allocation.guaranteed), committed=resources_to_pb(v.allocation.committed),
        vm_count=sum(not e.is_storage for e in v.allocation.entries), last_heartbeat=ts(v.status.heartbeat if v.status else 0),
        driver=v.spec.driver, used=resources_to_pb(v.status.used if v.status else Resources()), ha_state=ha_state)


def policy_to_pb(p: QosPolicy) -> pb.QosPolicy:
    return pb.QosPolicy(name=p.name, qos_class=QOS_TO_PB[p.qos_class], cpu_weight=p.cpu_weight,
                        cpu_limit_percent=p.cpu_limit_percent, memory_limit_ratio=p.memory_limit_ratio,
                        disk_iops_limit=p.disk_iops_limit, disk_mbps_limit=p.disk_mbps_limit,
                        network_mbps_limit=p.network_mbps_limit, description=p.description,
                        disk_iops_reservation=p.disk_iops_reservation)


def policy_from_pb(m: pb.QosPolicy) -> QosPolicy:
    return QosPolicy(name=m.name, qos_class=QOS_FROM_PB[m.qos_class], cpu_weight=m.cpu_weight or 100,
                     cpu_limit_percent=m.cpu_limit_percent, memory_limit_ratio=m.memory_limit_ratio,
                     disk_iops_limit=m.disk_iops_limit, disk_mbps_limit=m.disk_mbps_limit,
                     network_mbps_limit=m.network_mbps_limit, description=m.description,
                     disk_iops_reservation=m.disk_iops_reservation)


def config_to_pb(c: SchedulerConfig) -> pb.SchedulerConfig:
    o = c.overcommit
    return pb.SchedulerConfig(
        overcommit=pb.Overcommit(vcpus=o.vcpus, memory_mib=o.memory_mib, disk_gib=o.disk_gib,
                                 network_mbps=o.network_mbps, disk_iops=o.disk_iops),
        strategy=STRATEGY_TO_PB[c.strategy], scorer_weights={k: float(v) for k, v in c.scorer_weights},
        max_migrations_per_host=c.max_migrations_per_host, max_migrations=c.max_migrations,
        rebalance_mode=REBALANCE_MODE_TO_PB[c.rebalance_mode], imbalance_threshold=c.imbalance_threshold,
        rebalance_max_moves=c.rebalance_max_moves, rebalance_interval_s=c.rebalance_interval_s,
        percentage_of_nodes_to_score=c.percentage_of_nodes_to_score,
        ha_host_failures_to_tolerate=c.ha_host_failures_to_tolerate)


def config_from_pb(m: pb.SchedulerConfig, base: SchedulerConfig) -> SchedulerConfig:
    """Fields left at zero keep the current value (partial update)."""
    o, b = m.overcommit, base.overcommit
    over = Overcommit(o.vcpus or b.vcpus, o.memory_mib or b.memory_mib, o.disk_gib or b.disk_gib,
                      o.network_mbps or b.network_mbps, o.disk_iops or b.disk_iops)
    weights = dict(base.scorer_weights)
    weights.update({k: repr(float(v)) for k, v in m.scorer_weights.items()})
    strategy = STRATEGY_FROM_PB.get(m.strategy, base.strategy)
    return SchedulerConfig(over, strategy, pairs(weights),
                           m.max_migrations_per_host or base.max_migrations_per_host,
                           m.max_migrations or base.max_migrations,
                           REBALANCE_MODE_FROM_PB.get(m.rebalance_mode, base.rebalance_mode),
                           m.imbalance_threshold or base.imbalance_threshold,
                           m.rebalance_max_moves or base.rebalance_max_moves,
                           m.rebalance_interval_s or base.rebalance_interval_s,
                           m.percentage_of_nodes_to_score if m.HasField("percentage_of_nodes_to_score")
                           else base.percentage_of_nodes_to_score,
                           m.ha_host_failures_to_tolerate if m.HasField("ha_host_failures_to_tolerate")
                           else base.ha_host_failures_to_tolerate)


def rejection_to_pb(r: Rejection) -> pb.PlacementRejection:
    return pb.PlacementRejection(
        vm=r.vm, nodes_total=r.nodes_total, nodes_feasible=r.nodes_feasible, retryable=r.retryable,
        summary=r.summary,
        filters=[pb.FilterOutcome(filter=f.filter, nodes_ruled_out=f.nodes_ruled_out, reason=f.reason)
                 for f in r.filters],
        dimensions=[pb.DimensionShortfall(dimension=d.dimension, pool=d.pool, nodes_short=d.nodes_short,
                                          requested=d.requested, largest_free=d.largest_free,
                                          largest_free_node=d.largest_free_node) for d in r.dimensions])


def candidate_to_pb(c: Candidate) -> pb.Candidate:
    return pb.Candidate(node=c.node, score=c.score, scores=dict(c.scores))


def capacity_to_pb(c: CapacitySummary) -> cap_pb.GetCapacitySummaryResponse:
    free_g = c.capacity - c.guaranteed
    free_c = c.allocatable - c.committed
    return cap_pb.GetCapacitySummaryResponse(
        nodes_total=c.nodes_total, nodes_ready=c.nodes_ready, nodes_cordoned=c.nodes_cordoned,
        capacity=resources_to_pb(c.capacity), allocatable=resources_to_pb(c.allocatable),
        guaranteed=resources_to_pb(c.guaranteed), committed=resources_to_pb(c.committed),
        free_guaranteed=resources_to_pb(free_g), free_committed=resources_to_pb(free_c),
        vms_by_class=c.vms_by_class, vms_total=sum(c.vms_by_class.values()))


MIG_PHASE_TO_PB = {p: getattr(mig_pb, f"MIGRATION_PHASE_{p.name}") for p in MigrationPhase}


def migration_options_from_pb(m: mig_pb.MigrationOptions) -> MigrationOptions:
    return MigrationOptions(max_downtime_ms=m.max_downtime_ms or MigrationOptions().max_downtime_ms,
                            bandwidth_mibps=m.max_bandwidth_mibps, auto_converge=not m.disable_auto_converge,
                            postcopy_after_iterations=m.postcopy_after_iterations)


def migration_to_pb(m: Migration) -> mig_pb.Migration:
    o, p = m.options, m.progress
    return mig_pb.Migration(
        id=m.id, vm=m.vm, source_node=m.source, target_node=m.destination, phase=MIG_PHASE_TO_PB[m.phase],
        options=mig_pb.MigrationOptions(max_downtime_ms=o.max_downtime_ms, max_bandwidth_mibps=o.bandwidth_mibps,
                                        disable_auto_converge=not o.auto_converge,
                                        postcopy_after_iterations=o.postcopy_after_iterations),
        progress=mig_pb.MigrationProgress(
            stage=p.phase, memory_total_bytes=p.memory_total_bytes, memory_processed_bytes=p.memory_processed_bytes,
            memory_remaining_bytes=p.memory_remaining_bytes, iteration=p.iteration,
            expected_downtime_ms=p.expected_downtime_ms, elapsed_ms=p.elapsed_ms),
        cancel_requested=m.cancel_requested, downtime_ms=m.downtime_ms, total_ms=m.total_ms, message=m.message,
        created_at=ts(m.created_at), updated_at=ts(m.updated_at), project=m.project)


def network_to_pb(n: Network) -> net_pb.Network:
    return net_pb.Network(name=n.name, vni=n.vni, cidr=n.cidr, created_at=ts(n.created_at), project=n.project)


PORT_KIND_TO_PB = {PortKind.VM: net_pb.PORT_KIND_VM, PortKind.ENDPOINT: net_pb.PORT_KIND_ENDPOINT}


def port_to_pb(p: Port, bound: list[str]) -> net_pb.Port:
    return net_pb.Port(name=p.name, network=p.network, mac=p.mac, ip=p.ip, prefix_length=p.prefix,
                       kind=PORT_KIND_TO_PB[p.kind], host=p.host, bound_hosts=bound, max_mbps=p.mbps_limit)


POOL_KIND_TO_PB = {PoolKind.LOCAL: vol_pb.POOL_KIND_LOCAL, PoolKind.SHARED: vol_pb.POOL_KIND_SHARED}
POOL_KIND_FROM_PB = {v: k for k, v in POOL_KIND_TO_PB.items()}
VOLUME_STATE_TO_PB = {VolumeState.CREATING: vol_pb.VOLUME_STATE_CREATING,
                      VolumeState.AVAILABLE: vol_pb.VOLUME_STATE_AVAILABLE, VolumeState.FAILED: vol_pb.VOLUME_STATE_FAILED}


def volume_to_pb(v: Volume) -> vol_pb.Volume:
    return vol_pb.Volume(name=v.name, pool=POOL_KIND_TO_PB[v.pool], size_gib=v.size_gib, host=v.host, image=v.image,
                         vm=v.vm, state=VOLUME_STATE_TO_PB[v.state], path=v.path, message=v.message,
                         created_at=ts(v.created_at), migration=v.migration, moving_to=v.moving_to,
                         target_path=v.target_path, snapshot=v.snapshot, snapshotting=v.snapshotting,
                         project=v.project, open_on=v.open_on)


def snapshot_to_pb(s: Snapshot) -> vol_pb.Snapshot:
    return vol_pb.Snapshot(name=s.name, volume=s.volume, pool=POOL_KIND_TO_PB[s.pool], host=s.host,
                           size_gib=s.size_gib, image=s.image, state=VOLUME_STATE_TO_PB[s.state], path=s.path,
                           message=s.message, created_at=ts(s.created_at), live=s.live, project=s.project)


def pool_to_pb(p: PoolStatus) -> vol_pb.Pool:
    return vol_pb.Pool(host=p.host, kind=POOL_KIND_TO_PB[p.pool], path=p.path, capacity_gib=p.capacity_gib,
                       available_gib=p.available_gib, volumes=p.volumes)


# --- capacity planning -------------------------------------------------------------------
REBALANCE_GOAL_TO_PB = {g: getattr(cap_pb, f"REBALANCE_GOAL_{g.name}") for g in RebalanceGoal}
REBALANCE_GOAL_FROM_PB = {v: k for k, v in REBALANCE_GOAL_TO_PB.items()}
REBALANCE_STATE_TO_PB = {s: getattr(cap_pb, f"REBALANCE_STATE_{s.name}") for s in RebalanceState}


def headroom_to_pb(h: Headroom) -> cap_pb.Headroom:
    return cap_pb.Headroom(qos_class=QOS_TO_PB[h.qos_class], count=min(h.count, 2**31 - 1), unbounded=h.unbounded,
                           per_node={n: min(c, 2**31 - 1) for n, c in h.per_node}, limited_by=dict(h.limited_by))


def rebalance_to_pb(r: Rebalance) -> cap_pb.Rebalance:
    return cap_pb.Rebalance(
        id=r.id, goal=REBALANCE_GOAL_TO_PB[r.goal], state=REBALANCE_STATE_TO_PB[r.state],
        steps=[cap_pb.RebalanceStep(vm=s.vm, source_node=s.source, target_node=s.target, reason=s.reason,
                                    state=s.state, migration_id=s.migration, message=s.message) for s in r.steps],
        hosts_freed=list(r.hosts_freed), hosts_in_use_before=r.hosts_in_use_before,
        hosts_in_use_after=r.hosts_in_use_after, imbalance_before=r.imbalance_before,
        imbalance_after=r.imbalance_after, unmovable=dict(r.unmovable), message=r.message, node=r.node,
        automatic=r.automatic, created_at=r.created_at)


def report_to_pb(r: CapacityReport, summary: CapacitySummary) -> cap_pb.GetCapacityReportResponse:
    return cap_pb.GetCapacityReportResponse(
        nodes=[cap_pb.NodeUtilization(
            node=n.view.spec.name, schedulable=n.schedulable, capacity=resources_to_pb(n.view.spec.capacity),
            allocatable=resources_to_pb(n.allocatable), guaranteed=resources_to_pb(n.view.allocation.guaranteed),
            committed=resources_to_pb(n.view.allocation.committed), vms=n.vms) for n in r.nodes],
        stranded=r.stranded,
        headroom=[cap_pb.ShapeHeadroom(name=name, resources=resources_to_pb(shape), guaranteed=g, burstable=b)
                  for name, shape, g, b in r.headroom],
        imbalance=r.imbalance, summary=capacity_to_pb(summary))


def host_failure_to_pb(f: HostFailure) -> ha_pb.HostFailure:
    return ha_pb.HostFailure(
        node=f.node, phase=f.phase.value, declared_at=ts(f.declared_at), restart_after=ts(f.restart_after),
        message=f.message, restarted=list(f.restarted), still_running=list(f.still_running),
        lost=[ha_pb.VmReason(vm=v, reason=r) for v, r in f.lost],
        pending=[ha_pb.VmReason(vm=v, reason=r) for v, r in f.pending])


def ha_event_to_pb(e: HaEvent) -> ha_pb.HaEvent:
    return ha_pb.HaEvent(at=ts(e.at), kind=e.kind, node=e.node, vm=e.vm, epoch=e.epoch, message=e.message)


def token_to_pb(r: TokenRecord) -> tok_pb.Token:
    return tok_pb.Token(accessor=r.accessor, name=r.name, role=r.role, created_at=ts(r.created_at),
                        expires_at=ts(r.expires_at) if r.expires_at else None, revoked=r.revoked,
                        project=r.project, certificate=r.certificate)


def project_to_pb(p: Project) -> proj_pb.Project:
    return proj_pb.Project(name=p.name, description=p.description, created_at=ts(p.created_at))


def amounts_to_pb(a: Limits | Usage) -> proj_pb.QuotaAmounts:
    return proj_pb.QuotaAmounts(**{f: getattr(a, f) for f in QUOTA_FIELDS})


def quota_to_pb(q: Quota) -> proj_pb.Quota:
    return proj_pb.Quota(project=q.project, limits=amounts_to_pb(q.limits), used=amounts_to_pb(q.used))
