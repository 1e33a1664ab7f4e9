"""Domain errors -> gRPC status with google.rpc details (BadRequest, QuotaFailure, ErrorInfo,
PlacementRejection)."""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, TypeVar

import grpc
import grpc.aio
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from vdcos.apiserver.convert import rejection_to_pb
from vdcos.errors import InvalidArgument, QuotaExceeded, Unschedulable, VdcosError
from vdcos.state.store import StoreError

log = logging.getLogger(__name__)
DOMAIN = "vdcos.io"
F = TypeVar("F", bound=Callable[..., Any])


def _pack(msg: Any) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def to_status(e: VdcosError) -> status_pb2.Status:
    details = []
    if isinstance(e, InvalidArgument):
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in e.details or []])))
    if isinstance(e, Unschedulable):
        rej = e.details
        details.append(_pack(error_details_pb2.ErrorInfo(
            reason="NO_FEASIBLE_NODE" if rej.retryable else "NEVER_SCHEDULABLE", domain=DOMAIN,
            metadata={"vm": rej.vm, "nodes_total": str(rej.nodes_total)})))
        details.append(_pack(rejection_to_pb(rej)))
    if isinstance(e, QuotaExceeded):
        details.append(_pack(error_details_pb2.QuotaFailure(violations=[
            error_details_pb2.QuotaFailure.Violation(
                subject=f"project:{v.project}", description=str(v), api_service=DOMAIN,
                quota_metric=f"{DOMAIN}/{v.quota}", quota_id=f"project-{v.quota}", quota_value=v.limit,
                quota_dimensions={"project": v.project, "used": str(v.used), "wanted": str(v.wanted)})
            for v in e.details or []])))
    return status_pb2.Status(code=getattr(code_pb2, e.code), message=e.message[:4000], details=details)


def as_status(e: Exception) -> status_pb2.Status:
    """Any error a call can end with, as the status (and details) its client gets."""
    if isinstance(e, VdcosError):
        return to_status(e)
    if isinstance(e, StoreError):
        return status_pb2.Status(code=code_pb2.UNAVAILABLE, message=f"cluster state store unavailable: {e}")
    if isinstance(e, TimeoutError):
        return status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message="scheduler did not answer in time")
    log.error("internal error", exc_info=e)
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error (see the scheduler log)")


async def _abort(context: grpc.aio.ServicerContext, e: Exception) -> None:
    st = rpc_status.to_status(as_status(e))
    await context.abort(st.code, st.details, st.trailing_metadata)


def rpc(fn: F) -> F:
    """Every unary servicer method: domain errors become their status; nothing escapes as a crash."""
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await _abort(context, e)
    return wrapper  # type: ignore[return-value]


def stream_rpc(fn: F) -> F:
    """Every server-streaming method: a stream ends OK only when it is complete; any error ends
    it with the error's status (a bug with INTERNAL), never as a quiet end the client would
    take for "nothing more"."""
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for item in fn(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await _abort(context, e)
    return wrapper  # type: ignore[return-value]
