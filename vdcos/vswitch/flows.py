"""The OpenFlow tables of one host's br-int, computed from cluster state. Pure: no I/O.

OVN-like, port locations are known, not learned:
  table 0   classify: a local port's frames (only from its own MAC) get its network's VNI in
            reg6; a tunnel's frames get the tunnel key in reg6 and reg7=1 ("came from the
            overlay": never sent back into it, so a full mesh has no loops); anything else drops.
  table 10  forward: a known MAC goes to every host its port is bound on (two during a live
            migration: OVN's multi-chassis binding, so no frame is lost while the guest moves);
            broadcast and multicast go to the network's local ports and only to the hosts that
            have ports on that network; unknown unicast drops.
Networks are isolated by VNI alone, so two tenants may use the same CIDR on the same hosts.
"""
from __future__ import annotations

from dataclasses import dataclass

CLASSIFY, FORWARD = 0, 10
BROADCAST = "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00"


@dataclass(frozen=True, slots=True)
class LocalPort:
    key: str        # "<network>/<port>"
    vni: int
    mac: str
    ofport: int


@dataclass(frozen=True, slots=True)
class RemoteBinding:
    vni: int
    mac: str
    host: str


def host_flows(me: str, local: list[LocalPort], bindings: list[RemoteBinding],
               tunnels: dict[str, int]) -> list[str]:
    """All flows for host `me`. `bindings` lists every (port, host) binding in the cluster, this
    host's included; `tunnels` maps each peer host to the ofport of its tunnel."""
    flows = [f"table={CLASSIFY},priority=0,actions=drop", f"table={FORWARD},priority=0,actions=drop"]
    for p in sorted(local, key=lambda p: p.ofport):
        flows.append(f"table={CLASSIFY},priority=100,in_port={p.ofport},dl_src={p.mac},"
                     f"actions=load:{p.vni}->NXM_NX_REG6[],load:0->NXM_NX_REG7[],resubmit(,{FORWARD})")
    for host, ofport in sorted(tunnels.items()):
        flows.append(f"table={CLASSIFY},priority=100,in_port={ofport},actions="
                     f"move:NXM_NX_TUN_ID[0..23]->NXM_NX_REG6[0..23],load:1->NXM_NX_REG7[],resubmit(,{FORWARD})")

    local_by_mac = {(p.vni, p.mac): p.ofport for p in local}
    hosts_by_mac: dict[tuple[int, str], set[str]] = {}
    hosts_by_vni: dict[int, set[str]] = {}
    for b in bindings:
        hosts_by_mac.setdefault((b.vni, b.mac), set()).add(b.host)
        hosts_by_vni.setdefault(b.vni, set()).add(b.host)
    for p in local:
        hosts_by_mac.setdefault((p.vni, p.mac), set()).add(me)
        hosts_by_vni.setdefault(p.vni, set()).add(me)

    def remote(vni: int, hosts: set[str]) -> list[str]:
        outs = [f"output:{tunnels[h]}" for h in sorted(hosts - {me}) if h in tunnels]
        return [f"set_field:{vni}->tun_id", *outs] if outs else []

    for (vni, mac), hosts in sorted(hosts_by_mac.items()):
        here = [f"output:{local_by_mac[(vni, mac)]}"] if (vni, mac) in local_by_mac else []
        to_remote = remote(vni, hosts)
        flows.append(f"table={FORWARD},priority=100,reg6={vni},reg7=0,dl_dst={mac},"
                     f"actions={','.join(here + to_remote) or 'drop'}")
        if here:
            flows.append(f"table={FORWARD},priority=100,reg6={vni},reg7=1,dl_dst={mac},actions={here[0]}")

    local_vnis = {p.vni for p in local}
    for vni in sorted(local_vnis):
        ports = [f"output:{p.ofport}" for p in sorted(local, key=lambda p: p.ofport) if p.vni == vni]
        to_remote = remote(vni, hosts_by_vni.get(vni, set()))
        flows.append(f"table={FORWARD},priority=50,reg6={vni},reg7=0,{BROADCAST},actions={','.join(ports + to_remote)}")
        flows.append(f"table={FORWARD},priority=50,reg6={vni},reg7=1,{BROADCAST},actions={','.join(ports)}")
    return flows
