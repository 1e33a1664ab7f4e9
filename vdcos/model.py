"""Domain value objects shared by the scheduler, the node agent and the state layer.

Everything here is a frozen dataclass or an Enum: no I/O, no protobuf. Mappings are
stored as sorted tuples of pairs so that the objects stay hashable and comparable.
"""
from __future__ import annotations

import bisect
import dataclasses
import enum
import operator
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, TypeVar

import orjson

DIMENSIONS: tuple[str, ...] = ("vcpus", "memory_mib", "disk_gib", "network_mbps", "disk_iops")


class QosClass(enum.Enum):
    GUARANTEED = "guaranteed"
    BURSTABLE = "burstable"
    BEST_EFFORT = "best-effort"


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


class RebalanceMode(enum.Enum):
    MANUAL = "manual"
    AUTOMATIC = "automatic"


class VmPhase(enum.Enum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    UNKNOWN = "unknown"


Pairs = tuple[tuple[str, str], ...]


def pairs(mapping: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> Pairs:
    """Canonical, hashable form of a string mapping."""
    if mapping is None:
        return ()
    items = mapping.items() if isinstance(mapping, Mapping) else mapping
    return tuple(sorted((str(k), str(v)) for k, v in items))


@dataclass(frozen=True, slots=True)
class Resources:
    vcpus: int = 0
    memory_mib: int = 0
    disk_gib: int = 0
    network_mbps: int = 0
    # Reserved disk operations per second (from the QoS policy); a host's capacity is what its
    # disks sustain, as its operator measured it.
    disk_iops: int = 0

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.vcpus, self.memory_mib, self.disk_gib, self.network_mbps, self.disk_iops)

    @classmethod
    def of(cls, values: Iterable[float]) -> Resources:
        return cls(*(int(round(v)) for v in values))

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.vcpus + other.vcpus, self.memory_mib + other.memory_mib,
                         self.disk_gib + other.disk_gib, self.network_mbps + other.network_mbps,
                         self.disk_iops + other.disk_iops)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.vcpus - other.vcpus, self.memory_mib - other.memory_mib,
                         self.disk_gib - other.disk_gib, self.network_mbps - other.network_mbps,
                         self.disk_iops - other.disk_iops)


@dataclass(frozen=True, slots=True)
class Overcommit:
    """Per-resource allocation ratios (OpenStack's *_allocation_ratio)."""

    vcpus: float = 4.0
    memory_mib: float = 1.0
    disk_gib: float = 1.0
    network_mbps: float = 2.0
    disk_iops: float = 1.0

    def as_tuple(self) -> tuple[float, float, float, float, float]:
        return (self.vcpus, self.memory_mib, self.disk_gib, self.network_mbps, self.disk_iops)


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
    placement_group: str = ""
    group_policy: AffinityPolicy = AffinityPolicy.NONE
    node_selector: Pairs = ()
    networks: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    image: str = ""  # a boot profile from vdcos.images.CATALOG; "" = the default

    @property
    def policy_name(self) -> str:
        return self.qos_policy or DEFAULT_POLICY.name


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


@dataclass(frozen=True, slots=True)
class NodeStatus:
    ready: bool
    heartbeat: float
    used: Resources = Resources()
    agent_pid: int = 0


