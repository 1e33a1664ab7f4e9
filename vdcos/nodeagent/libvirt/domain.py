"""Domain XML from a VM spec. Built with ElementTree, so every name and value is escaped: nothing
a client sends reaches the XML (or a shell) raw. QEMU runs inside its host's mount namespace, so
paths under /var/log/libvirt are per host and need no rewriting when the guest migrates."""
from __future__ import annotations

import json
import re
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from vdcos.images import CATALOG, DEFAULT_PROFILE, GuestImage
from vdcos.model import Disk, Nic, QosSettings, VmSpec, decode, encode

NS = "https://vdcos.dev/xmlns/domain/1"
# Inside the host's mount namespace; the agent finds it at <host folder>/log/qemu/.
CONSOLE_DIR = "/var/log/libvirt/qemu"


def console_path(vm: str) -> str:
    return f"{CONSOLE_DIR}/{vm}.console"


def host_console_file(host_root: Path, vm: str) -> Path:
    """The same console as seen from outside the host's mount namespace, where the host's
    folder holds what is mounted at /var/log/libvirt (vdcos.host.libvirtd.BIND_DIRS)."""
    return host_root / "log" / "qemu" / f"{vm}.console"


def read_console(host_root: Path, vm: str) -> str:
    f = host_console_file(host_root, vm)
    return f.read_text(errors="replace") if f.exists() else ""


