#!/usr/bin/env bash
# Builds the vdcos test guest into DIR (default /var/cache/vdcos/images):
#   vmlinuz    Debian's own kernel, taken from its .deb (downloaded, never installed)
#   initrd.gz  static busybox + the virtio NIC/disk modules from the same .deb; /init prints
#              "GUEST-BOOTED" then "CNT <n> <uptime>" on ttyS0 every ~100 ms.
# Kernel arguments the /init understands (the image catalog in vdcos/images sets them):
#   burn=N      N busy loops (CPU-bound guest)
#   dirty=MiB   rewrite MiB of memory in a loop (a guest that dirties pages during migration)
#   vmip=A/NN vmgw=G   address for eth0 (the Debian kernel ignores ip=)
#   diskread=DEV    loop: 4 KiB O_DIRECT reads of /dev/DEV (disk QoS measurements)
#   diskcount=DEV   keep the counter on /dev/DEV's first sector, written through (O_DIRECT) on
#                   every tick: after a restart it goes on from the last value ("DISKCNT-FROM <n>")
#   diskfill=DEV    write random data over the first half of /dev/DEV once, O_DIRECT, print
#                   "DISKFILL <dev> <MiB>", then read that half back in a loop, printing
#                   "DISKSUM-START" and "DISKSUM <md5>" (a disk whose content a migration must keep)
# The ACPI power button (StopVm, RebootVm) makes the guest print "GUEST-POWEROFF" and power off.
# A shell reads the serial line (ConsoleVm, `vdcos vm console`): each line typed there runs.
# Every disk the guest has is announced at boot: "DISK <dev> <its first 40 bytes>"; and
# "DISKS <dev>:<MiB> ..." lists the disks whenever they change (hot-plug, unplug, resize).
# Nothing is installed on the host. A lock keeps concurrent builders from racing.
set -euo pipefail
# Bump when /init changes: a cached image of another version is rebuilt.
VERSION=10
DIR=${1:-/var/cache/vdcos/images}
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9
[ -s "$DIR/vmlinuz" ] && [ -s "$DIR/initrd.gz" ] && [ "$(cat "$DIR/version" 2>/dev/null)" = "$VERSION" ] && exit 0
W=$(mktemp -d "$DIR/.build.XXXXXX")
trap 'rm -rf "$W"' EXIT
mkdir -p "$DIR/debs"
cd "$DIR/debs"
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
if [ -z "$KPKG" ]; then apt-get update -qq; KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}'); fi
ls "${KPKG}"_*.deb >/dev/null 2>&1 || apt-get download -qq "$KPKG"
ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download -qq busybox-static
KDEB=$(ls "${KPKG}"_*.deb | head -1)
# The .deb carries no modules.dep; the load order below follows `modinfo -F depends`.
MODS="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net virtio_blk button evdev"
mkdir -p "$W/kernel" "$W/bb"
dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$W/kernel" --wildcards './boot/vmlinuz-*' \
  './lib/modules/*/kernel/drivers/virtio/*.ko' './lib/modules/*/kernel/net/core/failover.ko' \
  './lib/modules/*/kernel/drivers/net/net_failover.ko' './lib/modules/*/kernel/drivers/net/virtio_net.ko' \
  './lib/modules/*/kernel/drivers/block/virtio_blk.ko' './lib/modules/*/kernel/drivers/acpi/button.ko' \
  './lib/modules/*/kernel/drivers/input/evdev.ko'
