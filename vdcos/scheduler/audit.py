"""Invariants of the committed state, read straight from etcd: what benchmarks and tests check
after the fact, whatever schedulers, agents and migrations did concurrently."""
from __future__ import annotations

import json

from vdcos.model import Allocation, NodeSpec, SchedulerConfig, decode
from vdcos.model.fit import allocatable, demand_vector
from vdcos.state import keys
from vdcos.state.store import Store


def over_capacity(store: Store) -> list[str]:
    """Nodes whose guaranteed reservations exceed their physical capacity, or whose guaranteed
    plus burstable requests exceed their overcommitted capacity. Must always be empty."""
    kv = store.get(keys.CONFIG)
    overcommit = (decode(SchedulerConfig, json.loads(kv.value)) if kv else SchedulerConfig()).overcommit
    specs = {s.name: s for s in (decode(NodeSpec, json.loads(kv.value))
                                 for kv in store.get_prefix(keys.NODES)[0] if kv.key.endswith("/spec"))}
    over = []
    for kv in store.get_prefix(keys.ALLOC)[0]:
        a = decode(Allocation, json.loads(kv.value))
        cap = demand_vector(specs[a.node].capacity)
        if (demand_vector(a.guaranteed) > cap).any() or \
                (demand_vector(a.committed) > allocatable(cap[:, None], overcommit)[:, 0]).any():
            over.append(a.node)
    return over
