#!/usr/bin/env bash
# The arm64 smoke test: the aarch64 binary on a real arm64 Linux kernel, in a
# QEMU virtual machine (qemu-system-aarch64, emulated: no KVM needed):
# the plugin's ADD, CHECK and DEL of a network-namespace pod chained after the
# reference ptp + host-local plugins, leaving nothing behind; then two robot
# computers made of network namespaces on a LAN switch, one pod each, the
# agent on each: TTL-1 discovery forwarded between them exactly once with the
# kernel forwarder and again with the nftables one, the tc/BPF fast path
# attached and forwarding, and its anti-spoofing dropping forged frames
# (integration/arm64/guest.sh runs inside and lists what it checks).
#
#   integration/arm64/smoke.sh [--bin FILE] [--cache DIR] [--timeout SECS] [--rebuild]
#
#   --bin FILE     the aarch64 binary (default dist/ros2-cni-arm64, built with
#                  deploy/build-release.sh --arch arm64 when missing)
#   --cache DIR    where the arm64 userspace and kernel are kept between runs
#                  (default /var/cache/ros2-cni-arm64; about 400 MB)
#   --timeout SECS the VM is killed after this long (default 900)
#   --rebuild      make the userspace and kernel again
#
# As root, on Debian (amd64). Installs what is missing with apt-get
# (qemu-system-arm, qemu-user-static, debootstrap, cpio; the arm64 dpkg
# architecture for the kernel package). Stages, each timed:
#   1. userspace: `debootstrap --arch=arm64 --foreign --variant=minbase` with
#      the packages in $packages (iproute2, nftables, the CNI plugins, kmod,
#      ping, python3-minimal and jq for the probes); its second stage runs in
#      a chroot through qemu-aarch64-static (a binfmt_misc entry is registered
#      for it if none is, and removed again)   [cached; the key is the suite
#                                                and the package list]
#   2. kernel: Debian's linux-image-*-arm64 (apt-get download), its network
#      modules put into the userspace, depmod                  [cached]
#   3. initramfs: the userspace as the VM's root file system (cpio), plus the
#      binary, guest.sh and probe.py                           [base cached]
#   4. boot and test: qemu-system-aarch64 -M virt, guest.sh as init, its own
#      stages timed ("SMOKE TIME"); the VM powers itself off; its console is
#      in DIR/console.log
# Exits 0 only when the guest printed "SMOKE RESULT: PASS".
# Touches nothing of this machine's network: everything runs inside the VM,
# which has no network device.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/integration/arm64"

bin=
cache=/var/cache/ros2-cni-arm64
timeout_s=900
rebuild=
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift ;;
    --cache) cache="$2"; shift ;;
    --timeout) timeout_s="$2"; shift ;;
    --rebuild) rebuild=1 ;;
    -h|--help) sed -n '2,39p' "$0"; exit 0 ;;
    *) echo "smoke.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
suite=bookworm
# the userspace's packages; with the suite, the cache key of the userspace
packages=iproute2,nftables,containernetworking-plugins,kmod,iputils-ping,python3-minimal,jq
log() { echo "smoke.sh: $*" >&2; }
timed() { # NAME COMMAND...: runs it and records its duration
  local name="$1" s=$SECONDS
  shift
  "$@"
  times+=("$name $((SECONDS - s)) s")
}
times=()
[ "$(id -u)" = 0 ] || { log "needs root (debootstrap, chroot, binfmt_misc)"; exit 1; }

# --- tools --------------------------------------------------------------------
need=()
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || need+=(kmod)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  log "dpkg --add-architecture arm64; apt-get update (for the arm64 kernel package)"
  dpkg --add-architecture arm64
  apt-get update -qq
fi

# --- the binary -----------------------------------------------------------------
if [ -z "$bin" ]; then
  bin="$root/dist/ros2-cni-arm64"
  if [ ! -f "$bin" ]; then
    timed build "$root/deploy/build-release.sh" --arch arm64
  fi
fi
file -b "$bin" | grep -q 'ARM aarch64' || { log "$bin is not an aarch64 binary: $(file -b "$bin")"; exit 1; }

mkdir -p "$cache"
exec 9> "$cache/.lock"
flock -n 9 || { log "another smoke.sh uses $cache"; exit 1; }
[ -n "$rebuild" ] && rm -rf "$cache/rootfs" "$cache/rootfs.ok" "$cache/kernel" "$cache/kernel.ok" "$cache/base.cpio.gz"