def domain_uuid(vm: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vdcos:vm:{vm}"))


def _sub(parent: ET.Element, tag: str, text: str | int | None = None, **attrs: str) -> ET.Element:
    e = ET.SubElement(parent, tag, attrs)
    if text is not None:
        e.text = str(text)
    return e


def domain_xml(spec: VmSpec, qos: QosSettings, image: GuestImage, nics: tuple[Nic, ...] = (),
               disks: tuple[Disk, ...] = ()) -> str:
    profile = CATALOG[spec.image or DEFAULT_PROFILE]
    vcpus = max(spec.resources.vcpus, 1)
    dom = ET.Element("domain", type="qemu")  # TCG: KVM does not boot Linux guests on these hosts
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", domain_uuid(spec.name))
    _sub(dom, "memory", spec.resources.memory_mib, unit="MiB")
    _sub(dom, "vcpu", vcpus)
    meta = _sub(dom, "metadata")
    vm = ET.SubElement(meta, f"{{{NS}}}vm")
    _sub(vm, f"{{{NS}}}qos", json.dumps(encode(qos), sort_keys=True))
    tune = _sub(dom, "cputune")
    _sub(tune, "shares", qos.cpu_shares)
    if qos.cpu_quota_us:
        # With TCG the guest's time is in the vCPU threads: the VM-wide quota caps it,
        # an emulator quota would not.
        _sub(tune, "global_period", qos.cpu_period_us)
        _sub(tune, "global_quota", qos.cpu_quota_us)
    os_ = _sub(dom, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_, "kernel", str(image.kernel))
    _sub(os_, "initrd", str(image.initrd))
    # The guest configures its first NIC from the kernel command line (busybox /init).
    _sub(os_, "cmdline", profile.cmdline(vcpus) + (f" vmip={nics[0].address}" if nics else ""))
    # ACPI: without it QEMU's PCI bus takes no hot-plugged device (attached volumes).
    _sub(_sub(dom, "features"), "acpi")
    _sub(dom, "clock", offset="utc")
    # A reboot stays in its QEMU, as on real hardware (and libvirt turns an ACPI reboot of a
    # domain whose on_reboot is destroy into a shutdown); a power-off ends the domain.
    for ev, action in (("on_poweroff", "destroy"), ("on_reboot", "restart"), ("on_crash", "destroy")):
        _sub(dom, ev, action)
    dev = _sub(dom, "devices")
    _sub(dev, "emulator", "/usr/bin/qemu-system-x86_64")
    _sub(dev, "controller", type="usb", model="none")
    # A pty, so that the console can be attached to (virDomainOpenConsole: ConsoleVm), and
    # everything the guest prints also goes to its log file (read_console).
    serial = _sub(dev, "serial", type="pty")
    _sub(serial, "log", file=console_path(spec.name), append="on")
    _sub(serial, "target", port="0")
    _sub(_sub(dev, "console", type="pty"), "target", type="serial", port="0")
    for d in disks:
        _disk(dev, d, qos)
    for n in nics:
        _interface(dev, n)
    _sub(dev, "memballoon", model="none")
    ET.register_namespace("vdcos", NS)
    return ET.tostring(dom, encoding="unicode")


def _disk(dev: ET.Element, d: Disk, qos: QosSettings) -> None:
    """A volume as a virtio disk, throttled by QEMU as the VM's QoS policy says."""
    disk = _sub(dev, "disk", type="file", device="disk")
    # No host page cache: the guest's writes are on the volume when it says so, which is what
    # a shared pool needs (libvirt calls a migration with cache=none disks safe).
    _sub(disk, "driver", name="qemu", type="qcow2", cache="none", discard="unmap")
    _sub(disk, "source", file=d.path)
    _sub(disk, "target", dev=d.device, bus="virtio")
    _sub(disk, "serial", d.volume[:20])
    iotune = iotune_of(qos)
    if iotune:
        tune = _sub(disk, "iotune")
        for k, v in iotune.items():
            _sub(tune, k, v)


def disk_targets(xml: str) -> list[str]:
    return [t.get("dev", "") for t in ET.fromstring(xml).findall("devices/disk/target")]


def disk_sources(xml: str) -> dict[str, str]:
    """file -> the device XML of each file-backed disk (what a hot-unplug names)."""
    out = {}
    for disk in ET.fromstring(xml).findall("devices/disk"):
        src = disk.find("source")
        if src is not None and src.get("file"):
            out[src.get("file", "")] = ET.tostring(disk, encoding="unicode")
    return out


def backup_xml(xml: str, path: str, target: str) -> str | None:
    """A push-mode backup of the one disk on `path` into a new qcow2 file `target`; None when
    the domain has no disk on that file."""
    root = ET.Element("domainbackup", mode="push")
    holder = ET.SubElement(root, "disks")
    found = False
    for d in ET.fromstring(xml).findall("devices/disk"):
        src, dev = d.find("source"), d.find("target")
        if dev is None or d.get("device", "disk") != "disk":
            continue
        if src is not None and src.get("file") == path:
            found = True
            out = ET.SubElement(holder, "disk", name=dev.get("dev", ""), backup="yes", type="file")
            ET.SubElement(out, "target", file=target)
            ET.SubElement(out, "driver", type="qcow2")
        else:  # libvirt backs up every disk not named
            ET.SubElement(holder, "disk", name=dev.get("dev", ""), backup="no")
    return ET.tostring(root, encoding="unicode") if found else None


def disk_xml(d: Disk, qos: QosSettings, taken: list[str]) -> str:
    """One disk's device XML for a hot-plug, on the first virtio device name not in `taken`."""
    dev = next(f"vd{c}" for c in "abcdefghijklmnopqrstuvwxyz" if f"vd{c}" not in taken)
    holder = ET.Element("devices")
    _disk(holder, Disk(d.volume, d.path, dev), qos)
    return ET.tostring(holder[0], encoding="unicode")


def with_disk_paths(xml: str, paths: dict[str, str]) -> tuple[str, list[str]]:
    """The definition with these disk files replaced (old path -> new), and their targets."""
    root = ET.fromstring(xml)
    targets = []
    for disk in root.findall("devices/disk"):
        src, tgt = disk.find("source"), disk.find("target")
        if src is not None and tgt is not None and src.get("file") in paths:
            src.set("file", paths[src.get("file", "")])
            targets.append(tgt.get("dev", ""))
    ET.register_namespace("vdcos", NS)
    return ET.tostring(root, encoding="unicode"), targets


def iotune_of(qos: QosSettings) -> dict[str, int]:
    out = {}
    if qos.disk_iops_limit:
        out["total_iops_sec"] = qos.disk_iops_limit
    if qos.disk_mbps_limit:
        out["total_bytes_sec"] = qos.disk_mbps_limit * 1024 * 1024
    return out


def _interface(dev: ET.Element, n: Nic) -> None:
    """A virtio NIC on a tap the host's switch controller created and plugged into br-int
    (unmanaged: the same tap name exists on the destination before a live migration)."""
    iface = _sub(dev, "interface", type="ethernet")
    _sub(iface, "mac", address=n.mac)
    _sub(iface, "target", dev=n.device, managed="no")
    _sub(iface, "model", type="virtio")
    _sub(iface, "mtu", size=str(n.mtu))
    # The userspace datapath reads the tap with AF_PACKET and never completes a checksum left
    # to "hardware": without this TCP does not even connect (recipes/vmnet pitfall 2).
    drv = _sub(iface, "driver", name="qemu")
    _sub(drv, "host", csum="off", gso="off", tso4="off", tso6="off", ecn="off", ufo="off")
    _sub(drv, "guest", csum="off", tso4="off", tso6="off", ecn="off", ufo="off")


def size_from_xml(xml: str) -> tuple[int, int]:
    """(vCPUs, memory MiB) a definition gives its guest; (0, 0) when it cannot be read."""
    try:
        root = ET.fromstring(xml)
        mem = root.find("memory")
        kib = int(mem.text or 0) * {"KiB": 1, "MiB": 1024, "GiB": 1024 ** 2}.get(mem.get("unit", "KiB"), 1) \
            if mem is not None else 0
        return int(root.findtext("vcpu") or 0), kib // 1024
    except (ET.ParseError, ValueError):
        return 0, 0


def qos_from_xml(xml: str) -> QosSettings | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    e = root.find(f"metadata/{{{NS}}}vm/{{{NS}}}qos")
    if e is None or not e.text:
        return None
    return decode(QosSettings, json.loads(e.text))


def with_qos(xml: str, qos: QosSettings) -> str:
    """The definition with the QoS metadata replaced (the live values are set separately)."""
    root = ET.fromstring(xml)
    e = root.find(f"metadata/{{{NS}}}vm/{{{NS}}}qos")
    if e is not None:
        e.text = json.dumps(encode(qos), sort_keys=True)
    ET.register_namespace("vdcos", NS)
    return ET.tostring(root, encoding="unicode")


def strip_memtune(xml: str) -> str:
    """A live memory hard limit must not travel in the destination XML: libvirt would raise
    RLIMIT_MEMLOCK to it, which fails without CAP_SYS_RESOURCE. The destination sets it again."""
    return re.sub(r"<memtune>.*?</memtune>", "", xml, flags=re.S)
