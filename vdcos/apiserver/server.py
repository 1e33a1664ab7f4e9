"""The API daemon (`python -m vdcos.apiserver`): the servicers on one gRPC server, health and
reflection on, with the placement engine (cache + worker), the replica registration and the
controllers in the same process."""
from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vdcos import logs
from vdcos.apiserver.audit import RETENTION_S, AuditLog, AuditServicer
from vdcos.apiserver.authz import AuthInterceptor, Authorizer
from vdcos.apiserver.capacity import CapacityServicer
from vdcos.apiserver.event import EventServicer
from vdcos.apiserver.ha import HaServicer
from vdcos.apiserver.migration import MigrationServicer
from vdcos.apiserver.network import NetworkServicer
from vdcos.apiserver.node import NodeServicer
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.placement import PlacementServicer
from vdcos.apiserver.policy import QosPolicyServicer
from vdcos.apiserver.project import ProjectServicer
from vdcos.apiserver.requests import RequestInterceptor
from vdcos.apiserver.tokens import TokenLookup, TokenServicer
from vdcos.apiserver.usage import UsageServicer
from vdcos.apiserver.vm import VmServicer
from vdcos.apiserver.volume import VolumeServicer
from vdcos.controllers import start_all
from vdcos.controllers.metering import PERIOD_S as METERING_PERIOD_S
from vdcos.events import Recorder
from vdcos.host.wakeup import CpuWakeupLatency
from vdcos.metrics.api import ApiMetrics
from vdcos.metrics.http import MetricsServer
from vdcos.reconcile import Runner
from vdcos.scheduler.cache import ClusterCache
from vdcos.scheduler.collector import FrozenOldGeneration
from vdcos.scheduler.replicas import Replicas
from vdcos.scheduler.worker import LINGER_MS, MAX_BATCH, Scheduler
from vdcos.security.pki import Authority, TlsFiles
from vdcos.security.tls import add_etcd_flags, add_insecure_flag, etcd_tls, server_credentials, warn_insecure
from vdcos.state.etcd import EtcdStore
from vdcos.state.store import Store
from vdcos.v1 import (audit_service_pb2, audit_service_pb2_grpc, capacity_service_pb2, capacity_service_pb2_grpc,
                      event_service_pb2, event_service_pb2_grpc, ha_service_pb2, ha_service_pb2_grpc,
                      migration_service_pb2,
                      migration_service_pb2_grpc, network_service_pb2, network_service_pb2_grpc, node_service_pb2,
                      node_service_pb2_grpc, placement_service_pb2, placement_service_pb2_grpc,
                      project_service_pb2, project_service_pb2_grpc,
                      qos_policy_service_pb2, qos_policy_service_pb2_grpc, token_service_pb2,
                      token_service_pb2_grpc, usage_service_pb2, usage_service_pb2_grpc, vm_service_pb2,
                      vm_service_pb2_grpc,
                      volume_service_pb2, volume_service_pb2_grpc)

log = logging.getLogger("vdcos.apiserver")

SERVICES = (
    (vm_service_pb2, "VmService", vm_service_pb2_grpc.add_VmServiceServicer_to_server, VmServicer),
    (node_service_pb2, "NodeService", node_service_pb2_grpc.add_NodeServiceServicer_to_server, NodeServicer),
    (qos_policy_service_pb2, "QosPolicyService", qos_policy_service_pb2_grpc.add_QosPolicyServiceServicer_to_server,
     QosPolicyServicer),
    (placement_service_pb2, "PlacementService", placement_service_pb2_grpc.add_PlacementServiceServicer_to_server,
     PlacementServicer),
    (capacity_service_pb2, "CapacityService", capacity_service_pb2_grpc.add_CapacityServiceServicer_to_server,
     CapacityServicer),
    (migration_service_pb2, "MigrationService", migration_service_pb2_grpc.add_MigrationServiceServicer_to_server,
     MigrationServicer),
    (network_service_pb2, "NetworkService", network_service_pb2_grpc.add_NetworkServiceServicer_to_server,
     NetworkServicer),
    (volume_service_pb2, "VolumeService", volume_service_pb2_grpc.add_VolumeServiceServicer_to_server,
     VolumeServicer),
    (ha_service_pb2, "HaService", ha_service_pb2_grpc.add_HaServiceServicer_to_server, HaServicer),
    (token_service_pb2, "TokenService", token_service_pb2_grpc.add_TokenServiceServicer_to_server, TokenServicer),
    (project_service_pb2, "ProjectService", project_service_pb2_grpc.add_ProjectServiceServicer_to_server,
     ProjectServicer),
    (audit_service_pb2, "AuditService", audit_service_pb2_grpc.add_AuditServiceServicer_to_server, AuditServicer),
    (event_service_pb2, "EventService", event_service_pb2_grpc.add_EventServiceServicer_to_server, EventServicer),
    (usage_service_pb2, "UsageService", usage_service_pb2_grpc.add_UsageServiceServicer_to_server, UsageServicer),
)


