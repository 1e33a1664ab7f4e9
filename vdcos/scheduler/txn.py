"""One placement transaction as it is assembled and committed: the creates' batches (worker.py),
the HA restarts (failover.py) and a shelved VM's placing again (unshelve.py). Each record it
reads is compared once, the allocation and group records it writes are encoded once (the cache
then recognizes their bytes coming back on the watch), and a commit that fails brings the
compared records back in the same round trip, into the cache."""
from __future__ import annotations

from dataclasses import dataclass, field

from vdcos.model import Allocation, PlacementGroup, Quota, VmSpec, dumps
from vdcos.scheduler.cache import ClusterCache, NodeView
from vdcos.state import keys
from vdcos.state.store import Compare, Get, Op, Put, Store, TxnResult


@dataclass
class PlacementTxn:
    compares: list[Compare] = field(default_factory=list)
    puts: list[Op] = field(default_factory=list)
    # The keys re-read when a compare fails, in order; a dict so that guard finds one at once.
    reads: dict[str, None] = field(default_factory=dict)
    allocs: dict[str, Allocation] = field(default_factory=dict)
    groups: dict[str, PlacementGroup] = field(default_factory=dict)
    quotas: dict[str, Quota] = field(default_factory=dict)  # by project: what its use becomes
    records: dict[str, tuple[bytes, Allocation | PlacementGroup]] = field(default_factory=dict)

    def guard(self, key: str, target: str, value: int) -> None:
        if key not in self.reads:
            self.compares.append(Compare(key, target, "==", value))  # type: ignore[arg-type]
            self.reads[key] = None

    def guard_destination(self, view: NodeView, policy: str, policy_revision: int) -> None:
        """What any placement on a node compares: its allocation (its generation), that its agent
        is the one that was ready, that it is not cordoned, and the VM's QoS policy."""
        node = view.spec.name
        self.guard(keys.alloc(node), "mod", view.alloc_revision)
        self.guard(keys.node_status(node), "create", view.status_create_revision)
        self.guard(keys.node_cordon(node), "version", 0)
        self.guard(keys.policy(policy), "mod", policy_revision)

    def join_group(self, cache: ClusterCache, spec: VmSpec, node: str) -> bool:
        """The VM placed on `node` joins its placement group (made if it has none yet), compared
        as the cache has it; False, nothing joined, when the group's policy or hard rules say no
        (against the record being compared, and the transaction's VMs before it)."""
        cached = cache.groups.get(spec.placement_group)
        group = self.groups.get(spec.placement_group) or (
            cached[0] if cached else PlacementGroup(spec.placement_group, spec.group_policy))
        if group.policy is not spec.group_policy or not group.admits(node):
            return False
        self.groups[group.name] = group.with_member(spec.name, node)
        self.guard(keys.group(group.name), "mod", cached[1] if cached else 0)
        return True

    def seal(self) -> None:
        """Encode the allocation, group and quota records it changed, and write them."""
        records: dict[str, Allocation | PlacementGroup] = {keys.alloc(n): a for n, a in self.allocs.items()}
        records.update((keys.group(n), g) for n, g in self.groups.items())
        self.records = {k: (dumps(r), r) for k, r in records.items()}
        self.puts += [Put(k, value) for k, (value, _) in self.records.items()]
        self.puts += [Put(keys.quota(p), dumps(q)) for p, q in self.quotas.items()]


def commit(store: Store, cache: ClusterCache, txn: PlacementTxn) -> TxnResult:
    """Commit; the cache takes our own records on success, the current ones on a conflict
    (the VMs' own keys among the reads are the caller's to look at)."""
    with cache.sending(txn.records):
        res = store.txn(txn.compares, txn.puts, [Get(k) for k in txn.reads])
        if res.succeeded:
            cache.apply_committed(txn.allocs, txn.groups, res.revision, txn.quotas)
    if not res.succeeded:
        for key, kvs in zip(txn.reads, res.gets):
            if not key.startswith(keys.VMS):
                cache.apply_read(key, kvs, res.revision)
    return res