@dataclass(frozen=True, slots=True)
class AllocEntry:
    vm: str
    qos_class: QosClass
    reserved: Resources
    policy: str = ""
    # A migration id while the VM moves away: the source keeps its capacity until the move
    # succeeds (OpenStack Placement's migration consumer), the destination already holds its own.
    held_by: str = ""

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
        plus burstable requests (best-effort entries hold nothing). Readers of both call this once."""
        got = _SUMS.get(id(self.entries))
        if got is not None and got[0] is self.entries:
            return got[1]
        g = [e.reserved.as_tuple() for e in self.entries if e.qos_class is QosClass.GUARANTEED]
        b = [e.reserved.as_tuple() for e in self.entries if e.qos_class is QosClass.BURSTABLE]
        zero = (0,) * len(DIMENSIONS)
        return _remember_sums(self.entries, ((tuple(map(sum, zip(*g))) if g else zero),
                                             (tuple(map(sum, zip(*g, *b))) if g or b else zero)))

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
        # The new sums from the old ones (integers: the same as adding them all up again).
        g, c = self.sums()
        r = entry.reserved.as_tuple()
        if entry.qos_class is QosClass.GUARANTEED:
            g = tuple(x + y for x, y in zip(g, r))
        if entry.qos_class is not QosClass.BEST_EFFORT:
            c = tuple(x + y for x, y in zip(c, r))
        done = Allocation(self.node, tuple(entries))
        _remember_sums(done.entries, (g, c))
        return done

    def without(self, vm: str) -> Allocation:
        return Allocation(self.node, tuple(e for e in self.entries if e.vm != vm))

    def has(self, vm: str) -> bool:
        return any(e.vm == vm for e in self.entries)


Sums = tuple[tuple[int, ...], tuple[int, ...]]
# The sums of recent allocations, by the identity of their entries (the tuple is kept with them,
# so its id cannot be reused while it is here). The placement worker asks for a node's sums for
# each VM it puts there and again when its commit lands; with_entry knows them already.
_SUMS: dict[int, tuple[tuple[AllocEntry, ...], Sums]] = {}
_SUMS_MAX = 1 << 15


def _remember_sums(entries: tuple[AllocEntry, ...], sums: Sums) -> Sums:
    if len(_SUMS) >= _SUMS_MAX:
        _SUMS.clear()
    _SUMS[id(entries)] = (entries, sums)
    return sums


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


@dataclass(frozen=True, slots=True)
class Assignment:
    """What the scheduler hands a node agent: enough to run the VM without other reads."""

    spec: VmSpec
    qos: QosSettings
    reserved: Resources


@dataclass(frozen=True, slots=True)
class VmStatus:
    phase: VmPhase
    node: str
    message: str = ""
    updated_at: float = 0.0
    cpu_time_ns: int = 0
    memory_used_mib: int = 0


class MigrationPhase(enum.Enum):
    PENDING = "pending"        # destination reserved; the source agent has not started yet
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"          # the VM kept running on the source
    CANCELLED = "cancelled"    # likewise

    @property
    def done(self) -> bool:
        return self in (MigrationPhase.COMPLETED, MigrationPhase.FAILED, MigrationPhase.CANCELLED)


@dataclass(frozen=True, slots=True)
class MigrationOptions:
    max_downtime_ms: int = 25
    bandwidth_mibps: int = 0
    auto_converge: bool = True
    postcopy_after_iterations: int = 0


@dataclass(frozen=True, slots=True)
class MigrationProgress:
    phase: str = ""
    memory_total_bytes: int = 0
    memory_processed_bytes: int = 0
    memory_remaining_bytes: int = 0
    iteration: int = 0
    expected_downtime_ms: int = 0
    elapsed_ms: int = 0


@dataclass(frozen=True, slots=True)
class Migration:
    id: str
    vm: str
    source: str
    destination: str
    phase: MigrationPhase
    options: MigrationOptions
    created_at: float
    updated_at: float = 0.0
    cancel_requested: bool = False
    progress: MigrationProgress = MigrationProgress()
    downtime_ms: int = -1
    total_ms: int = 0
    message: str = ""


class RebalanceGoal(enum.Enum):
    CONSOLIDATE = "consolidate"
    BALANCE = "balance"
    EVACUATE = "evacuate"


class RebalanceState(enum.Enum):
    PLANNED = "planned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RebalanceStep:
    vm: str
    source: str
    target: str           # planned; an evacuation lets the scheduler choose again when it runs
    reason: str
    state: str = "pending"  # pending | migrating | done | failed | skipped
    migration: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Rebalance:
    """A plan of live migrations, and how far its execution got (one step at a time)."""

    id: str
    goal: RebalanceGoal
    state: RebalanceState
    steps: tuple[RebalanceStep, ...] = ()
    hosts_freed: tuple[str, ...] = ()
    hosts_in_use_before: int = 0
    hosts_in_use_after: int = 0
    imbalance_before: float = 0.0
    imbalance_after: float = 0.0
    unmovable: Pairs = ()
    message: str = ""
    node: str = ""
    automatic: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ActiveMigrations:
    """One record listing the migrations in flight: the limits are checked against it in the
    same transaction that starts a migration, so concurrent requests cannot exceed them."""

    entries: tuple[tuple[str, str, str], ...] = ()  # (id, source, destination)

    def count(self, host: str) -> int:
        return sum(1 for _, s, d in self.entries if host in (s, d))

    def with_(self, m: Migration) -> ActiveMigrations:
        return ActiveMigrations((*self.without(m.id).entries, (m.id, m.source, m.destination)))

    def without(self, mid: str) -> ActiveMigrations:
        return ActiveMigrations(tuple(e for e in self.entries if e[0] != mid))


@dataclass(frozen=True, slots=True)
class Network:
    """A tenant network: one L2 segment over every host, isolated by its VNI."""

    name: str
    vni: int
    cidr: str
    created_at: float = 0.0


class PortKind(enum.Enum):
    VM = "vm"                # a VM's NIC: bound wherever the VM runs
    ENDPOINT = "endpoint"    # a network namespace on one host (probes, peers, load generators)


@dataclass(frozen=True, slots=True)
class Port:
    name: str                # a VM's NIC is named after its VM (one NIC per network)
    network: str
    mac: str
    ip: str
    prefix: int
    kind: PortKind = PortKind.VM
    host: str = ""           # endpoint ports only
    mbps_limit: int = 0      # endpoint ports only; a VM's NIC follows the VM's QoS policy
    created_at: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.network}/{self.name}"

    @property
    def address(self) -> str:
        return f"{self.ip}/{self.prefix}"


@dataclass(frozen=True, slots=True)
class Nic:
    """What a hypervisor driver needs to give a guest one NIC on a host's switch."""

    network: str
    mac: str
    device: str              # the tap on the host's br-int
    address: str             # ip/prefix the guest configures
    mtu: int = 1450