@dataclass
class SchedulerServer:
    server: grpc.aio.Server
    port: int
    cache: ClusterCache
    scheduler: Scheduler
    ops: Operations
    replicas: Replicas
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    controllers: list[Runner]
    # With TLS: the mutual-TLS port (client certificates); `port` takes bearer tokens.
    mtls_port: int = 0
    audit: AuditLog | None = None
    metrics: MetricsServer | None = None
    events: Recorder | None = None

    def stop(self, grace: float = 1.0) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result(grace + 5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if self.audit is not None:
            self.audit.stop()
        self.replicas.stop()
        for c in self.controllers:
            c.stop()
        self.ops.rebalancer.stop()
        self.ops.planner_pool.close()
        self.scheduler.stop()
        if self.events is not None:
            self.events.stop()
        self.cache.stop()


async def _build_server(addr: str, ops: Operations, tls: TlsFiles | None, mtls_addr: str, audit: AuditLog | None,
                        metrics: ApiMetrics | None
                        ) -> tuple[grpc.aio.Server, int, int, Callable[[], Coroutine[Any, Any, None]]]:
    # With TLS, every call is authorized by the caller's certificate or token (authz.py), and
    # each mutating one is audited; --insecure has no identities to check. Request ids, metrics
    # and the call log outermost (requests.py): calls refused at authorization count too.
    interceptors: list[grpc.aio.ServerInterceptor] = [RequestInterceptor(metrics)]
    if tls is not None:
        interceptors.append(AuthInterceptor(Authorizer(tls.ca.read_bytes(), TokenLookup(ops.store)), audit))
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)], interceptors=interceptors)
    names = []
    for mod, svc, add, servicer in SERVICES:
        add(servicer(ops), server)  # type: ignore[no-untyped-call]  # generated, unannotated
        names.append(mod.DESCRIPTOR.services_by_name[svc].full_name)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    async def serving() -> None:
        """Health follows the cache (as it is when this runs: changes may come in bursts)."""
        ok = ops.cache.synced
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *names):
            await health_servicer.set(name, status)
    await serving()
    reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    # gRPC's Python server cannot ask for a client certificate without requiring one: bearer
    # tokens on `addr` (TLS), certificates on `mtls_addr` (mutual TLS: a client without one from
    # the datacenter CA is refused at the handshake).
    port = (server.add_insecure_port(addr) if tls is None
            else server.add_secure_port(addr, server_credentials(tls, require_client_cert=False)))
    mtls_port = 0 if tls is None else server.add_secure_port(mtls_addr, server_credentials(tls, require_client_cert=True))
    if port == 0 or (tls is not None and mtls_port == 0):
        raise RuntimeError(f"cannot bind {addr} or {mtls_addr}")
    await server.start()
    return server, port, mtls_port, serving


