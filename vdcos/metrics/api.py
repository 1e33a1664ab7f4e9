"""The API/scheduler replica's metrics: every RPC by method and code, what placement does
(latency, batch size, commits, conflicts, refusals by reason), and what the replica is (its
cache's freshness, the controllers it leads).

Counters the code already keeps (the cache's revision, a runner's leadership) are read when
Prometheus scrapes, by a collector, not pushed on every change: a placement pays only for the
few observations below (about a microsecond each, against a ~0.5 ms placement)."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Iterable, Protocol

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Placement answers in milliseconds; an RPC may take up to a deadline's seconds.
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Leading(Protocol):
    """What a controller runner tells (vdcos.reconcile.Runner)."""
    leading: bool

    @property
    def name(self) -> str: ...


class CacheState(Protocol):
    """What the cluster cache tells (vdcos.scheduler.cache.ClusterCache)."""
    @property
    def synced(self) -> bool: ...

    @property
    def revision(self) -> int: ...

    def seconds_since_event(self) -> float: ...


class ApiMetrics:
    """One per process, on its own registry (tests and benchmarks run several in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("vdcos_api_requests", "RPCs answered, by method and status code",
                                ["method", "code"], registry=r)
        self.request_seconds = Histogram("vdcos_api_request_duration_seconds", "RPC latency, by method",
                                         ["method"], buckets=FAST_BUCKETS, registry=r)
        self.placement_seconds = Histogram("vdcos_placement_duration_seconds",
                                           "From a VM's arrival at the placement worker to its committed placement",
                                           buckets=FAST_BUCKETS, registry=r)
        self.batch_size = Histogram("vdcos_placement_batch_size", "VMs per placement commit transaction",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.commits = Counter("vdcos_placement_commits", "Placement commit transactions, by outcome",
                               ["outcome"], registry=r)
        self.retries = Counter("vdcos_placement_retries", "Placements decided again after a commit conflict",
                               registry=r)
        self.refusals = Counter("vdcos_placement_refusals", "VMs refused a placement, by reason", ["reason"],
                                registry=r)
        self._state = _State()
        r.register(self._state)

    def watch(self, cache: CacheState | None = None, runners: Iterable[Leading] = ()) -> None:
        """Report `cache`'s freshness and each runner's leadership at every scrape."""
        self._state.cache = cache
        self._state.runners = list(runners)

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _Interceptor(self)


class _State(Collector):
    def __init__(self) -> None:
        self.cache: CacheState | None = None
        self.runners: list[Leading] = []

    def collect(self) -> Iterable[Any]:
        if self.cache is not None:
            yield GaugeMetricFamily("vdcos_cache_synced", "1 while the cluster cache follows etcd's watch "
                                    "(0: re-listing; placements are refused meanwhile)", value=int(self.cache.synced))
            yield GaugeMetricFamily("vdcos_cache_revision", "The etcd revision the cluster cache has applied",
                                    value=self.cache.revision)
            yield GaugeMetricFamily("vdcos_cache_last_event_age_seconds",
                                    "Seconds since the cache's watch last delivered a change or progress notice",
                                    value=self.cache.seconds_since_event())
        leader = GaugeMetricFamily("vdcos_controller_leader", "1 where this replica leads the controller",
                                   labels=["controller"])
        for r in self.runners:
            leader.add_metric([r.name], int(r.leading))
        yield leader

    def describe(self) -> Iterable[Any]:
        return []  # collected at scrape time only: nothing to check at registration


Handler = Callable[[Any, grpc.aio.ServicerContext], Any]


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    if error is None:
        return "OK"
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return "CANCELLED" if isinstance(error, (asyncio.CancelledError, GeneratorExit)) else "UNKNOWN"


class _Interceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is unannotated
    """Counts and times every call, outermost, so that refusals at authorization count too."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self.m = metrics

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        seconds = self.m.request_seconds.labels(method)
        requests = self.m.requests

        def ended(t0: float, context: grpc.aio.ServicerContext, error: BaseException | None) -> None:
            seconds.observe(time.perf_counter() - t0)
            requests.labels(method, _code(context, error)).inc()

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:
                t0 = time.perf_counter()
                try:
                    out = await inner(request, context)
                except BaseException as e:
                    ended(t0, context, e)
                    raise
                ended(t0, context, None)
                return out
            make = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                    else grpc.stream_unary_rpc_method_handler)
            return make(answer, handler.request_deserializer, handler.response_serializer)
        inner = handler.unary_stream or handler.stream_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            t0 = time.perf_counter()
            try:
                result = inner(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:
                    await result
            except BaseException as e:
                ended(t0, context, e)
                raise
            ended(t0, context, None)
        make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return make(stream, handler.request_deserializer, handler.response_serializer)


def refusal_reason(rejection: Any) -> str:
    """A bounded label for why placement refused a VM: the dimension it lacked everywhere, else
    the filter that ruled out the most nodes (vdcos.scheduler.core.result.Rejection)."""
    if rejection.dimensions:
        return f"insufficient_{rejection.dimensions[0].dimension}"
    if rejection.filters:
        worst = max(rejection.filters, key=lambda f: f.nodes_ruled_out)
        return f"filter_{worst.filter}"
    return "no_nodes" if not rejection.nodes_total else "other"