class PoolKind(enum.Enum):
    LOCAL = "local"      # a libvirt dir pool on one host: its volumes tie a VM to that host
    SHARED = "shared"    # a directory every host sees (NFS or Ceph RBD in a real rack)


class VolumeState(enum.Enum):
    CREATING = "creating"    # recorded and accounted; the owning host's agent makes the file
    AVAILABLE = "available"
    FAILED = "failed"        # the agent could not make it (message says why)


@dataclass(frozen=True, slots=True)
class Volume:
    name: str
    pool: PoolKind
    size_gib: int
    # The host whose pool holds the file (local), or the host that creates it (shared).
    host: str
    image: str = ""          # a base disk image from vdcos.storagepool.images; "" = blank
    vm: str = ""             # attached to; "" = free
    state: VolumeState = VolumeState.CREATING
    path: str = ""           # the file, once the agent made it
    message: str = ""
    created_at: float = 0.0
    # The snapshot it was made from (a restore); its file starts as that snapshot's content.
    snapshot: str = ""
    # A snapshot being taken of it: no migration, resize, attach or detach meanwhile.
    snapshotting: str = ""
    # While its VM live-migrates with copy-storage: the migration, the destination host whose
    # pool takes the copy (its space there is already accounted), and the copy's file once
    # that host's agent made it. The source file stays the volume's until the move completes.
    migration: str = ""
    moving_to: str = ""
    target_path: str = ""

    @property
    def ties_to_host(self) -> bool:
        return self.pool is PoolKind.LOCAL


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A volume's content at one point in time: a read-only file in the volume's pool, made by
    the agent of `host` (from the running guest's disk by a backup job, or from the closed
    file). It does not depend on its volume afterwards: the volume may grow, move or go."""

    name: str
    volume: str
    pool: PoolKind
    host: str                # local: the host whose pool holds it; shared: the host that makes it
    size_gib: int            # the volume's size when taken; what a restore needs at least
    image: str = ""          # the volume's base image: a restored volume overlays the same one
    state: VolumeState = VolumeState.CREATING
    path: str = ""
    message: str = ""
    created_at: float = 0.0
    live: bool = False       # taken from a running guest


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """What a host's agent reports about a storage pool it sees (under its lease)."""

    host: str
    pool: PoolKind
    path: str
    capacity_gib: float
    available_gib: float
    volumes: int = 0


@dataclass(frozen=True, slots=True)
class Disk:
    """What a hypervisor driver needs to give a guest one volume."""

    volume: str
    path: str
    device: str              # vda, vdb, ... in the order of VmSpec.volumes
    size_gib: int = 0        # the volume's recorded size: a smaller disk is grown to it


# --- JSON codec -------------------------------------------------------------------------
# One encoding for every value stored in etcd: dataclass -> plain dict, Enum -> value,
# tuples -> lists. Decoding is driven by the dataclass annotations.

T = TypeVar("T")
Codec = Callable[[Any], Any]


def _identity(v: Any) -> Any:
    return v


