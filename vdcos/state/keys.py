"""The etcd key layout: the only place key strings are built. See README.md beside this file."""
from __future__ import annotations


ROOT = "/vdcos/"

CONFIG = ROOT + "config/scheduler"
POLICIES = ROOT + "policies/"
NODES = ROOT + "nodes/"
ALLOC = ROOT + "alloc/"
GROUPS = ROOT + "groups/"
VMS = ROOT + "vms/"
VM_STATUSES = ROOT + "vm-status/"
ASSIGN = ROOT + "assign/"
MIGRATIONS = ROOT + "migrations/"
ACTIVE_MIGRATIONS = ROOT + "migrations-active"
NETWORKS = ROOT + "networks/"
VNIS = ROOT + "vnis/"
PORTS = ROOT + "ports/"
BINDINGS = ROOT + "bindings/"
VOLUMES = ROOT + "volumes/"
POOLS = ROOT + "pools/"
SNAPSHOTS = ROOT + "snapshots/"
REBALANCES = ROOT + "rebalances/"
# Held (under a lease) by the one scheduler replica running automatic rebalancing.
REBALANCER_LOCK = ROOT + "locks/rebalancer"
MIGRATIONS_LOCK = ROOT + "locks/migrations"
HA_LOCK = ROOT + "locks/ha"
METERING_LOCK = ROOT + "locks/metering"
HA_HOSTS = ROOT + "ha/hosts/"
HA_EVENTS = ROOT + "ha/events/"
TOKENS = ROOT + "tokens/"
PROJECTS = ROOT + "projects/"
QUOTAS = ROOT + "quotas/"
AUDIT = ROOT + "audit/"     # a journal (state/journal.py): <UTC hour>/<time ns>-<writer>
EVENTS = ROOT + "events/"   # a journal too: the datacenter's events (vdcos/events/)
USAGE = ROOT + "usage/"     # metering: one record per VM, kept past its deletion (controllers/metering.py)
JOINS = ROOT + "joins/"
SCHEDULERS = ROOT + "schedulers/"


def scheduler(lease: int) -> str:
    """A live scheduler replica, named by its lease: fixed width, so keys sort as leases do."""
    return f"{SCHEDULERS}{lease:016x}"


def policy(name: str) -> str:
    return POLICIES + name


def node_spec(node: str) -> str:
    return f"{NODES}{node}/spec"


def node_status(node: str) -> str:
    return f"{NODES}{node}/status"


def node_cordon(node: str) -> str:
    return f"{NODES}{node}/cordon"


def alloc(node: str) -> str:
    return ALLOC + node


def group(name: str) -> str:
    return GROUPS + name


def vm_spec(vm: str) -> str:
    return f"{VMS}{vm}/spec"


def vm_placement(vm: str) -> str:
    return f"{VMS}{vm}/placement"


def vm_status_prefix(node: str) -> str:
    return f"{VM_STATUSES}{node}/"


def vm_status(node: str, vm: str) -> str:
    """What `node`'s agent says of a VM placed there. Under the node, not the VM, so that each
    agent's etcd role writes its own VMs' statuses and nothing else about any VM; a VM's status
    is the one under its placement's node."""
    return f"{VM_STATUSES}{node}/{vm}"


def vm_migration(vm: str) -> str:
    """The id of the VM's migration in flight: at most one per VM."""
    return f"{VMS}{vm}/migration"


def migration(mid: str) -> str:
    return MIGRATIONS + mid


def assign_prefix(node: str) -> str:
    return f"{ASSIGN}{node}/"


def assign(node: str, vm: str) -> str:
    return f"{ASSIGN}{node}/{vm}"


def network(name: str) -> str:
    return NETWORKS + name


def vni(value: int) -> str:
    """Which network holds a VNI: created in the same transaction as the network."""
    return f"{VNIS}{value}"


def network_ips(net: str) -> str:
    return f"{ROOT}network-ips/{net}/"


def network_ip(net: str, ip: str) -> str:
    """Which port holds an address: created with the port, so no address is handed out twice."""
    return f"{network_ips(net)}{ip}"


def port(net: str, name: str) -> str:
    return f"{PORTS}{net}/{name}"


def binding_prefix(net: str, port_name: str) -> str:
    return f"{BINDINGS}{net}/{port_name}/"


def binding(net: str, port_name: str, host: str) -> str:
    """A port plugged into a host's switch, under that host's lease: two hosts during a move."""
    return f"{binding_prefix(net, port_name)}{host}"


def volume(name: str) -> str:
    return VOLUMES + name


def snapshot(name: str) -> str:
    return SNAPSHOTS + name


def pool(host: str, kind: str) -> str:
    """A host's report on a pool it sees, under the host's lease."""
    return f"{POOLS}{host}/{kind}"


def split(key: str, prefix: str) -> list[str]:
    """'/vdcos/nodes/h1/spec' under NODES -> ['h1', 'spec']."""
    return key[len(prefix):].split("/")


def rebalance(rid: str) -> str:
    return REBALANCES + rid


def ha_host(node: str) -> str:
    """The HA controller's record of a failed host, until it is back."""
    return HA_HOSTS + node


def ha_event(at: float, node: str, vm: str) -> str:
    """Time-ordered: fixed-width nanoseconds first, so keys sort as the events happened."""
    return f"{HA_EVENTS}{int(at * 1e9):020d}-{node}-{vm}"


def token(accessor: str) -> str:
    """A bearer token's record (its secret's hash, never the secret): /vdcos/tokens/<accessor>."""
    return TOKENS + accessor


def project(name: str) -> str:
    return PROJECTS + name


def quota(project_name: str) -> str:
    """A project's limits and use, in one record: every create that charges it compares it."""
    return QUOTAS + project_name




def join(node: str) -> str:
    """A host certified to join under this name (`vdcos join`): at most one per name."""
    return JOINS + node


def usage(vm: str) -> str:
    return f"{USAGE}{vm}"
