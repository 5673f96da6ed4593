#!/usr/bin/env bash
# Runs integration tests inside a VM booted on a second kernel: Debian 12's
# linux-image-amd64 (6.1, built with CONFIG_IP_MROUTE and CONFIG_IPV6_MROUTE),
# with virtme-ng under QEMU. The VM's root is the host's filesystem, read-only,
# with writable throw-away overlays on /etc /var /tmp /usr ... (virtme-ng's
# defaults) and /run on tmpfs; namespaces made inside are the VM's own.
#
# Usage: integration/vm/run.sh [--kernel debian] [--] [TEST-BINARY-ARGS...]
#   e.g. integration/vm/run.sh -- plugin:: --test-threads=2
#   (./test.sh --kernel debian [ARGS...] calls this.)
#
# It installs what is missing (virtme-ng with pip; qemu-system-x86,
# linux-image-amd64, busybox-static and the test packages of .ci/packages.txt
# with apt-get), builds the integration test binary on the host
# (cargo test --test integration --no-run), boots the VM, runs the binary in
# it as root with the given arguments, and exits with the binary's status.
#
# Environment:
#   ROS2_CNI_*, RUST_LOG, RUST_BACKTRACE  passed into the VM (PATH, HOME and
#                         PYENV_* too)
#   ROS2_CNI_VM_CPUS      guest CPUs (default 2)
#   ROS2_CNI_VM_MEMORY    guest memory (default 6G)
#   ROS2_CNI_VM_KVM       auto (default): KVM when /dev/kvm works (probed once
#                         with a short boot, the verdict cached in
#                         target/vm/kvm-probe), else QEMU's TCG; yes; no
#   ROS2_CNI_VM_TIMEOUT   kill the VM after this many seconds (default: none)
#   ROS2_CNI_VM_LSMOD=1   list the kernel modules loaded at the end
#   ROS2_CNI_VM_BIN       run this test binary of the package instead (e.g. the
#                         benchmark harness: target/<tuple>/release/deps/testbed-*)
#   TEST_THREADS          --test-threads, unless the arguments give one
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$(pwd)"
me="integration/vm/run.sh"

VIRTME_NG="virtme-ng==1.42"
APT_PACKAGES=(qemu-system-x86 linux-image-amd64 busybox-static)

die() {
  echo "$me: $*" >&2
  exit 1
}
log() { echo "$me: $*" >&2; }

usage() {
  sed -n 's/^# \{0,1\}//; /^Usage:/,/^$/p' "$0" >&2
  exit 2
}

# ---- arguments
kernel=debian
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel)
      [ $# -ge 2 ] || usage
      kernel="$2"
      shift 2
      ;;
    --kernel=*)
      kernel="${1#--kernel=}"
      shift
      ;;
    --)
      shift
      break
      ;;
    -h | --help) usage ;;
    *) break ;;
  esac
done
[ "$kernel" = debian ] || die "unknown kernel '$kernel' (known: debian)"
test_args=("$@")
if [ -n "${TEST_THREADS:-}" ] && ! printf '%s\n' "${test_args[@]}" | grep -q '^--test-threads'; then
  test_args+=("--test-threads=$TEST_THREADS")
fi

# ---- dependencies
. .ci/deps.sh

apt_missing() {
  local p
  for p in "${APT_PACKAGES[@]}" $(ci_packages); do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q ' ok installed$' || echo "$p"
  done
}

mapfile -t missing < <(apt_missing)
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]}; install them as root: apt-get install ${missing[*]}"
  log "installing missing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}"; } >&2; then
    log "apt-get failed"
  fi
  mapfile -t missing < <(apt_missing)
  [ "${#missing[@]}" -eq 0 ] || die "these Debian packages are still missing: ${missing[*]} (apt-get install ${missing[*]})"
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found although qemu-system-x86 is installed"