def encode(obj: Any) -> Any:
    """Any value -> plain JSON data (for values whose type is only known at run time)."""
    if obj is None or isinstance(obj, (str, int, float)) and not isinstance(obj, enum.Enum):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _encoder(type(obj))(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (tuple, list)):
        return [encode(v) for v in obj]
    return obj


_ENCODERS: dict[Any, Codec] = {}
_DECODERS: dict[Any, Codec] = {}


def _encoder(tp: Any) -> Codec:
    """The encoder of a declared type, built once from the annotations: a record is encoded
    by a handful of closures instead of an isinstance walk of every value."""
    got = _ENCODERS.get(tp)
    if got is not None:
        return got
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        _ENCODERS[tp] = encode  # a self-referencing type meets the generic walk
        hints = typing.get_type_hints(tp)
        fields = tuple((f.name, _encoder(hints[f.name])) for f in dataclasses.fields(tp))
        plain = tuple(n for n, e in fields if e is _identity)
        other = tuple((n, e) for n, e in fields if e is not _identity)

        def record(obj: Any) -> Any:
            out = {n: getattr(obj, n) for n in plain}
            for n, e in other:
                out[n] = e(getattr(obj, n))
            return out
        got = record
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        got = operator.attrgetter("value")
    elif tp in (str, int, float, bool):
        got = _identity
    elif typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _encoder(args[0])
            got = (lambda v: list(v)) if item is _identity else (lambda v: [item(x) for x in v])
        else:
            items = tuple(_encoder(a) for a in args)
            got = lambda v: [e(x) for e, x in zip(items, v)]  # noqa: E731
    else:
        got = encode
    _ENCODERS[tp] = got
    return got


# orjson: a tenth of the json module's time for the records every placement writes. Compact,
# keys sorted, UTF-8; anything json.loads reads.
_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _json(data: Any) -> bytes:
    return orjson.dumps(data, option=_JSON_OPTIONS)


def dumps(obj: object) -> bytes:
    """The bytes stored in etcd for a value."""
    if type(obj) is Allocation:
        return _allocation_bytes(obj)
    return _json(_encoder(type(obj))(obj))


# A node's allocation record is written whole each time one VM joins or leaves it, and its
# other entries are the same as last time: each entry's JSON is kept (bounded) and joined,
# not encoded again, which made encoding grow with the entries (5 us each). Same bytes as the
# generic encoder: a test compares them.
_ENTRY_JSON: dict[AllocEntry, bytes] = {}
_ENTRY_JSON_MAX = 1 << 16


def _allocation_bytes(a: Allocation) -> bytes:
    parts = []
    for e in a.entries:
        got = _ENTRY_JSON.get(e)
        if got is None:
            if len(_ENTRY_JSON) >= _ENTRY_JSON_MAX:
                _ENTRY_JSON.clear()
            got = _ENTRY_JSON[e] = _json(_encoder(AllocEntry)(e))
        parts.append(got)
    return b'{"entries":[%b],"node":%b}' % (b",".join(parts), _json(a.node))


def assignment_bytes(spec: bytes, qos: QosSettings, reserved: Resources) -> bytes:
    """dumps(Assignment(...)) around `spec`'s bytes, which a placement has just encoded for the
    VM's spec record (the generic encoder would encode the spec again)."""
    return b'{"qos":%b,"reserved":%b,"spec":%b}' % (dumps(qos), dumps(reserved), spec)


def decode(cls: type[T], data: Any) -> T:
    return typing.cast(T, _decoder(cls)(data))


def _decoder(tp: Any) -> Codec:
    """The decoder of a declared type, built once from the annotations (see `_encoder`)."""
    got = _DECODERS.get(tp)
    if got is not None:
        return got
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        _DECODERS[tp] = lambda data: decode(tp, data)  # a self-referencing type: resolved late
        hints = typing.get_type_hints(tp)
        fields = {n: _decoder(h) for n, h in hints.items()}

        def record(data: Any) -> Any:
            return tp(**{k: fields[k](v) for k, v in data.items() if k in fields})
        got = record
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        got = tp
    elif typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _decoder(args[0])
            got = (lambda v: tuple(v)) if item is _identity else (lambda v: tuple(item(x) for x in v))
        else:
            items = tuple(_decoder(a) for a in args)
            got = lambda v: tuple(d(x) for d, x in zip(items, v))  # noqa: E731
    elif tp is float:
        got = float
    elif tp is int:
        got = int
    else:  # str, bool, unions: as stored
        got = _identity
    _DECODERS[tp] = got
    return got