dpkg-deb -x busybox-static_*.deb "$W/bb"
R=$W/initrd
mkdir -p "$R"/{bin,sbin,proc,sys,dev,tmp,lib/modules}
cp "$W/bb/bin/busybox" "$R/bin/"
for m in $MODS; do cp "$(find "$W/kernel/lib/modules" -name "$m.ko" | head -1)" "$R/lib/modules/"; done
cat > "$R/init" <<'EOI'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "GUEST-BOOTED $(cat /proc/uptime)"
for a in $(cat /proc/cmdline); do case $a in
  burn=*) BURN=${a#burn=};; dirty=*) DIRTY=${a#dirty=};; vmip=*) VMIP=${a#vmip=};; vmgw=*) VMGW=${a#vmgw=};;
  diskread=*) DISKREAD=${a#diskread=};; diskfill=*) DISKFILL=${a#diskfill=};;
  diskcount=*) DISKCOUNT=${a#diskcount=};; esac; done
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net virtio_blk button evdev; do
  insmod /lib/modules/$m.ko 2>/dev/null; done
# The power button: any event on its input device powers the guest off (no acpid needed).
for d in /sys/class/input/event*; do [ -e "$d" ] || continue
  if [ "$(cat $d/device/name 2>/dev/null)" = "Power Button" ]; then
    ( dd if=/dev/input/${d##*/} bs=24 count=1 >/dev/null 2>&1; echo "GUEST-POWEROFF"; sync; poweroff -f ) &
  fi; done
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null
ip link set lo up
if [ -n "$VMIP" ]; then
  for i in $(seq 1 20); do [ -e /sys/class/net/eth0 ] && break; usleep 100000; done
  ip addr add "$VMIP" dev eth0 && ip link set eth0 up
  [ -n "$VMGW" ] && ip route add default via "$VMGW"
  echo "NET-UP $(cat /sys/class/net/eth0/address) $VMIP"
fi
for d in /sys/block/vd*; do [ -e "$d" ] || continue; d=${d##*/}
  echo "DISK $d $(dd if=/dev/$d bs=4096 count=1 2>/dev/null | head -c 40 | tr -c 'a-z0-9 ' '.')"; done
if [ -n "$DISKREAD" ]; then
  ( while :; do dd if=/dev/$DISKREAD of=/dev/null bs=4096 count=2048 iflag=direct 2>/dev/null; done ) &
fi
if [ -n "$DISKFILL" ]; then
  ( n=$(( $(cat /sys/block/$DISKFILL/size) / 4096 ))
    dd if=/dev/urandom of=/dev/$DISKFILL bs=1M count=$n oflag=direct 2>/dev/null; sync /dev/$DISKFILL
    echo "DISKFILL $DISKFILL $n"
    while :; do echo "DISKSUM-START"
      s=$(dd if=/dev/$DISKFILL bs=1M count=$n iflag=direct 2>/dev/null | md5sum); echo "DISKSUM ${s%% *}"; done ) &
fi
if [ -n "$DIRTY" ]; then
  mount -t tmpfs -o size=$((DIRTY+8))m tmpfs /tmp
  dd if=/dev/urandom of=/tmp/r bs=1M count=1 2>/dev/null
  ( while :; do i=0; while [ $i -lt $DIRTY ]; do
      dd if=/tmp/r of=/tmp/x bs=1M seek=$i count=1 conv=notrunc 2>/dev/null; i=$((i+1)); done; done ) &
fi
# A loop that runs each line, not an interactive shell: no banner and no prompt, which would land
# mid-line in what /init prints (the counter lines tests read); the tty still echoes keys. (A
# shell reading a pipe ran each line only once the next one came.)
( while :; do setsid sh -c 'while read -r l; do eval "$l"; done </dev/ttyS0 >/dev/ttyS0 2>&1'; sleep 1
  done ) &
j=0
while [ $j -lt "${BURN:-0}" ]; do ( while :; do :; done ) & j=$((j+1)); done
i=0
if [ -n "$DISKCOUNT" ]; then
  for k in $(seq 1 50); do [ -e /dev/$DISKCOUNT ] && break; usleep 100000; done
  i=$(dd if=/dev/$DISKCOUNT bs=512 count=1 iflag=direct 2>/dev/null | head -c 40 | sed -n 's/^VDCOSCNT \([0-9]*\).*/\1/p')
  i=${i:-0}; echo "DISKCNT-FROM $i"
fi
last="?"
while true; do i=$((i+1)); echo "CNT $i $(cut -d' ' -f1 /proc/uptime)"
  [ -n "$DISKCOUNT" ] && printf 'VDCOSCNT %d\n' $i | dd of=/dev/$DISKCOUNT bs=512 count=1 conv=sync,fsync oflag=direct 2>/dev/null
  # Every second: the disks and their MiB, printed when they change (hot-plug, unplug, resize).
  if [ $((i % 10)) -eq 1 ]; then now=""
    for d in /sys/block/vd*; do [ -e "$d" ] && now="$now ${d##*/}:$(( $(cat $d/size) / 2048 ))"; done
    [ "$now" != "$last" ] && echo "DISKS$now" && last=$now; fi
  usleep 100000; done
EOI
chmod +x "$R/init"
# No cpio on the host: busybox's applet writes the newc archive.
(cd "$R" && find . | "$W/bb/bin/busybox" cpio -o -H newc -R 0:0 2>/dev/null | gzip -1) > "$W/initrd.gz"
cp "$W"/kernel/boot/vmlinuz-* "$W/vmlinuz"
mv "$W/initrd.gz" "$DIR/initrd.gz.new" && mv "$W/vmlinuz" "$DIR/vmlinuz"
mv "$DIR/initrd.gz.new" "$DIR/initrd.gz"
echo "$VERSION" > "$DIR/version"
echo "guest image built in $DIR"