def create_server(addr: str, store: Store, *, max_batch: int = MAX_BATCH, io_threads: int = 8,
                  linger: float = LINGER_MS / 1000, tls: TlsFiles | None = None,
                  mtls_addr: str = "127.0.0.1:0", audit_retention_s: float = RETENTION_S,
                  authority: Authority | None = None, metrics_addr: str = "",
                  metering_period_s: float = METERING_PERIOD_S) -> SchedulerServer:
    """Bind `addr` (port 0 picks one) and start serving; returns the bound ports. With the
    replica's certificate `tls`: TLS on `addr` for callers with bearer tokens, and mutual TLS
    on `mtls_addr` for callers with certificates; None serves plaintext on `addr` alone
    (--insecure, and tests that say so).

    One asyncio loop on its own thread serves every RPC (no thread per call: the sync server's
    hand-offs cost more than placing the VM); the placement worker resolves its futures, and
    blocking etcd reads run on a small pool. With `metrics_addr`, its Prometheus metrics are
    served there (metrics/http.py: mutual TLS with `tls`'s CA)."""
    # The compiled decision loop (numba, ~0.5 s to load) is loaded now, not by the first placement.
    importlib.import_module("vdcos.scheduler.core.kernel")
    metrics = ApiMetrics() if metrics_addr else None
    recorder = Recorder(store, trim=True).start()
    cache = ClusterCache(store).start()
    replicas = Replicas(store)
    sched = Scheduler(store, cache, max_batch=max_batch, linger=linger, lane=lambda: replicas.lane,
                      metrics=metrics, emit=recorder.emit).start()
    ops = Operations(store, cache, sched, authority, emit=recorder.emit)
    controllers = start_all(store, ops.rebalancer, cache, lambda: replicas.lane, recorder.emit, metering_period_s)
    served = None
    if metrics is not None:
        metrics.watch(cache, controllers)
        served = MetricsServer(metrics.registry, metrics_addr, tls).start()
    loop = asyncio.new_event_loop()
    loop.set_default_executor(futures.ThreadPoolExecutor(io_threads, thread_name_prefix="io"))
    thread = threading.Thread(target=loop.run_forever, name="grpc-loop", daemon=True)
    thread.start()
    audit = AuditLog(store, addr, audit_retention_s).start() if tls is not None else None
    server, port, mtls_port, serving = asyncio.run_coroutine_threadsafe(
        _build_server(addr, ops, tls, mtls_addr, audit, metrics), loop).result(30)
    # NOT_SERVING while the cache re-lists after a lost watch.
    def follow(_: bool) -> None:
        asyncio.run_coroutine_threadsafe(serving(), loop)
    cache.on_synced(follow)
    asyncio.run_coroutine_threadsafe(serving(), loop).result(5)  # a change before the line above
    replicas.start(f"{addr.rpartition(':')[0]}:{port}", served.address if served else "")
    if audit is not None:
        audit.replica = f"{addr.rpartition(':')[0]}:{port}"
    return SchedulerServer(server, port, cache, sched, ops, replicas, loop, thread, controllers, mtls_port, audit,
                           served, recorder)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vdcos-scheduler", description="vdcos gRPC scheduler")
    ap.add_argument("--etcd", required=True, help="etcd's members: host:port[,host:port...]")
    ap.add_argument("--listen", default="127.0.0.1:0", help="where callers with bearer tokens connect (TLS)")
    ap.add_argument("--listen-mtls", default="127.0.0.1:0",
                    help="where callers with certificates from the datacenter CA connect (mutual TLS)")
    ap.add_argument("--mtls-port-file", type=Path, help="write the bound mutual-TLS port here once serving")
    ap.add_argument("--tls-cert", type=Path, help="this replica's certificate (PEM), served to clients")
    ap.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    ap.add_argument("--ca-dir", type=Path, help="the datacenter CA's folder (ca.pem, ca-key.pem): this replica "
                                                "certifies hosts that join (vdcos join)")
    add_etcd_flags(ap)
    add_insecure_flag(ap)
    ap.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    ap.add_argument("--metrics-listen", default="", metavar="ADDR",
                    help="serve Prometheus metrics at https://ADDR/metrics (mutual TLS; port 0 picks one). "
                         "Off unless given")
    ap.add_argument("--metrics-port-file", type=Path, help="write the metrics port here once serving")
    ap.add_argument("--log-json", action="store_true",
                    help="log JSON lines, each call's request id in them (also with VDCOS_LOG_JSON=1)")
    ap.add_argument("--audit-retention-h", type=float, default=RETENTION_S / 3600,
                    help="hours the audit log keeps its entries (default 168: 7 days)")
    ap.add_argument("--io-threads", type=int, default=8, help="threads for blocking etcd reads")
    ap.add_argument("--max-batch", type=int, default=MAX_BATCH, help="VMs per commit at most")
    ap.add_argument("--linger-ms", type=float, default=LINGER_MS,
                    help="how long a batch may wait for the callers it expects (0: never)")
    ap.add_argument("--cpu-wakeup-latency-us", type=int, metavar="US",
                    help="while serving, hold the host's idle CPUs to this wake-up latency (PM QoS; 0: they "
                         "poll instead of halting). Costs power; see vdcos/host/wakeup.py. Off unless given")
    args = ap.parse_args(argv)
    if args.linger_ms < 0:
        ap.error("--linger-ms must be 0 or more")
    if args.max_batch < 1:
        ap.error("--max-batch must be 1 or more")
    if not 1 <= args.audit_retention_h <= 24 * 3650:
        ap.error("--audit-retention-h must be between 1 and 87600 hours")
    wakeup = None
    if args.cpu_wakeup_latency_us is not None:
        try:
            wakeup = CpuWakeupLatency(args.cpu_wakeup_latency_us).hold()
        except (ValueError, OSError) as e:
            ap.error(f"--cpu-wakeup-latency-us: {e}")
    etcd_files = etcd_tls(args, ap)
    serving_files = None
    if etcd_files is not None:
        # The API's own certificate defaults to the one it shows etcd (a replica's identity).
        cert, key = args.tls_cert or etcd_files.cert, args.tls_key or etcd_files.key
        serving_files = TlsFiles(etcd_files.ca, cert, key)
    elif args.tls_cert or args.tls_key or args.ca_dir:
        ap.error("--insecure and --tls-cert/--tls-key/--ca-dir exclude each other")
    try:
        authority = Authority(args.ca_dir) if args.ca_dir else None
    except (OSError, ValueError) as e:
        ap.error(f"--ca-dir: {e}")
    logs.setup("apiserver", json_lines=True if args.log_json else None)
    if args.insecure:
        warn_insecure()
    store = EtcdStore(args.etcd, tls=etcd_files)
    srv = create_server(args.listen, store, max_batch=args.max_batch, io_threads=args.io_threads,
                        linger=args.linger_ms / 1000, tls=serving_files, mtls_addr=args.listen_mtls,
                        audit_retention_s=args.audit_retention_h * 3600,
                        authority=authority, metrics_addr=args.metrics_listen)
    # The cluster loaded at start (every node's records: 10,000s of objects) lives as long as
    # the daemon: out of the collector's sight, it is not walked by every full collection; nor
    # is what later full collections find alive.
    collector = FrozenOldGeneration().install().sweep_when_idle(srv.scheduler.idle_for)
    log.info("serving %s on port %d (etcd %s, pid %d%s)",
             "PLAINTEXT" if args.insecure else f"TLS with tokens, mutual TLS on port {srv.mtls_port}", srv.port,
             args.etcd, os.getpid(),
             f", CPU wake-up latency held at {wakeup.microseconds} µs" if wakeup else "")
    # The mutual-TLS port first: a caller that sees the port file may go to either.
    for path, port in ((args.metrics_port_file, srv.metrics.port if srv.metrics else 0),
                       (args.mtls_port_file, srv.mtls_port), (args.port_file, srv.port)):
        if path and port:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(str(port))
            tmp.replace(path)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    collector.uninstall()
    log.info("full collections: %d froze their survivors, %d walked every object (%d while idle; longest %.0f ms)",
             collector.freezes, collector.sweeps, collector.idle_sweeps, collector.longest_sweep_ms)
    srv.stop()
    store.close()
    if wakeup:
        wakeup.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