# vng: on PATH, or importable by python3 (pip may put its script off PATH)
vng_py=(python3 -c 'import sys; from virtme_ng.run import main; sys.exit(main())')
find_vng() {
  if command -v vng >/dev/null; then
    vng=(vng)
  elif python3 -c 'import virtme_ng.run' 2>/dev/null; then
    vng=("${vng_py[@]}")
  else
    return 1
  fi
}
if ! find_vng; then
  log "installing missing pip package: $VIRTME_NG"
  python3 -m pip install -q "$VIRTME_NG" >&2 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "$VIRTME_NG" >&2 \
    || true
  find_vng || die "virtme-ng is still missing: python3 -m pip install [--break-system-packages] $VIRTME_NG"
fi

# the newest Debian 12 kernel image and its modules
kimage="$(find /boot -maxdepth 1 -name 'vmlinuz-6.1.0-*-amd64' | sort -V | tail -n1)"
[ -n "$kimage" ] || die "no /boot/vmlinuz-6.1.0-*-amd64: apt-get install linux-image-amd64 (Debian 12)"
krel="${kimage#/boot/vmlinuz-}"
[ -r "$kimage" ] || die "$kimage is not readable (run as root)"
[ -d "/lib/modules/$krel" ] || die "/lib/modules/$krel is missing: apt-get install --reinstall linux-image-$krel"
if ! grep -q '^CONFIG_IP_MROUTE=y' "/boot/config-$krel" 2>/dev/null; then
  log "warning: /boot/config-$krel does not say CONFIG_IP_MROUTE=y"
fi

# ---- the test binary, built on the host
log "building the integration test binary (cargo test --test integration --no-run)"
build_json="$(mktemp)"
trap 'rm -f "$build_json"' EXIT
if ! cargo test --test integration --no-run --message-format=json >"$build_json"; then
  die "cargo test --test integration --no-run failed"
fi
bin="$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "integration"
                    and .executable != null) | .executable' "$build_json" | tail -n1)"
# the package's binaries the tests run (CARGO_BIN_EXE_*: ros2-cni)
mapfile -t bins < <(jq -r 'select(.reason == "compiler-artifact" and .executable != null
                                  and (.target.kind | index("bin"))) | .executable' "$build_json" | sort -u)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  die "could not find the integration test executable in cargo's output"
fi
# another test binary of the package instead (the benchmark harness, for
# section 6b's two forwarders in one run): ROS2_CNI_VM_BIN=PATH
if [ -n "${ROS2_CNI_VM_BIN:-}" ]; then
  [ -x "$ROS2_CNI_VM_BIN" ] || die "ROS2_CNI_VM_BIN=$ROS2_CNI_VM_BIN is not an executable"
  bin="$(realpath "$ROS2_CNI_VM_BIN")"
fi
target_dir="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
# CARGO_TARGET_TMPDIR: <target dir>[/<target tuple>]/tmp, beside the profile
# directory holding deps/ (target/x86_64-unknown-linux-gnu/tmp here, as
# .cargo/config.toml names the build target)
cargo_tmp="$(dirname "$(dirname "$(dirname "$bin")")")/tmp"

# Writable in the VM besides the overlays: CARGO_TARGET_TMPDIR (the libcni
# driver is built there) and target/fastdds (integration/fastdds/build.sh).
# Both are shared with the host, so what the VM builds is kept.
mkdir -p "$cargo_tmp" "$repo/target/fastdds" "$target_dir/vm"
rundir="$(mktemp -d "$target_dir/vm/run.XXXXXX")"
trap 'rm -f "$build_json"; rm -rf "$rundir"' EXIT

