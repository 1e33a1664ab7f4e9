"""VMs, nodes, QoS policies, the scheduler's configuration and what is placed where."""
from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass, field, replace

from vdcos.model.ha import HaSettings
from vdcos.model.migration import RebalanceMode
from vdcos.model.resources import DIMENSIONS, Overcommit, Pairs, QosClass, Resources, pairs


class AffinityPolicy(enum.Enum):
    NONE = "none"
    AFFINITY = "affinity"
    ANTI_AFFINITY = "anti-affinity"
    SOFT_AFFINITY = "soft-affinity"
    SOFT_ANTI_AFFINITY = "soft-anti-affinity"

    @property
    def hard(self) -> bool:
        return self in (AffinityPolicy.AFFINITY, AffinityPolicy.ANTI_AFFINITY)

    @property
    def attracts(self) -> bool:
        return self in (AffinityPolicy.AFFINITY, AffinityPolicy.SOFT_AFFINITY)


class Strategy(enum.Enum):
    PACK = "pack"
    SPREAD = "spread"


class VmPhase(enum.Enum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    UNKNOWN = "unknown"
    PAUSED = "paused"    # suspended: its vCPUs stopped, its memory kept
    SHELVED = "shelved"  # stopped with its reservation released: on no host


class PowerState(enum.Enum):
    """What the owner wants the VM to be doing; the agent makes the hypervisor agree."""
    ON = "on"
    OFF = "off"
    PAUSED = "paused"
    # Off, and holding nothing on any host (Nova's shelve-offload): starting it places it again.
    SHELVED = "shelved"


@dataclass(frozen=True, slots=True)
class Power:
    """A VM's desired power state (part of its spec, so every assignment carries it: the agent
    reconciles it after a restart, HA moves a stopped VM without starting it)."""

    state: PowerState = PowerState.ON
    # Reboots asked for so far: a host's agent reboots the guest while the count it reported
    # (VmStatus.reboots) is behind. A counter, not a flag: two reboots asked are two reboots.
    reboots: int = 0
    # The last stop or reboot skips asking the guest (power cut, reset button).
    hard: bool = False
    # A graceful stop: how long the guest has to power off after the ACPI request before it
    # is forced off.
    stop_timeout_s: int = 60


DEFAULT_SCORER_WEIGHTS: Pairs = pairs(
    {"most_allocated": "1.0", "alignment": "0.5", "least_allocated": "1.0", "group": "2.0"}
)


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    overcommit: Overcommit = field(default_factory=Overcommit)
    strategy: Strategy = Strategy.PACK
    # (scorer name, weight as text) pairs; text keeps the tuple-of-str-pairs shape.
    scorer_weights: Pairs = DEFAULT_SCORER_WEIGHTS
    # Live migrations in flight: per host (as source or destination) and in the whole cluster.
    max_migrations_per_host: int = 2
    max_migrations: int = 8
    # DRS's automation level: automatic balances whenever the load's std. dev. is over the threshold.
    rebalance_mode: RebalanceMode = RebalanceMode.MANUAL
    imbalance_threshold: float = 0.2
    rebalance_max_moves: int = 8
    rebalance_interval_s: int = 60
    # Share of the nodes one placement scores, in percent (kube-scheduler's
    # percentageOfNodesToScore); 0 = adaptive, from 50% at 100 nodes down to 5% at 5,625.
    percentage_of_nodes_to_score: int = 0
    # vSphere's "host failures cluster tolerates": with N >= 1 a placement is refused when the
    # survivors of some N host failures could not restart every HA-counted VM.
    ha_host_failures_to_tolerate: int = 0

    def weight(self, scorer: str) -> float:
        # A scan, not dict(pairs): every placement asks twice. The last pair of a name wins, as in a dict.
        for weights in (self.scorer_weights, DEFAULT_SCORER_WEIGHTS):
            for name, w in reversed(weights):
                if name == scorer:
                    return float(w)
        return 1.0


@dataclass(frozen=True, slots=True)
class QosPolicy:
    name: str
    qos_class: QosClass = QosClass.BURSTABLE
    cpu_weight: int = 100
    cpu_limit_percent: int = 0
    memory_limit_ratio: float = 0.0
    disk_iops_limit: int = 0
    disk_mbps_limit: int = 0
    network_mbps_limit: int = 0
    description: str = ""
    # IOPS each VM of the policy holds on its host (the disk_iops dimension).
    disk_iops_reservation: int = 0


DEFAULT_POLICY = QosPolicy(name="default", qos_class=QosClass.BURSTABLE,
                           description="built-in: burstable, normal CPU weight")


def policy_named(name: str, stored: QosPolicy | None) -> QosPolicy | None:
    """The policy a VM naming `name` gets: the stored one, else the built-in default under its name."""
    if stored is None and name == DEFAULT_POLICY.name:
        return DEFAULT_POLICY
    return stored


@dataclass(frozen=True, slots=True)
class VmSpec:
    name: str
    resources: Resources
    qos_policy: str = ""
    # A project's VM names its group within its project: stored as "<project>/<group>" (see
    # in_project), so two projects' groups of one name never constrain or reveal each other.
    placement_group: str = ""
    group_policy: AffinityPolicy = AffinityPolicy.NONE
    node_selector: Pairs = ()
    networks: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    image: str = ""  # a boot profile from vdcos.images.CATALOG; "" = the default
    ha: HaSettings = HaSettings()
    project: str = ""  # the project that owns it (model/project.py); "" = none, the cluster's
    power: Power = Power()

    @property
    def policy_name(self) -> str:
        return self.qos_policy or DEFAULT_POLICY.name

    def in_project(self, project: str) -> VmSpec:
        """The spec owned by `project`, its placement group that project's. (An API name has
        no "/", so a cluster VM's group is never a project's.)"""
        group = self.placement_group
        if project and group and not group.startswith(f"{project}/"):
            group = f"{project}/{group}"
        return self if (project, group) == (self.project, self.placement_group) else replace(
            self, project=project, placement_group=group)

    @property
    def group_in_project(self) -> str:
        """The placement group as its project names it (in_project's inverse)."""
        prefix = f"{self.project}/"
        return self.placement_group[len(prefix):] if self.project and self.placement_group.startswith(prefix) \
            else self.placement_group


@dataclass(frozen=True, slots=True)
class QosSettings:
    """What a hypervisor driver enforces for one VM, resolved from its policy."""

    qos_class: QosClass
    cpu_shares: int
    cpu_period_us: int = 100_000
    cpu_quota_us: int = 0
    memory_limit_mib: int = 0
    disk_iops_limit: int = 0
    disk_mbps_limit: int = 0
    network_mbps_limit: int = 0


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    capacity: Resources
    labels: Pairs = ()
    driver: str = "sim"
    # Where peers reach this host's hypervisor (the migration target URI).
    hypervisor_uri: str = ""
    # The host's overlay tunnel endpoint (underlay address and MAC); "" = no virtual switch.
    tunnel_ip: str = ""
    tunnel_mac: str = ""
    # Seconds after its last lease renewal at which its fencer kills its guests (the lease's
    # TTL: vdcos/host/fencer.py); 0 = the host has no fencer.
    fence_timeout_s: float = 0.0


@dataclass(frozen=True, slots=True)
class NodeStatus:
    ready: bool
    heartbeat: float
    used: Resources = Resources()
    agent_pid: int = 0
    # Where its agent serves Prometheus metrics (metrics/discovery.py follows it); "" for none.
    metrics: str = ""


@dataclass(frozen=True, slots=True)
class AllocEntry:
    vm: str
    qos_class: QosClass
    reserved: Resources
    policy: str = ""
    # A migration id while the VM moves away: the source keeps its capacity until the move
    # succeeds (OpenStack Placement's migration consumer), the destination already holds its own.
    held_by: str = ""
    # Counted by HA admission control: room to restart it is kept (HaSettings.admission).
    ha_admission: bool = True

    @property
    def is_storage(self) -> bool:
        """A local volume's or snapshot's space on its host, not a VM."""
        return self.vm.startswith((VOLUME_CONSUMER, SNAPSHOT_CONSUMER))


VOLUME_CONSUMER = "volume/"
SNAPSHOT_CONSUMER = "snapshot/"


def volume_consumer(volume: str) -> str:
    """The allocation entry name of a local volume ('/' never occurs in a VM's name)."""
    return VOLUME_CONSUMER + volume


def snapshot_consumer(snapshot: str) -> str:
    return SNAPSHOT_CONSUMER + snapshot


@dataclass(frozen=True, slots=True)
class Allocation:
    """Everything placed on one node. Its etcd mod_revision is the node's generation."""

    node: str
    entries: tuple[AllocEntry, ...] = ()

    def sums(self) -> Sums:
        """(guaranteed, committed) as tuples, in one pass: guaranteed reservations, and those
        plus burstable requests (best-effort entries hold nothing). Readers of both call this once.
        (The placement worker remembers them per allocation: vdcos/scheduler/cache.py.)"""
        g = [e.reserved.as_tuple() for e in self.entries if e.qos_class is QosClass.GUARANTEED]
        b = [e.reserved.as_tuple() for e in self.entries if e.qos_class is QosClass.BURSTABLE]
        zero = (0,) * len(DIMENSIONS)
        return ((tuple(map(sum, zip(*g))) if g else zero), (tuple(map(sum, zip(*g, *b))) if g or b else zero))

    @property
    def guaranteed(self) -> Resources:
        return Resources(*self.sums()[0])

    @property
    def committed(self) -> Resources:
        return Resources(*self.sums()[1])

    def with_entry(self, entry: AllocEntry) -> Allocation:
        if self.has(entry.vm):
            return Allocation(self.node, tuple(sorted((*self.without(entry.vm).entries, entry),
                                                      key=lambda e: e.vm)))
        entries = list(self.entries)
        bisect.insort(entries, entry, key=lambda e: e.vm)
        return Allocation(self.node, tuple(entries))

    def without(self, vm: str) -> Allocation:
        return Allocation(self.node, tuple(e for e in self.entries if e.vm != vm))

    def has(self, vm: str) -> bool:
        return any(e.vm == vm for e in self.entries)


Sums = tuple[tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class PlacementGroup:
    name: str
    policy: AffinityPolicy
    members: Pairs = ()  # (vm, node)

    def nodes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, node in self.members:
            counts[node] = counts.get(node, 0) + 1
        return counts

    def admits(self, node: str) -> bool:
        """The hard rules, checked again at commit time against the record being compared."""
        on = self.nodes()
        if self.policy is AffinityPolicy.ANTI_AFFINITY:
            return node not in on
        if self.policy is AffinityPolicy.AFFINITY:
            return not on or node in on
        return True

    def with_member(self, vm: str, node: str) -> PlacementGroup:
        return PlacementGroup(self.name, self.policy, tuple(sorted((*self.without(vm).members, (vm, node)))))

    def without(self, vm: str) -> PlacementGroup:
        return PlacementGroup(self.name, self.policy, tuple(m for m in self.members if m[0] != vm))


@dataclass(frozen=True, slots=True)
class PlacementRecord:
    node: str
    qos: QosSettings
    reserved: Resources
    score: float
    placed_at: float
    attempts: int = 1
    # The client's id for the create that placed it: a retry of that create finds this VM.
    request_id: str = ""
    # The fencing token: grows on every HA restart. An agent runs a VM only at its current epoch.
    epoch: int = 1


@dataclass(frozen=True, slots=True)
class Assignment:
    """What the scheduler hands a node agent: enough to run the VM without other reads."""

    spec: VmSpec
    qos: QosSettings
    reserved: Resources
    epoch: int = 1  # its placement's, when it was assigned here
    request_id: str = ""  # the call that placed it here: the agent logs its work under it (vdcos/logs.py)


@dataclass(frozen=True, slots=True)
class VmStatus:
    phase: VmPhase
    node: str
    message: str = ""
    updated_at: float = 0.0
    cpu_time_ns: int = 0
    memory_used_mib: int = 0
    # Bytes its NICs received and sent since its QEMU started (read once per metrics period).
    network_bytes: int = 0
    # The reboots of its spec's Power this host has carried out (or found done: a new guest).
    reboots: int = 0
