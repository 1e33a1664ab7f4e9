"""The API/scheduler replica's metrics: every RPC by method and code (counted by the API's
request interceptor, apiserver/requests.py), what placement does
(latency, batch size, commits, conflicts, refusals by reason), and what the replica is (its
cache's freshness, the controllers it leads).

Counters the code already keeps (the cache's revision, a runner's leadership) are read when
Prometheus scrapes, by a collector, not pushed on every change: a placement pays only for the
few observations below (about a microsecond each, against a ~0.5 ms placement)."""
from __future__ import annotations

from typing import Any, Iterable, Protocol

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


def refusal_reason(rejection: Any) -> str:
    """A bounded label for why placement refused a VM: the dimension it lacked everywhere, else
    the filter that ruled out the most nodes (vdcos.scheduler.core.result.Rejection)."""
    if rejection.dimensions:
        return f"insufficient_{rejection.dimensions[0].dimension}"
    if rejection.filters:
        worst = max(rejection.filters, key=lambda f: f.nodes_ruled_out)
        return f"filter_{worst.filter}"
    return "no_nodes" if not rejection.nodes_total else "other"
