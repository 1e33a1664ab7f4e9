"""The libvirt hypervisor driver: one host's libvirtd, reached by its URI.

QoS is enforced by libvirt through the host's own cgroup root: CPU shares and a VM-wide quota
in <cputune>, the memory hard limit set live (see domain.strip_memtune for why not in XML)."""
from __future__ import annotations

import os
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, TypeVar

import libvirt

from vdcos.host.libvirtd import CGROUP_ROOT, LibvirtHost
from vdcos.images import GuestImage
from vdcos.model import Disk, MigrationOptions, MigrationProgress, Nic, QosSettings, Resources, VmSpec
from vdcos.nodeagent.driver import (DiskCopy, DomainInfo, DomainState, DomainStats, DriverError, MigrationCancelled,
                                    MigrationResult)
from vdcos.nodeagent.libvirt import domain

# Without this every libvirtError is also printed on stderr.
libvirt.registerErrorHandler(lambda *_: None, None)

# QEMU's own memory next to the guest's: TCG translation cache, device state, libraries.
# Measured RSS of a 256 MiB TCG guest: ~210 MiB after boot, ~250 MiB while dirtying memory.
QEMU_OVERHEAD_MIB = 192
KIB = 1024
T = TypeVar("T")
# VIR_DOMAIN_MEMORY_PARAM_UNLIMITED (KiB); the Python binding does not export it.
UNLIMITED_KIB = 9007199254740991

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.RUNNING,   # paused briefly at a migration's switch-over
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.STOPPED,
}
# Paused by virDomainSuspend (SuspendVm), not by a migration's switch-over or an I/O error.
_PAUSED_ON_REQUEST = (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER)


def memory_hard_limit_kib(qos: QosSettings) -> int:
    return (qos.memory_limit_mib + QEMU_OVERHEAD_MIB) * KIB if qos.memory_limit_mib else 0


