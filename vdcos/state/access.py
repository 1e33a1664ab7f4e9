"""Who may read and write which keys, enforced by etcd itself (its role-based access control):
with client-certificate authentication on, etcd takes a client's user name from its
certificate's CN (`node:host-1`, `scheduler:scheduler-1`, `user:admin`), and each user holds a
role whose permissions are key ranges.

- The operator (`user:admin`) holds etcd's `root` role: it sets all this up.
- The API/scheduler replicas hold `vdcos-control` (every key under /vdcos/) and `root` too: a
  host that joins (`vdcos join`) gets its etcd user and role from the replica that certifies it
  (the replicas hold the datacenter's CA key for that, as kubeadm's control plane does).
- Each node agent holds its own role: it reads what it runs from (config, nodes, its own
  allocation and assignments, VMs, migrations, networks, ports, bindings, volumes, snapshots,
  pools) and writes its own node's records, pools and VM statuses (/vdcos/vm-status/<node>/),
  and the records its work changes: migrations (progress and the outcome it reports, which the
  control plane applies), port bindings, volumes' and snapshots' files, and the datacenter's
  events it sees (/vdcos/events/: what it starts, stops and refuses). It writes no VM spec,
  placement, assignment or allocation, nor any group: those are the control plane's. It
  cannot write another node's spec or status (where its hypervisor and tunnel addresses are:
  the address a migration goes to), pools or VM statuses; nor tokens, projects, quotas, QoS
  policies, the scheduler's configuration, locks, HA records, rebalances or the audit log; nor
  read another node's allocation or assignments, tokens, projects, quotas or the audit log.

Pure: the roles as data; EtcdStore.add_access makes them through etcd's Auth API, for `vdcos up`
(EtcdCluster.enable_access) and for a host that joins alike."""
from __future__ import annotations

from dataclasses import dataclass

from vdcos.state import keys

ROOT_USER = "root"
ROOT_ROLE = "root"  # etcd's own: every key and etcd's users and roles; it exists without being made
CONTROL_ROLE = "vdcos-control"


@dataclass(frozen=True)
class Grant:
    key: str
    prefix: bool
    write: bool  # readwrite; else read only


def _r(key: str, prefix: bool = True) -> Grant:
    return Grant(key, prefix, False)


def _rw(key: str, prefix: bool = True) -> Grant:
    return Grant(key, prefix, True)


CONTROL = (_rw(keys.ROOT),)


def node_role(node: str) -> str:
    return f"vdcos-node-{node}"


def node_user(node: str) -> str:
    """A node agent's etcd user: its certificate's CN (security/pki.py's Identity("node", node))."""
    return f"node:{node}"


def node_grants(node: str) -> tuple[Grant, ...]:
    return (
        _r(keys.CONFIG, prefix=False), _r(keys.POLICIES), _r(keys.NODES), _r(keys.NETWORKS), _r(keys.PORTS),
        _rw(f"{keys.NODES}{node}/"), _rw(f"{keys.POOLS}{node}/"), _r(keys.POOLS),
        _r(keys.VMS), _rw(keys.vm_status_prefix(node)), _r(keys.alloc(node), prefix=False),
        _r(keys.assign_prefix(node)), _rw(keys.MIGRATIONS), _rw(keys.BINDINGS), _rw(keys.VOLUMES),
        _rw(keys.SNAPSHOTS), _rw(keys.EVENTS),
    )


def setup(control_users: list[str], nodes: list[str], admin: str) -> list[tuple[str, str, tuple[Grant, ...]]]:
    """Who holds which role, with the role's key ranges, in the order EtcdStore.enable_access
    makes them: etcd wants its root user first."""
    out: list[tuple[str, str, tuple[Grant, ...]]] = [(ROOT_USER, ROOT_ROLE, ()), (admin, ROOT_ROLE, ())]
    for u in control_users:
        out += [(u, CONTROL_ROLE, CONTROL), (u, ROOT_ROLE, ())]
    out += [(node_user(n), node_role(n), node_grants(n)) for n in nodes]
    return out