# --- 1. userspace -----------------------------------------------------------------
mirror="${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p; s/^deb \(http[^ ]*debian\) .*/\1/p' \
  /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | awk "NR == 1" || true)}"
mirror="${mirror:-http://deb.debian.org/debian}"
binfmt_registered=
cleanup() {
  if [ -n "$binfmt_registered" ] && [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64 || true
  fi
  if [ -n "${rootfs_tmp:-}" ]; then
    umount -R "$rootfs_tmp/proc" 2>/dev/null || true
    rm -rf "$rootfs_tmp"
  fi
}
trap cleanup EXIT

binfmt() {
  # chroot runs aarch64 programs through qemu-aarch64-static: the kernel needs
  # a binfmt_misc entry for them; F (fix binary) makes the emulator usable in
  # the chroot without copying it there
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  if [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    return
  fi
  local magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  local mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  echo ":qemu-aarch64:M::$magic:$mask:$(command -v qemu-aarch64-static):F" > /proc/sys/fs/binfmt_misc/register
  binfmt_registered=1
}

make_rootfs() {
  rootfs_tmp="$cache/rootfs.tmp"
  rm -rf "$rootfs_tmp"
  log "1a. debootstrap --foreign ($suite, arm64, $mirror)"
  local s=$SECONDS
  debootstrap --arch=arm64 --foreign --variant=minbase \
    --include="$packages" \
    "$suite" "$rootfs_tmp" "$mirror" > "$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  times+=("debootstrap-first-stage $((SECONDS - s)) s")
  log "1b. debootstrap --second-stage in the chroot (qemu-aarch64-static)"
  binfmt
  s=$SECONDS
  chroot "$rootfs_tmp" /debootstrap/debootstrap --second-stage >> "$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  times+=("debootstrap-second-stage $((SECONDS - s)) s")
  umount -R "$rootfs_tmp/proc" 2>/dev/null || true
  # what the VM does not need
  rm -rf "$rootfs_tmp"/usr/share/{doc,man,info,locale} "$rootfs_tmp"/var/cache/apt/*.bin \
    "$rootfs_tmp"/var/cache/apt/archives/*.deb "$rootfs_tmp"/var/lib/apt/lists/*
  rm -rf "$cache/rootfs"
  mv "$rootfs_tmp" "$cache/rootfs"
  rootfs_tmp=
  echo "$suite $packages" > "$cache/rootfs.ok"
}
if [ "$(cat "$cache/rootfs.ok" 2>/dev/null)" != "$suite $packages" ]; then
  [ -f "$cache/rootfs.ok" ] && log "1. userspace: cached for another package list: making it again"
  rm -f "$cache/base.cpio.gz"
  make_rootfs
else
  log "1. userspace: cached in $cache/rootfs"
fi

# --- 2. kernel ----------------------------------------------------------------------
make_kernel() {
  local pkg dir="$cache/kernel"
  pkg="$(apt-cache depends linux-image-arm64:arm64 | sed -n 's/.*Depends: \(linux-image-[^:]*\).*/\1/p' | awk "NR == 1")"
  [ -n "$pkg" ] || { log "no linux-image-arm64:arm64 in apt's lists (apt-get update?)"; exit 1; }
  log "2. kernel: $pkg:arm64"
  rm -rf "$dir" && mkdir -p "$dir/deb"
  (cd "$dir/deb" && apt-get download -qq -o APT::Sandbox::User=root "$pkg:arm64")
  dpkg-deb -x "$dir"/deb/*.deb "$dir/x"
  local kver
  kver="$(ls "$dir/x/lib/modules")"
  cp "$dir/x/boot/vmlinuz-$kver" "$dir/vmlinuz"
  echo "$kver" > "$dir/version"
  # the modules a pod's network needs (veth, dummy, bridge, netfilter,
  # nf_tables and what they use), not the whole tree: the root file system is
  # an initramfs, unpacked into the VM's memory at every boot
  local m="$dir/x/lib/modules/$kver/kernel"
  mkdir -p "$dir/modules/lib/modules/$kver/kernel/drivers"
  cp -a "$m/net" "$m/lib" "$m/crypto" "$dir/modules/lib/modules/$kver/kernel/"
  mkdir -p "$dir/modules/lib/modules/$kver/kernel/drivers/net"
  cp -a "$m/drivers/net/veth.ko" "$m/drivers/net/dummy.ko" "$m/drivers/net/macvlan.ko" \
    "$dir/modules/lib/modules/$kver/kernel/drivers/net/" 2>/dev/null || true
  cp -a "$dir/x/lib/modules/$kver/modules.order" "$dir/x/lib/modules/$kver/modules.builtin"* \
    "$dir/modules/lib/modules/$kver/" 2>/dev/null || true
  depmod -b "$dir/modules" "$kver"
  # the userspace has merged /usr (/lib -> usr/lib): an initramfs entry for a
  # directory ./lib would replace that symlink, so the modules go to usr/lib
  mkdir -p "$dir/modules/usr"
  mv "$dir/modules/lib" "$dir/modules/usr/lib"
  rm -rf "$dir/x" "$dir/deb"
  touch "$cache/kernel.ok"
}
if [ ! -f "$cache/kernel.ok" ]; then
  rm -f "$cache/base.cpio.gz"
  timed kernel make_kernel
else
  log "2. kernel: cached in $cache/kernel ($(cat "$cache/kernel/version"))"
fi

# --- 3. initramfs -------------------------------------------------------------------
if [ ! -f "$cache/base.cpio.gz" ]; then
  log "3. initramfs: packing the userspace and modules"
  s=$SECONDS
  (cd "$cache/rootfs" && find . -path ./proc -prune -o -print | LC_ALL=C sort | cpio -o -H newc --quiet) \
    > "$cache/base.cpio"
  (cd "$cache/kernel/modules" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >> "$cache/base.cpio"
  gzip -1 -f "$cache/base.cpio"
  times+=("initramfs-base $((SECONDS - s)) s")
fi
overlay="$(mktemp -d)"
chmod 0755 "$overlay"
trap 'cleanup; rm -rf "$overlay"' EXIT
mkdir -p "$overlay/usr/local/bin" "$overlay/proc"
install -m 0755 "$bin" "$overlay/usr/local/bin/ros2-cni"
install -m 0755 "$here/guest.sh" "$overlay/smoke-init"
install -m 0755 "$here/probe.py" "$overlay/usr/local/bin/smoke-probe"
(cd "$overlay" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$overlay.cpio.gz"
cat "$cache/base.cpio.gz" "$overlay.cpio.gz" > "$cache/initrd.img"
rm -f "$overlay.cpio.gz"
log "   initramfs $(du -h "$cache/initrd.img" | cut -f1) (compressed)"

# --- 4. boot and test -----------------------------------------------------------------
log "4. booting $(cat "$cache/kernel/version") in qemu-system-aarch64 (emulated; console in $cache/console.log, timeout $timeout_s s)"
s=$SECONDS
set +e
timeout --kill-after=10 "$timeout_s" qemu-system-aarch64 -M virt -cpu cortex-a57 -smp 2 -m 2048 \
  -accel tcg,thread=multi -nographic -no-reboot -nic none \
  -kernel "$cache/kernel/vmlinuz" -initrd "$cache/initrd.img" \
  -append "console=ttyAMA0 rdinit=/smoke-init panic=-1 loglevel=4" \
  < /dev/null > "$cache/console.log" 2>&1
qrc=$?
set -e
times+=("boot+test $((SECONDS - s)) s")
tr -d '\r' < "$cache/console.log" | grep -E '^(SMOKE|\[ *[0-9.]+\] (Run /|Freeing unused kernel))' >&2 || true
# the guest's stages (seconds of VM uptime)
while read -r _ _ name secs _; do
  times+=("  guest:$name $secs s")
done < <(tr -d '\r' < "$cache/console.log" | grep '^SMOKE TIME ' || true)
log "timings: $(IFS=';'; echo "${times[*]}")"
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
  log "the VM did not finish within $timeout_s s (killed); console: $cache/console.log"
  exit 1
fi
if tr -d '\r' < "$cache/console.log" | grep -q '^SMOKE RESULT: PASS'; then
  log "PASS"
  exit 0
fi
log "FAIL (qemu exit $qrc); the console's last lines:"
tr -d '\r' < "$cache/console.log" | tail -30 >&2
exit 1
