"""The OpenFlow tables a host gets, from cluster state alone (pure)."""
from __future__ import annotations

from vdcos.vswitch.flows import LocalPort, RemoteBinding, host_flows

RED, BLUE = 1000, 1001
M1, M2, M3 = "02:00:03:e8:00:02", "02:00:03:e8:00:03", "02:00:03:e9:00:02"
TUNNELS = {"h2": 7, "h3": 8}


def forward(flows: list[str], match: str) -> str:
    hits = [f for f in flows if f.startswith("table=10") and match in f]
    assert len(hits) == 1, (match, hits)
    return hits[0].split("actions=", 1)[1]


def test_local_ports_are_tagged_only_with_their_own_mac() -> None:
    flows = host_flows("h1", [LocalPort("red/a", RED, M1, 3)], [], TUNNELS)
    assert f"table=0,priority=100,in_port=3,dl_src={M1},actions=load:{RED}->NXM_NX_REG6[]" in flows[2]
    assert "table=0,priority=0,actions=drop" in flows


def test_known_mac_goes_to_its_host_and_frames_from_tunnels_never_go_back() -> None:
    flows = host_flows("h1", [LocalPort("red/a", RED, M1, 3)], [RemoteBinding(RED, M2, "h2")], TUNNELS)
    assert forward(flows, f"reg7=0,dl_dst={M2}") == f"set_field:{RED}->tun_id,output:7"
    assert not [f for f in flows if f"reg7=1,dl_dst={M2}" in f]
    assert forward(flows, f"reg7=1,dl_dst={M1}") == "output:3"


def test_a_migrating_port_bound_on_two_hosts_gets_every_frame_twice() -> None:
    both = [RemoteBinding(RED, M2, "h2"), RemoteBinding(RED, M2, "h3")]
    flows = host_flows("h1", [LocalPort("red/a", RED, M1, 3)], both, TUNNELS)
    assert forward(flows, f"reg7=0,dl_dst={M2}") == f"set_field:{RED}->tun_id,output:7,output:8"


def test_broadcast_reaches_only_hosts_with_ports_on_that_network() -> None:
    local = [LocalPort("red/a", RED, M1, 3), LocalPort("blue/b", BLUE, M3, 4)]
    flows = host_flows("h1", local, [RemoteBinding(RED, M2, "h3")], TUNNELS)
    assert forward(flows, f"reg6={RED},reg7=0,dl_dst=01") == f"output:3,set_field:{RED}->tun_id,output:8"
    assert forward(flows, f"reg6={BLUE},reg7=0,dl_dst=01") == "output:4"
    assert forward(flows, f"reg6={RED},reg7=1,dl_dst=01") == "output:3"


def test_tenants_with_the_same_addresses_are_kept_apart_by_vni() -> None:
    flows = host_flows("h1", [LocalPort("blue/b", BLUE, M3, 4)], [RemoteBinding(RED, M2, "h2")], TUNNELS)
    assert not [f for f in flows if f"reg6={BLUE}" in f and M2 in f]
    assert not [f for f in flows if f"reg6={RED}" in f and "dl_dst=01" in f]  # no red port here: no red flood
