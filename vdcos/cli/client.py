"""gRPC stubs for the CLI, and errors rendered for people: the field, the reason, the numbers."""
from __future__ import annotations

import json
from typing import Any, Sequence

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from vdcos.security.pki import API_NAME, TlsFiles
from vdcos.security.tls import secure_channel
from vdcos.v1 import (audit_service_pb2, audit_service_pb2_grpc, capacity_service_pb2, capacity_service_pb2_grpc,
                      event_service_pb2, event_service_pb2_grpc, ha_service_pb2, ha_service_pb2_grpc,
                      migration_service_pb2, migration_service_pb2_grpc,
                      network_service_pb2, network_service_pb2_grpc, node_service_pb2, node_service_pb2_grpc,
                      placement_service_pb2, placement_service_pb2_grpc, project_service_pb2,
                      project_service_pb2_grpc, qos_policy_service_pb2,
                      qos_policy_service_pb2_grpc, token_service_pb2, token_service_pb2_grpc, types_pb2,
                      usage_service_pb2, usage_service_pb2_grpc, vm_service_pb2,
                      vm_service_pb2_grpc, volume_service_pb2,
                      volume_service_pb2_grpc)


# Calls a client may send again to another replica after UNAVAILABLE (the replica died, or its
# cache is re-listing): reads, and creates of VMs (a VM's name is unique, and a create's
# request_id makes its retry answer with the VM it created). Not the watches: a watch that
# ends says "list again" to its caller, which a transparent retry would hide.
# They also wait, within their deadline, while no replica is serving (as etcd's own client does):
# after the etcd leader dies every replica re-lists its cache at once, for longer than five
# retries' backoff when the machine is slow.
_RETRIED_PREFIXES = ("Get", "List", "Explain", "Plan", "Cordon", "Uncordon")
_RETRIED = ("CreateVm", "BatchCreateVms")


def _service_config() -> str:
    names = []
    for pb2 in (audit_service_pb2, capacity_service_pb2, event_service_pb2, ha_service_pb2, migration_service_pb2,
                network_service_pb2, node_service_pb2,
                placement_service_pb2, project_service_pb2, qos_policy_service_pb2, token_service_pb2,
                usage_service_pb2, vm_service_pb2,
                volume_service_pb2):
        for svc in pb2.DESCRIPTOR.services_by_name.values():
            names += [{"service": svc.full_name, "method": m.name} for m in svc.methods
                      if m.name.startswith(_RETRIED_PREFIXES) or m.name in _RETRIED]
    return json.dumps({
        # Every replica in turn; one that says NOT_SERVING (health) is skipped while it does.
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [{"name": names, "waitForReady": True, "retryPolicy": {
            "maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"]}}],
    })


def target(addrs: str | Sequence[str]) -> str:
    """One address as it is; several (`host:port,host:port`) as one target over all of them."""
    items = [a.strip() for a in (addrs.split(",") if isinstance(addrs, str) else addrs) if a.strip()]
    if not items:
        raise ValueError("no API address given")
    return items[0] if len(items) == 1 else "ipv4:" + ",".join(items)


class Client:
    """Stubs over one channel to every API replica given, with failover between them.

    `tls`: the datacenter CA that the replicas' certificates must chain to and, to prove who
    the caller is, either a certificate and key it issued (to the replicas' mutual-TLS
    addresses) or a bearer `token` (to their token addresses). None speaks plaintext, to an API
    started with --insecure."""

    def __init__(self, addr: str | Sequence[str], tls: TlsFiles | None = None, token: str | None = None) -> None:
        if token and tls is None:
            raise ValueError("a token is sent over TLS only: give the datacenter's CA")
        options: list[tuple[str, object]] = [
            ("grpc.service_config", _service_config()), ("grpc.enable_retries", 1),
            # Back within a second of a replica's restart, not gRPC's default two minutes.
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1_000)]
        self.channel = (grpc.insecure_channel(target(addr), options=options) if tls is None
                        else secure_channel(target(addr), tls, options, token, API_NAME))
        self.vms = vm_service_pb2_grpc.VmServiceStub(self.channel)
        self.nodes = node_service_pb2_grpc.NodeServiceStub(self.channel)
        self.policies = qos_policy_service_pb2_grpc.QosPolicyServiceStub(self.channel)
        self.placement = placement_service_pb2_grpc.PlacementServiceStub(self.channel)
        self.capacity = capacity_service_pb2_grpc.CapacityServiceStub(self.channel)
        self.migrations = migration_service_pb2_grpc.MigrationServiceStub(self.channel)
        self.networks = network_service_pb2_grpc.NetworkServiceStub(self.channel)
        self.volumes = volume_service_pb2_grpc.VolumeServiceStub(self.channel)
        self.ha = ha_service_pb2_grpc.HaServiceStub(self.channel)
        self.tokens = token_service_pb2_grpc.TokenServiceStub(self.channel)
        self.projects = project_service_pb2_grpc.ProjectServiceStub(self.channel)
        self.audit = audit_service_pb2_grpc.AuditServiceStub(self.channel)
        self.events = event_service_pb2_grpc.EventServiceStub(self.channel)
        self.usage = usage_service_pb2_grpc.UsageServiceStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.channel.close()


def rejection_lines(rej: types_pb2.PlacementRejection) -> list[str]:
    lines = [f"  nodes: {rej.nodes_total} total, {rej.nodes_feasible} feasible; "
             f"{'could fit later (retryable)' if rej.retryable else 'can never fit as asked'}"]
    for f in rej.filters:
        lines.append(f"  filter {f.filter}: ruled out {f.nodes_ruled_out} nodes ({f.reason})")
    for d in rej.dimensions:
        lines.append(f"  {d.dimension} [{d.pool} pool]: {d.nodes_short} nodes short; requested {d.requested}, "
                     f"largest free {d.largest_free} on {d.largest_free_node}")
    return lines


def describe_error(e: grpc.RpcError) -> str:
    st = rpc_status.from_call(e)  # type: ignore[arg-type]
    if st is None:
        code = e.code().name if e.code() else "UNKNOWN"
        hint = ("\n  no API replica served in time (`vdcos status` shows which run; --timeout sets the wait)"
                if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED else "")
        return f"error: {code}: {e.details()}{hint}"
    return describe_status(st)


def describe_status(st: status_pb2.Status) -> str:
    code = code_pb2.Code.Name(st.code) if st.code in code_pb2.Code.values() else str(st.code)
    lines = [f"error: {code}: {st.message}"]
    for d in st.details:
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            lines = [f"error: {code}: invalid request"]
            lines += [f"  {v.field}: {v.description}" for v in br.field_violations]
        elif d.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            qf = error_details_pb2.QuotaFailure()
            d.Unpack(qf)
            lines = [f"error: {code}: quota exceeded"] + [f"  {v.description}" for v in qf.violations]
        elif d.Is(types_pb2.PlacementRejection.DESCRIPTOR):
            rej = types_pb2.PlacementRejection()
            d.Unpack(rej)
            lines += rejection_lines(rej)
    return "\n".join(lines)
