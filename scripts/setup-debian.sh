#!/usr/bin/env bash
# Installs the Debian packages vdcos runs on, only those that are missing (idempotent).
set -euo pipefail
PKGS=(etcd-server etcd-client
      # the libvirt driver: one libvirtd per simulated host, QEMU guests under TCG
      libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev qemu-system-x86 qemu-utils
      # the distributed switch: one ovsdb-server + ovs-vswitchd per simulated host, in its netns
      openvswitch-switch openvswitch-common ethtool iperf3 tcpdump iputils-ping
      pkg-config gcc iproute2 gzip binutils
      # `vdcos up --prometheus`: the datacenter's metrics server (vdcos/metrics/prometheus.py)
      prometheus
      # the dashboard's browser tests: headless Chromium driven by Selenium (tests/e2e/test_dashboard.py)
      chromium chromium-driver)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! python3 -m venv --help >/dev/null 2>&1; then missing+=(python3-venv); fi
# npm installs buf, the outside gRPC client of the security tests (a Node.js that ships npm will do).
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # vdcos starts its own etcd, libvirtd and Prometheus: no package may start a system service.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# libvirtd refuses to start without these; the packages normally create them.
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd -r -g kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
# The libvirt package may start a system libvirtd; vdcos runs one per simulated host instead.
# The package enables an etcd system service; vdcos runs its own members and needs none.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  echo "note: a system etcd service is running; vdcos does not use it"
fi
