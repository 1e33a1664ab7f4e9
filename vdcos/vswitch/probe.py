"""Measuring the overlay from an endpoint port's namespace: ping (loss, duplicates, blackout) and
iperf3 (throughput). Used by the tests, the netcutover benchmark and the demo. Every command runs
inside a namespace vdcos created and is bounded in count and time."""
from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass

from vdcos.host.network import sh

_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [\d.]+: icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms( \(DUP!\))?", re.M)
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?")


@dataclass(frozen=True)
class PingResult:
    sent: int
    received: int
    duplicates: int
    # The longest time without any reply arriving (it contains one ping interval), counting the
    # silence before the first reply and after the last as the pings sent meanwhile.
    blackout_ms: float
    # (arrival time, icmp seq) of every first reply, in time order.
    replies: tuple[tuple[float, int], ...] = ()

    @property
    def answering_at_end(self) -> bool:
        """The target still answered the last pings (within 10 of the end)."""
        return bool(self.replies) and max(seq for _, seq in self.replies) >= self.sent - 10

    @property
    def lost(self) -> int:
        return self.sent - self.received


def parse_ping(text: str, interval_s: float = 0.0) -> PingResult:
    replies = sorted((float(m.group(1)), int(m.group(2))) for m in _REPLY.finditer(text) if not m.group(4))
    m = _SUMMARY.search(text)
    sent, received, dups = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else (0, 0, 0)
    gap = max((b[0] - a[0] for a, b in zip(replies, replies[1:])), default=0.0)
    if interval_s and sent:
        # Silence at either end is a blackout too: the pings sent before the first reply, and
        # those after the last (a guest that stopped answering), at one interval each.
        # (Like a gap between two replies, each contains one interval.)
        seqs = [seq for _, seq in replies] or [sent + 1]
        gap = max(gap, min(seqs) * interval_s, (sent + 1 - max(seqs)) * interval_s)
    return PingResult(sent, received, dups, round(gap * 1000, 1), tuple(replies))


def start_ping(netns: str, ip: str, count: int, interval_s: float = 0.01) -> subprocess.Popen[str]:
    """A bounded ping (count, per-reply timeout; finish_ping bounds the whole) from a namespace."""
    return subprocess.Popen(["ip", "netns", "exec", netns, "ping", "-D", "-n", "-i", str(interval_s), "-c", str(count),
                             "-W", "1", ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_ping(p: subprocess.Popen[str], timeout: float = 60) -> PingResult:
    """The ping's result once it has sent its count, or at `timeout` (0: now, whatever it sent)."""
    out = None
    if timeout > 0:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    if out is None:
        p.send_signal(2)  # ping prints its summary on SIGINT
        out, _ = p.communicate(timeout=10)
    argv = list(p.args) if isinstance(p.args, (list, tuple)) else []
    interval = float(argv[argv.index("-i") + 1]) if "-i" in argv else 0.0
    return parse_ping(out, interval)


def ping(netns: str, ip: str, count: int = 3, interval_s: float = 0.2) -> PingResult:
    return finish_ping(start_ping(netns, ip, count, interval_s))


def iperf3(server_ns: str, client_ns: str, server_ip: str, seconds: int = 3, port: int = 5201) -> float:
    """TCP throughput from client to server in Mbit/s (the receiver's figure)."""
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # until the server listens
            if f":{port} " in sh("ip", "netns", "exec", server_ns, "ss", "-Hltn", check=False):
                break
            time.sleep(0.05)
        r = subprocess.run(["ip", "netns", "exec", client_ns, "iperf3", "-c", server_ip, "-p", str(port),
                            "-t", str(seconds), "-J", "--connect-timeout", "3000"],
                           capture_output=True, text=True, timeout=seconds + 30)
        data = json.loads(r.stdout or "{}")
        if "error" in data or "sum_received" not in data.get("end", {}):
            raise RuntimeError(f"iperf3 failed: {data.get('error') or r.stderr.strip()[:300]}")
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e6
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


_ECHO_REPLY = re.compile(r"^(\d+\.\d+) .*ICMP echo reply, id \d+, seq (\d+)", re.M)


def start_reply_capture(netns: str, ip: str, seconds: float) -> subprocess.Popen[str]:
    """Echo replies sent by `ip`, as they leave it, on every interface of a namespace, also the
    ones created while this runs (a tap plugged during a migration). Bounded by time."""
    argv = ["timeout", str(seconds), "tcpdump", "-n", "-l", "-tt", "-i", "any", "-Q", "in",
            f"icmp[icmptype] == icmp-echoreply and src host {ip}"]
    return subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def finish_reply_capture(p: subprocess.Popen[str]) -> list[tuple[float, int]]:
    """(time, icmp seq) of every echo reply start_reply_capture saw, in time order."""
    p.send_signal(2)  # tcpdump flushes on SIGINT
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return sorted((float(m.group(1)), int(m.group(2))) for m in _ECHO_REPLY.finditer(out))


def capture(netns: str, iface: str, seconds: float, bpf: str = "") -> str:
    """What arrives on an interface for a while (tcpdump, bounded by time)."""
    argv = ["timeout", str(seconds), "tcpdump", "-n", "-l", "-i", iface, *([bpf] if bpf else [])]
    return sh("ip", "netns", "exec", netns, *argv, check=False, timeout=seconds + 10)


# What a guest's kernel prints when its virtio ring or its memory came through a live migration
# corrupted (QEMU's TCG here, vdcos/vswitch/README.md): its NIC is dead from then on.
GUEST_FAULTS = ("is not a head", "BUG:", "Oops")


def guest_faults(console: str) -> list[str]:
    """The lines of a guest's console that report such a fault."""
    return [line.strip() for line in console.splitlines() if any(f in line for f in GUEST_FAULTS)]


def silent_guest(host_netns: str, tap: str, peer_netns: str, ip: str, seconds: float = 2.5) -> str:
    """The same dead NIC when the guest's kernel says nothing: while a peer pings the guest,
    its host's switch hands the requests to its tap and the guest sends nothing back, not a
    reply, not an ARP. "" when the guest answers, or when the requests never reach its tap
    (then the switch is at fault, not the guest)."""
    pinger = start_ping(peer_netns, ip, int(seconds / 0.1), 0.1)
    try:
        seen = capture(host_netns, tap, seconds, "icmp or arp").splitlines()
    finally:
        finish_ping(pinger)
    # An ARP request counts too: the peer's entry for the guest may have failed by now, and a
    # guest that is alive answers either.
    requests = sum(f"> {ip}: ICMP echo request" in line or f"who-has {ip} " in line for line in seen)
    sent = sum(f"IP {ip} >" in line or f"tell {ip}," in line or f"Reply {ip} is-at" in line for line in seen)
    if requests >= 5 and not sent:
        return f"guest silent: its tap {tap} was handed {requests} requests (echo, ARP) in {seconds} s, it sent nothing"
    return ""
