"""Domain value objects shared by every layer: the scheduler, the controllers, the node agent
and the state layer.

Everything here is a frozen dataclass or an Enum: no I/O, no protobuf. Mappings are stored as
sorted tuples of pairs so that the objects stay hashable and comparable. One module per domain
(resources, compute, migration, network, storage), the etcd codec, and the rules every layer
applies to them (`fit`: what fits a node; `qos`: what a policy reserves and enforces). Those
two are imported by their module name, as `vdcos.model.fit`; the value objects and the codec
are re-exported here, the names every layer uses.
"""
from vdcos.model.audit import AuditEntry
from vdcos.model.event import KINDS as EVENT_KINDS, ClusterEvent
from vdcos.model.usage import Amounts, VmUsage
from vdcos.model.codec import assignment_bytes, decode, dumps, encode
from vdcos.model.compute import (DEFAULT_POLICY, DEFAULT_SCORER_WEIGHTS, SNAPSHOT_CONSUMER, VOLUME_CONSUMER,
                                 AffinityPolicy, AllocEntry, Allocation, Assignment, NodeSpec, NodeStatus,
                                 PlacementGroup, PlacementRecord, Power, PowerState, QosPolicy, QosSettings,
                                 SchedulerConfig, Strategy, Sums, VmPhase, VmSpec, VmStatus, policy_named, snapshot_consumer, volume_consumer)
from vdcos.model.ha import (HaEvent, HaSettings, HostFailure, HostFailurePhase, RestartPolicy, RestartPriority,
                            restart_order)
from vdcos.model.migration import (ActiveMigrations, Migration, MigrationOptions, MigrationPhase, MigrationProgress,
                                   Rebalance, RebalanceGoal, RebalanceMode, RebalanceState, RebalanceStep)
from vdcos.model.network import Network, Nic, Port, PortKind
from vdcos.model.project import Limits, Project, Quota, QuotaViolation, Usage
from vdcos.model.resources import DIMENSIONS, Overcommit, Pairs, QosClass, Resources, pairs
from vdcos.model.storage import Disk, PoolKind, PoolStatus, Snapshot, Volume, VolumeState

__all__ = [
    "DEFAULT_POLICY", "HaEvent", "HaSettings", "HostFailure", "HostFailurePhase", "RestartPolicy",
    "RestartPriority", "restart_order", "DEFAULT_SCORER_WEIGHTS", "DIMENSIONS", "SNAPSHOT_CONSUMER", "VOLUME_CONSUMER",
    "ActiveMigrations", "AffinityPolicy", "AllocEntry", "Allocation", "Assignment", "Disk", "Migration",
    "MigrationOptions", "MigrationPhase", "MigrationProgress", "Network", "Nic", "NodeSpec", "NodeStatus",
    "Overcommit", "Pairs", "PlacementGroup", "PlacementRecord", "Power", "PowerState", "PoolKind", "PoolStatus", "Port", "PortKind",
    "QosClass", "QosPolicy", "QosSettings", "Rebalance", "RebalanceGoal", "RebalanceMode", "RebalanceState",
    "RebalanceStep", "Resources", "SchedulerConfig", "Snapshot", "Strategy", "Sums", "VmPhase", "VmSpec",
    "VmStatus", "Volume", "VolumeState", "assignment_bytes", "decode", "dumps", "encode", "pairs",
    "Limits", "Project", "Quota", "QuotaViolation", "Usage", "AuditEntry", "ClusterEvent", "EVENT_KINDS", "Amounts", "VmUsage",
    "policy_named", "snapshot_consumer", "volume_consumer",
]
