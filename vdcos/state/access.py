"""Who may read and write which keys, enforced by etcd itself (its role-based access control):
with client-certificate authentication on, etcd takes a client's user name from its
certificate's CN (`node:host-1`, `scheduler:scheduler-1`, `user:admin`), and each user holds a
role whose permissions are key ranges.

- The operator (`user:admin`) holds etcd's `root` role: it sets all this up.
- The API/scheduler replicas hold `vdcos-control` (every key under /vdcos/) and `root` too: a
  host that joins (`vdcos join`) gets its etcd user and role from the replica that certifies it
  (the replicas hold the datacenter's CA key for that, as kubeadm's control plane does).
- Each node agent holds its own role: it reads what it runs from (config, nodes, allocations,
  assignments, VMs, migrations, groups, networks, ports, bindings, volumes, snapshots, pools)
  and writes its own node's records and pools, and the records its work changes. It cannot
  write another node's spec or status (where its hypervisor and tunnel addresses are: the
  address a migration goes to) or pools; nor tokens, projects, quotas, QoS policies, the
  scheduler's configuration, locks, HA records, rebalances or the audit log; nor read tokens,
  projects, quotas or the audit log.

What the key layout does not yet allow (vdcos/security/README.md): a VM's status is under the
VM (/vdcos/vms/<vm>/status), not under its node, and the source agent completes a live
migration itself, moving the VM's placement, assignment and allocations in one transaction; so
a node's role still writes /vdcos/vms/, /vdcos/alloc/ and /vdcos/assign/ for every VM.

Pure: the roles as data, and etcdctl's commands for them (state/etcd_server.py runs them)."""
from __future__ import annotations

from dataclasses import dataclass

from vdcos.state import keys

ROOT_USER = "root"
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
        _rw(keys.VMS), _rw(keys.ALLOC), _rw(keys.ASSIGN), _rw(keys.GROUPS), _rw(keys.MIGRATIONS),
        _rw(keys.ACTIVE_MIGRATIONS, prefix=False), _rw(keys.BINDINGS), _rw(keys.VOLUMES), _rw(keys.SNAPSHOTS),
    )


def commands(control_users: list[str], nodes: list[str], admin: str) -> list[list[str]]:
    """etcdctl's arguments that set the roles up and turn authentication on, in order. Run
    against a cluster without auth; each is idempotent when its "already exists" is ignored."""
    out: list[list[str]] = [["user", "add", ROOT_USER, "--no-password"], ["user", "grant-role", ROOT_USER, "root"],
                            ["user", "add", admin, "--no-password"], ["user", "grant-role", admin, "root"],
                            ["role", "add", CONTROL_ROLE]]
    out += [_grant(CONTROL_ROLE, g) for g in CONTROL]
    for u in control_users:
        out += [["user", "add", u, "--no-password"], ["user", "grant-role", u, CONTROL_ROLE],
                ["user", "grant-role", u, "root"]]
    for n in nodes:
        user, role = node_user(n), node_role(n)
        out += [["role", "add", role], *(_grant(role, g) for g in node_grants(n)),
                ["user", "add", user, "--no-password"], ["user", "grant-role", user, role]]
    out.append(["auth", "enable"])
    return out


def _grant(role: str, g: Grant) -> list[str]:
    return ["role", "grant-permission", role, *(["--prefix=true"] if g.prefix else []),
            "readwrite" if g.write else "read", g.key]