class LibvirtDriver:
    name = "libvirt"

    def __init__(self, uri: str, capacity: Resources, image: GuestImage, host_root: Path | None = None,
                 migrate_tls: bool = False) -> None:
        self.uri = uri
        # Migrations in QEMU's TLS, both ends' certificates checked (host/libvirtd.py sets it
        # up and refuses migrations without it).
        self.migrate_tls = migrate_tls
        self._capacity = capacity
        self._image = image
        self._root = host_root
        self._cgroup: Path | None = None  # its guests' cgroups (cpu controller); Path() for none
        self._device_cache: dict[tuple[str, int], tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    # --- connection ---------------------------------------------------------------------
    def _c(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                self._conn = None
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as e:
                raise DriverError(f"hypervisor unreachable at {self.uri}: {e}") from e
            return self._conn

    def connection(self) -> libvirt.virConnect:
        """The host's libvirtd, reopened if it went away (shared with the storage pools)."""
        return self._c()

    def _call(self, fn: Callable[[libvirt.virConnect], Any]) -> Any:
        try:
            return fn(self._c())
        except libvirt.libvirtError as e:
            raise DriverError(str(e)) from e

    def _dom(self, name: str) -> libvirt.virDomain | None:
        try:
            return self._c().lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise DriverError(str(e)) from e

    def _must(self, name: str) -> libvirt.virDomain:
        dom = self._dom(name)
        if dom is None:
            raise DriverError(f"domain {name!r} not defined")
        return dom

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None

    def console_file(self, name: str) -> Path | None:
        """The guest's serial console as seen from outside the host's mount namespace."""
        if self._root is None:
            return None
        return domain.host_console_file(self._root, name)

    # --- protocol -----------------------------------------------------------------------
    def host_capacity(self) -> Resources:
        return self._capacity

    def list_domains(self) -> list[DomainInfo]:
        out = []
        for dom in self._call(lambda c: c.listAllDomains()):
            try:
                code, reason = dom.state()
                state = DomainState.PAUSED if (code, reason) == _PAUSED_ON_REQUEST else \
                    _STATES.get(code, DomainState.STOPPED)
                xml = dom.XMLDesc(0)
                qos = domain.qos_from_xml(xml)
                if qos is not None and state is DomainState.RUNNING and \
                        self._live_hard_limit(dom) != memory_hard_limit_kib(qos):
                    qos = None  # not enforced yet (e.g. it just migrated in): apply again
                out.append(DomainInfo(dom.name(), dom.UUIDString(), state, qos, tuple(domain.disk_sources(xml)),
                                      domain.size_from_xml(xml)))
            except libvirt.libvirtError:
                continue  # gone between list and lookup
        return out

    @staticmethod
    def _live_hard_limit(dom: libvirt.virDomain) -> int:
        limit = int(dom.memoryParameters(libvirt.VIR_DOMAIN_AFFECT_LIVE).get("hard_limit", 0))
        return 0 if limit >= UNLIMITED_KIB else limit

    def define(self, spec: VmSpec, qos: QosSettings, nics: tuple[Nic, ...] = (),
               disks: tuple[Disk, ...] = ()) -> DomainInfo:
        dom = self._dom(spec.name)
        if dom is None:
            console = self.console_file(spec.name)
            if console is not None:
                console.unlink(missing_ok=True)  # a new VM of an old name starts a new log
            xml = domain.domain_xml(spec, qos, self._image, nics, disks)
            dom = self._call(lambda c: c.defineXML(xml))
        return DomainInfo(dom.name(), dom.UUIDString(), DomainState.STOPPED, qos)

    def redefine(self, spec: VmSpec, qos: QosSettings, nics: tuple[Nic, ...] = (),
                 disks: tuple[Disk, ...] = ()) -> None:
        dom = self._must(spec.name)
        if dom.isActive():
            raise DriverError(f"{spec.name} runs: only a stopped domain is redefined")
        xml = domain.domain_xml(spec, qos, self._image, nics, disks)
        try:  # the same name and UUID: libvirt replaces the definition
            self._call(lambda c: c.defineXML(xml))
        except libvirt.libvirtError as e:
            raise DriverError(f"redefining {spec.name}: {e}") from e

    def start(self, name: str) -> None:
        dom = self._must(name)
        try:
            if not dom.isActive():
                dom.create()
            qos = domain.qos_from_xml(dom.XMLDesc(0))
            if qos is not None:
                self._apply_live(dom, qos)
        except libvirt.libvirtError as e:
            raise DriverError(f"starting {name}: {e}") from e

    def stop(self, name: str) -> None:
        dom = self._must(name)
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as e:
            raise DriverError(str(e)) from e

    def shutdown(self, name: str) -> None:
        dom = self._must(name)
        try:
            if dom.isActive():
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError as e:
            raise DriverError(f"shutting {name} down: {e}") from e

    def reboot(self, name: str, hard: bool = False) -> None:
        dom = self._must(name)
        try:
            if hard:
                dom.reset(0)
            else:
                dom.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
        except libvirt.libvirtError as e:
            raise DriverError(f"rebooting {name}: {e}") from e

    def suspend(self, name: str) -> None:
        dom = self._must(name)
        try:
            if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
                dom.suspend()
        except libvirt.libvirtError as e:
            raise DriverError(f"suspending {name}: {e}") from e

    def resume(self, name: str) -> None:
        dom = self._must(name)
        try:
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
        except libvirt.libvirtError as e:
            raise DriverError(f"resuming {name}: {e}") from e

    def destroy(self, name: str) -> None:
        dom = self._dom(name)
        if dom is None:
            return
        try:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise DriverError(f"destroying {name}: {e}") from e

    def _apply_live(self, dom: libvirt.virDomain, qos: QosSettings) -> None:
        sched: dict[str, int] = {"cpu_shares": qos.cpu_shares}
        if qos.cpu_quota_us:
            sched |= {"global_period": qos.cpu_period_us, "global_quota": qos.cpu_quota_us}
        else:
            sched |= {"global_quota": -1}
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE
        dom.setSchedulerParametersFlags(sched, flags)
        limit = memory_hard_limit_kib(qos)
        dom.setMemoryParameters({"hard_limit": limit or UNLIMITED_KIB}, flags)
        tune = {"total_iops_sec": 0, "total_bytes_sec": 0} | domain.iotune_of(qos)
        for dev in domain.disk_targets(dom.XMLDesc(0)):
            dom.setBlockIoTune(dev, tune, flags)

    def apply_qos(self, name: str, qos: QosSettings) -> None:
        dom = self._must(name)
        try:
            xml = domain.with_qos(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), qos)
            self._call(lambda c: c.defineXML(xml))  # the next boot gets the same values
            if dom.isActive():
                self._apply_live(dom, qos)
        except libvirt.libvirtError as e:
            raise DriverError(f"applying QoS to {name}: {e}") from e

    def _device_flags(self, dom: libvirt.virDomain) -> int:
        live = libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0
        return live | libvirt.VIR_DOMAIN_AFFECT_CONFIG

    def attach_disk(self, name: str, disk: Disk, qos: QosSettings) -> None:
        self._device_cache = {k: v for k, v in self._device_cache.items() if k[0] != name}
        dom = self._must(name)
        try:
            xml = dom.XMLDesc(0)
            if disk.path in domain.disk_sources(xml):
                return
            dom.attachDeviceFlags(domain.disk_xml(disk, qos, domain.disk_targets(xml)), self._device_flags(dom))
        except libvirt.libvirtError as e:
            raise DriverError(f"attaching {disk.volume} to {name}: {e}") from e

    def detach_disk(self, name: str, path: str) -> None:
        self._device_cache = {k: v for k, v in self._device_cache.items() if k[0] != name}
        dom = self._must(name)
        try:
            dev = domain.disk_sources(dom.XMLDesc(0)).get(path)
            if dev is not None:
                # Returns once the guest released it, or after libvirt's wait with the unplug
                # still pending: the next reconcile round sees whether it is gone.
                dom.detachDeviceFlags(dev, self._device_flags(dom))
        except libvirt.libvirtError as e:
            raise DriverError(f"detaching {path} from {name}: {e}") from e

    def grow_disk(self, name: str, path: str, size_bytes: int) -> None:
        dom = self._must(name)
        try:
            if dom.blockInfo(path)[0] < size_bytes:
                dom.blockResize(path, size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        except libvirt.libvirtError as e:
            raise DriverError(f"growing {path} of {name}: {e}") from e

    def backup_disk(self, name: str, path: str, target: str, timeout_s: float = 600.0) -> bool:
        dom = self._dom(name)
        if dom is None or not dom.isActive():
            return False
        try:
            xml = domain.backup_xml(dom.XMLDesc(0), path, target)
            if xml is None:
                return False
            # The guest keeps running: QEMU copies the disk as of this instant (copy-before-write).
            dom.backupBegin(xml, None, 0)
            deadline = time.monotonic() + timeout_s
            while dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                if time.monotonic() > deadline:
                    dom.abortJob()
                    raise DriverError(f"backup of {path} took over {timeout_s:.0f} s; aborted")
                time.sleep(0.1)
            done = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError as e:
            raise DriverError(f"backing up {path} of {name}: {e}") from e
        if done.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED:
            raise DriverError(f"backup of {path} of {name} did not complete: {done.get('errmsg', done)}")
        return True

    def stats(self, name: str) -> DomainStats:
        dom = self._must(name)
        try:
            if not dom.isActive():
                return DomainStats(0, 0)
            cpu_ns = int(dom.info()[4])
            rss_kib = int(dom.memoryStats().get("rss", 0))
        except libvirt.libvirtError as e:
            raise DriverError(str(e)) from e
        return DomainStats(cpu_ns, rss_kib // KIB)

    def all_stats(self, devices: bool = True) -> dict[str, DomainStats]:
        # Memory from one bulk call (libvirt's balloon group reads /proc); CPU time and throttling
        # from each guest's cgroup files where vdcos made the host's cgroup root, as libvirt's
        # own virDomainGetInfo reads it, without a call per guest. Not libvirt's CPU and block
        # groups: the first walks every vCPU's cgroup, the second asks QEMU for its whole block
        # graph (benchmarks/metrics.py). A disk's counters still cost a QMP round trip (~3 ms of
        # CPU each on this machine): the agent asks for devices less often.
        out = {}
        cgroups = self._guest_cgroups()
        flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
        for dom, st in self._call(lambda c: c.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_BALLOON, flags)):
            try:
                name = dom.name()
                cg = cgroups.get(name)
                cpu_ns = _read_int(cg[1]) if cg is not None else None
                if cpu_ns is None:
                    cpu_ns = int(dom.info()[4])
                disks: tuple[tuple[str, int, int, int, int], ...] = ()
                nics: tuple[tuple[str, int, int, int, int], ...] = ()
                if devices:
                    targets, taps = self._devices(dom, name)
                    disks = tuple((t, b[1], b[3], b[0], b[2]) for t in targets for b in [dom.blockStats(t)])
                    # interfaceStats: (rx bytes, rx packets, rx errs, rx drop, tx bytes, tx packets, ...)
                    nics = tuple((n, i[0], i[4], i[1], i[5]) for n in taps for i in [dom.interfaceStats(n)])
            except libvirt.libvirtError:
                continue  # gone, or going, between the list and the reads
            out[name] = DomainStats(cpu_ns, int(st.get("balloon.rss", 0)) // KIB, disks, nics,
                                    _throttled_ns(cg[0]) if cg is not None else None)
        return out

    def _devices(self, dom: libvirt.virDomain, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """A running guest's disk targets and NIC devices, from its XML once per QEMU (its id)
        and again after a disk is plugged or unplugged here."""
        key = (name, dom.ID())
        got = self._device_cache.get(key)
        if got is None:
            root = ET.fromstring(dom.XMLDesc(0))
            got = (tuple(t.get("dev", "") for t in root.findall("devices/disk/target")),
                   tuple(t.get("dev", "") for t in root.findall("devices/interface/target") if t.get("dev")))
            self._device_cache = {k: v for k, v in self._device_cache.items() if k[0] != name}
            self._device_cache[key] = got
        return got

    def _guest_cgroups(self) -> dict[str, tuple[Path, Path]]:
        """Each guest's cgroup v1 files, by VM name: cpu.stat (throttling) and cpuacct.usage (CPU
        time), on a host whose cgroup root vdcos made (host/libvirtd.py); none elsewhere. One
        listing per read, not one per guest."""
        if self._cgroup is None:
            host = self._root / "host.json" if self._root is not None else None
            self._cgroup = (Path(LibvirtHost.load(self._root).cgroup)
                            if host is not None and host.exists() and self._root is not None else Path())
        if self._cgroup == Path():
            return {}
        cpu, acct = (Path(CGROUP_ROOT, c, self._cgroup, "machine") for c in ("cpu", "cpuacct"))
        out = {}
        try:
            for entry in os.scandir(cpu):
                # libvirt names it qemu-<domain id>-<name>.libvirt-qemu
                if entry.name.startswith("qemu-") and entry.name.endswith(".libvirt-qemu"):
                    vm = entry.name[len("qemu-"):-len(".libvirt-qemu")].partition("-")[2]
                    out[vm] = (Path(entry.path, "cpu.stat"), acct / entry.name / "cpuacct.usage")
        except OSError:
            return {}
        return out

    # --- migration ----------------------------------------------------------------------
    def migrate(self, name: str, destination_uri: str, options: MigrationOptions,
                on_progress: Callable[[MigrationProgress], None] | None = None,
                cancel: threading.Event | None = None, shared_disks: bool = False,
                copies: tuple[DiskCopy, ...] = ()) -> MigrationResult:
        dom = self._must(name)
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
                 | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
        if self.migrate_tls:
            flags |= libvirt.VIR_MIGRATE_TLS
        if options.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if options.postcopy_after_iterations:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
        if shared_disks:
            # libvirt only trusts network filesystems it recognizes as shared; vdcos's shared pool
            # is shared by construction (a folder every host sees here, NFS or RBD in a rack).
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        try:
            xml = domain.strip_memtune(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE))
            dom.migrateSetMaxDowntime(options.max_downtime_ms, 0)
        except libvirt.libvirtError as e:
            raise DriverError(f"preparing migration of {name}: {e}") from e
        xml, copied = domain.with_disk_paths(xml, {c.source_path: c.destination_path for c in copies})
        if len(copied) != len(copies):
            raise DriverError(f"migration of {name}: {len(copies) - len(copied)} disk(s) to copy are not in its domain")
        params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: xml}
        if copied:
            # QEMU mirrors these disks over NBD while the guest runs, and writes the guest makes
            # meanwhile too. Incremental: each destination file sits on the same base image, so
            # only the volume's own layer travels.
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = copied
        if options.bandwidth_mibps:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = options.bandwidth_mibps
        done = threading.Event()
        state = {"postcopy": False, "iterations": 0}
        watcher = threading.Thread(target=self._watch_job, name=f"migrate-{name}", daemon=True,
                                   args=(dom, options, on_progress, cancel, done, state))
        t0 = time.monotonic()
        watcher.start()
        try:
            dom.migrateToURI3(destination_uri, params, flags)
        except libvirt.libvirtError as e:
            if cancel is not None and cancel.is_set():
                raise MigrationCancelled(f"migration of {name} cancelled; it keeps running here") from e
            raise DriverError(f"migration of {name} failed: {e}") from e
        finally:
            done.set()
            watcher.join(5)
        total_ms = int((time.monotonic() - t0) * 1000)
        stats: dict[str, Any] = self._on_peer(
            destination_uri, name, lambda d: dict(d.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)), {})
        return MigrationResult(
            downtime_ms=int(stats.get("downtime", -1)),
            total_ms=int(stats.get("time_elapsed", total_ms)),
            memory_processed_bytes=int(stats.get("memory_processed", 0)),
            iterations=int(stats.get("memory_iteration", state["iterations"])),
            postcopy=bool(state["postcopy"]),
        )

    def _watch_job(self, dom: libvirt.virDomain, options: MigrationOptions,
                   on_progress: Callable[[MigrationProgress], None] | None, cancel: threading.Event | None,
                   done: threading.Event, state: dict[str, Any]) -> None:
        aborted = False
        while not done.wait(0.1):
            if cancel is not None and cancel.is_set() and not aborted:
                aborted = True
                try:
                    dom.abortJob()
                except libvirt.libvirtError:
                    pass
            try:
                js = dom.jobStats()
            except libvirt.libvirtError:
                continue
            if js.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
                continue
            it = int(js.get("memory_iteration", 0))
            state["iterations"] = it
            if options.postcopy_after_iterations and it >= options.postcopy_after_iterations \
                    and not state["postcopy"] and not aborted:
                try:
                    dom.migrateStartPostCopy(0)
                    state["postcopy"] = True
                except libvirt.libvirtError:
                    pass
            if on_progress is not None:
                on_progress(MigrationProgress(
                    phase="post-copy" if state["postcopy"] else "copying",
                    memory_total_bytes=int(js.get("memory_total", 0)),
                    memory_processed_bytes=int(js.get("memory_processed", 0)),
                    memory_remaining_bytes=int(js.get("memory_remaining", 0)),
                    iteration=it,
                    expected_downtime_ms=int(js.get("downtime", 0)),
                    elapsed_ms=int(js.get("time_elapsed", 0))))

    @staticmethod
    def _on_peer(uri: str, name: str, ask: Callable[[libvirt.virDomain], T], default: T) -> T:
        """One question about a domain on another host; `default` when it cannot be answered."""
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError:
            return default
        try:
            return ask(conn.lookupByName(name))
        except libvirt.libvirtError:
            return default
        finally:
            conn.close()

    def locate(self, name: str, destination_uri: str) -> str:
        deadline = time.monotonic() + 120
        dom = self._dom(name)
        # A peer-to-peer job belongs to libvirtd and outlives the agent that asked for it.
        while dom is not None and time.monotonic() < deadline:
            try:
                if dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE:
                    break
            except libvirt.libvirtError:
                break
            time.sleep(0.2)
            dom = self._dom(name)
        if dom is not None:
            try:
                if dom.isActive():
                    return "source"
            except libvirt.libvirtError:
                pass
        return self._on_peer(destination_uri, name, lambda d: "destination" if d.isActive() else "", "")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _throttled_ns(stat: Path) -> int | None:
    """cgroup v1 cpu.stat's throttled_time: CPU time the guest's QoS cap withheld."""
    try:
        for line in stat.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_time":
                return int(value)
    except (OSError, ValueError):
        return None
    return None