# ---- KVM, when it works
accel_opts=()
kvm_works() {
  if [ ! -c /dev/kvm ] || [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
    return 1
  fi
  local key cache="$target_dir/vm/kvm-probe"
  key="$(uname -r) $(qemu-system-x86_64 --version | head -n1) $kimage"
  if [ -f "$cache" ] && [ "$(head -n1 "$cache")" = "$key" ]; then
    [ "$(sed -n 2p "$cache")" = ok ]
    return
  fi
  # /dev/kvm can be there and still not run a guest (nested virtualisation
  # that rejects QEMU's CPU model, or hangs): boot once and see.
  log "probing KVM: a short boot (at most 60 s; verdict cached in $cache)"
  local verdict=broken
  if timeout 60 "${vng[@]}" --run "$kimage" --cpus 1 --memory 512M \
    --exec 'exit 0' </dev/null >/dev/null 2>&1; then
    verdict=ok
  fi
  printf '%s\n%s\n' "$key" "$verdict" >"$cache"
  log "KVM: $verdict"
  [ "$verdict" = ok ]
}
case "${ROS2_CNI_VM_KVM:-auto}" in
  yes) accel=KVM ;;
  no) accel=TCG ;;
  auto) if kvm_works; then accel=KVM; else accel=TCG; fi ;;
  *) die "ROS2_CNI_VM_KVM must be auto, yes or no" ;;
esac
[ "$accel" = KVM ] || accel_opts=(--disable-kvm)

# ---- what the guest gets: the tests' variables, and PATH and HOME (the
# guest sees the host's files, and the tests find python3, its pip packages
# and kubernetes-validate on PATH)
{
  while IFS= read -r name; do
    printf 'export %s=%q\n' "$name" "${!name}"
  done < <(compgen -e | grep -E '^(ROS2_CNI_.*|RUST_LOG|RUST_BACKTRACE|PATH|HOME|PYENV_.*)$' || true)
} >"$rundir/env"
printf '%s\0' "$bin" "${test_args[@]}" >"$rundir/args"
printf '%s\0' "${bins[@]}" >"$rundir/copy"
date +%s.%N >"$rundir/start"

cpus="${ROS2_CNI_VM_CPUS:-2}"
memory="${ROS2_CNI_VM_MEMORY:-6G}"
timeout_cmd=()
if [ -n "${ROS2_CNI_VM_TIMEOUT:-}" ]; then
  timeout_cmd=(timeout --foreground "$ROS2_CNI_VM_TIMEOUT")
fi
vm_user=()
[ "$(id -u)" = 0 ] || vm_user=(--user root)

log "booting $krel ($accel, $cpus CPUs, $memory) and running: $(basename "$bin") ${test_args[*]}"
t0=$SECONDS
# QEMU reopens /proc/self/fd/1 and /proc/self/fd/2 for the guest's output:
# a regular file there would be truncated and overwritten from offset 0, so
# the output goes through FIFOs and cat.
fifos="$(mktemp -d)"
trap 'rm -f "$build_json"; rm -rf "$rundir" "$fifos"' EXIT
mkfifo "$fifos/out" "$fifos/err"
cat "$fifos/out" &
cat_out=$!
cat "$fifos/err" >&2 &
cat_err=$!
set +e
"${timeout_cmd[@]}" "${vng[@]}" --run "$kimage" "${accel_opts[@]}" "${vm_user[@]}" \
  --cpus "$cpus" --memory "$memory" --name ros2-cni-vm \
  --rwdir "$rundir" --rwdir "$cargo_tmp" --rwdir "$repo/target/fastdds" --overlay-rwdir /root \
  --exec "bash $(printf '%q' "$repo/integration/vm/guest.sh") $(printf '%q' "$rundir")" \
  </dev/null >"$fifos/out" 2>"$fifos/err"
vm_rc=$?
wait "$cat_out" "$cat_err"
set -e
elapsed=$((SECONDS - t0))

if [ ! -f "$rundir/rc" ]; then
  if [ "$vm_rc" = 124 ] && [ "${#timeout_cmd[@]}" -gt 0 ]; then
    die "the VM was killed after ROS2_CNI_VM_TIMEOUT=${ROS2_CNI_VM_TIMEOUT}s, before the tests ended"
  fi
  die "the VM ended (status $vm_rc, after ${elapsed} s) before the tests ended: it did not boot, or the guest side failed (output above)"
fi
rc="$(cat "$rundir/rc")"
boot="$(sed -n 's/^boot //p' "$rundir/times")"
tests="$(sed -n 's/^tests //p' "$rundir/times")"
log "done in ${elapsed} s: boot ${boot} s, tests ${tests} s ($krel, $accel); the test binary exited with $rc"
exit "$rc"
