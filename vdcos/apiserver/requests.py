"""What happens around every call, in one interceptor (outermost: refusals at authorization
count too): it runs under a request id (vdcos/logs.py: the caller's `x-request-id` metadata
when valid, else a new one), which its log lines carry and the records it commits keep
(servicers read it with `current()`); it is counted and timed by method and code when the
replica serves metrics; and each mutating call ends with one log line: method, what it named,
how it ended, how long it took."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import grpc
import grpc.aio

from vdcos import logs
from vdcos.apiserver.audit import target_of
from vdcos.apiserver.authz import RULES
from vdcos.metrics.api import ApiMetrics

log = logging.getLogger("vdcos.apiserver.calls")


def current() -> str:
    """The request id of the call being served ("" outside one)."""
    return logs.REQUEST_ID.get()


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == logs.METADATA_KEY and isinstance(v, str) and logs.valid(v):
            return v
    return logs.new_id()


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    if error is None:
        return "OK"
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return "CANCELLED" if isinstance(error, (asyncio.CancelledError, GeneratorExit)) else "UNKNOWN"


class RequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is unannotated
    def __init__(self, metrics: ApiMetrics | None = None) -> None:
        self.metrics = metrics

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        rule = RULES.get(method)
        mutating = rule is not None and not rule.reads
        m = self.metrics
        seconds = m.request_seconds.labels(method) if m is not None else None

        def ended(t0: float, request: Any, context: grpc.aio.ServicerContext, error: BaseException | None) -> None:
            took = time.perf_counter() - t0
            code = _code(context, error)
            if m is not None and seconds is not None:
                seconds.observe(took)
                m.requests.labels(method, code).inc()
            if mutating:
                log.info("%s %s: %s in %.1f ms", method.rsplit("/", 1)[-1], target_of(request) or "-", code,
                         took * 1000)

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:
                t0 = time.perf_counter()
                logs.REQUEST_ID.set(_request_id(context))  # this call's task has a context of its own
                try:
                    out = await inner(request, context)
                except BaseException as e:
                    ended(t0, request, context, e)
                    raise
                ended(t0, request, context, None)
                return out
            make = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                    else grpc.stream_unary_rpc_method_handler)
            return make(answer, handler.request_deserializer, handler.response_serializer)
        inner = handler.unary_stream or handler.stream_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            t0 = time.perf_counter()
            logs.REQUEST_ID.set(_request_id(context))
            try:
                result = inner(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:
                    await result
            except BaseException as e:
                ended(t0, request, context, e)
                raise
            ended(t0, request, context, None)
        make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return make(stream, handler.request_deserializer, handler.response_serializer)
