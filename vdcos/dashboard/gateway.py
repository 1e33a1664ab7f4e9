"""The dashboard's way to the API: an HTTP/JSON call becomes the gRPC call of the same name, made
with the browser's own bearer token, as gRPC transcoding (grpc-gateway, Envoy) does.

The gateway holds no credential of its own towards the API: what a page may read or do is what
its token may, decided by the API's authorization alone, so the dashboard cannot grant more than
the CLI with the same token. Only unary methods are offered; a page polls what it shows.

Pure of HTTP: server.py maps paths and status codes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, message_factory
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from vdcos.cli.client import Client, describe_status, rejection_lines
from vdcos.v1 import (audit_service_pb2, capacity_service_pb2, event_service_pb2, ha_service_pb2,
                      migration_service_pb2, network_service_pb2, node_service_pb2, placement_service_pb2,
                      project_service_pb2, qos_policy_service_pb2, token_service_pb2, types_pb2, usage_service_pb2,
                      vm_service_pb2, volume_service_pb2)

CALL_TIMEOUT_S = 30.0
# What a browser may not reach even with a token that could: a host's way in is `vdcos join`'s.
NOT_OFFERED = frozenset({"NodeService/JoinNode"})


@dataclass(frozen=True)
class Method:
    path: str  # /vdcos.v1.VmService/GetVm
    request: type[Any]
    response: type[Any]


def _methods() -> dict[str, Method]:
    found: dict[str, Method] = {}
    for pb2 in (audit_service_pb2, capacity_service_pb2, event_service_pb2, ha_service_pb2, migration_service_pb2,
                network_service_pb2, node_service_pb2, placement_service_pb2, project_service_pb2,
                qos_policy_service_pb2, token_service_pb2, usage_service_pb2, vm_service_pb2, volume_service_pb2):
        for svc in pb2.DESCRIPTOR.services_by_name.values():
            for m in svc.methods:
                name = f"{svc.name}/{m.name}"
                if m.client_streaming or m.server_streaming or name in NOT_OFFERED:
                    continue
                found[name] = Method(f"/{svc.full_name}/{m.name}", message_factory.GetMessageClass(m.input_type),
                                     message_factory.GetMessageClass(m.output_type))
    return found


METHODS = _methods()


class CallFailed(Exception):
    """The call's gRPC status, as JSON for the page: the code, the message, and each detail as the
    CLI words it (the field of a bad request, a refusal's reasons, a quota's shortfall)."""

    def __init__(self, code: str, message: str, lines: list[str] | None = None,
                 violations: list[dict[str, str]] | None = None, rejection: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.body: dict[str, Any] = {"code": code, "message": message, "lines": lines or [message],
                                     "violations": violations or [], "rejection": rejection or []}


def _failed(e: grpc.RpcError) -> CallFailed:
    st = rpc_status.from_call(e)
    if st is None:
        code = e.code().name if e.code() else "UNKNOWN"
        return CallFailed(code, e.details() or code)
    violations: list[dict[str, str]] = []
    rejection: list[str] = []
    for d in st.details:
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            violations += [{"field": v.field, "description": v.description} for v in br.field_violations]
        elif d.Is(types_pb2.PlacementRejection.DESCRIPTOR):
            rej = types_pb2.PlacementRejection()
            d.Unpack(rej)
            rejection += [line.strip() for line in rejection_lines(rej)]
    code = code_pb2.Code.Name(st.code) if st.code in code_pb2.Code.values() else str(st.code)
    return CallFailed(code, st.message, describe_status(st).splitlines(), violations, rejection)


def to_json(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(msg, always_print_fields_with_no_presence=True,
                                                    preserving_proto_field_name=True)
    return out


class Gateway:
    """One channel to every API replica (with the CLI's failover between them); each call
    carries its caller's token."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def call(self, name: str, body: dict[str, Any], bearer: str | None) -> dict[str, Any]:
        method = METHODS.get(name)
        if method is None:
            raise CallFailed("NOT_FOUND", f"{name} is not a method the dashboard offers")
        try:
            request = json_format.ParseDict(body, method.request())
        except json_format.ParseError as e:
            # ParseError names the field: "Failed to parse spec field: ...".
            raise CallFailed("INVALID_ARGUMENT", f"invalid {method.request.DESCRIPTOR.name}: {e}") from None
        metadata = (("authorization", bearer),) if bearer else None
        stub = self.client.channel.unary_unary(method.path, request_serializer=method.request.SerializeToString,
                                               response_deserializer=method.response.FromString)
        try:
            return to_json(stub(request, timeout=CALL_TIMEOUT_S, metadata=metadata))
        except grpc.RpcError as e:
            raise _failed(e) from None
