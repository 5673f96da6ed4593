#!/usr/bin/env bash
# Runs inside the VM that integration/vm/run.sh boots (virtme-ng): the guest
# half. Not meant to be run by hand.
# Usage: guest.sh RUNDIR
#   RUNDIR (shared read-write with the host) holds:
#     env    `export NAME=value` lines: the host's ROS2_CNI_*, RUST_LOG,
#            RUST_BACKTRACE, PATH, HOME, PYENV_*
#     args   the test binary, then its arguments, NUL-separated
#     copy   binaries the tests run, to run from memory (ros2-cni), NUL-separated
#     start  the host's clock (seconds) when it started the VM
#   and gets back: rc (the test binary's exit status), times (boot/test seconds).
set -euo pipefail
dir="$1"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
t_booted="$(date +%s.%N)"

# init's PATH, until the host's (in env) replaces it
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export HOME=/root
# shellcheck disable=SC1091 # written by run.sh
. "$dir/env"
mapfile -d '' argv <"$dir/args"
bin="${argv[0]}"
args=("${argv[@]:1}")

# seconds from $2 to $1, rounded
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a - b }'; }

host_start="$(cat "$dir/start")"
printf 'vm: booted %s (%s) in %s s (kernel up %.0f s); %s CPUs, %s MiB\n' \
  "$(uname -r)" "$(uname -m)" \
  "$(secs "$t_booted" "$host_start")" "$(cut -d' ' -f1 /proc/uptime)" \
  "$(nproc)" "$(awk '/^MemTotal/ { print int($2 / 1024) }' /proc/meminfo)"

# The Debian kernel builds almost everything as modules. The kernel loads most
# on demand (veth, bridge, nf_tables and nft expressions, cls_bpf, ...) through
# modprobe, which works here: virtme-ng exposes /lib/modules of the host, where
# linux-image-amd64 put them. Loading the test bed's set up front makes a
# missing module fail here, by name, instead of deep inside a test.
modules=(
  veth bridge macvlan vxlan 8021q
  nf_tables nft_chain_nat nft_limit nft_meta_bridge
  nft_dup_netdev nft_fwd_netdev nft_dup_ipv4 nft_dup_ipv6
  sch_ingress cls_bpf
)
if ! modprobe -q -a "${modules[@]}" 2>/dev/null; then
  failed=()
  for m in "${modules[@]}"; do
    modprobe -q "$m" 2>/dev/null || failed+=("$m")
  done
  echo "vm: warning: could not load kernel modules: ${failed[*]} (ls /lib/modules/$(uname -r))" >&2
fi

# The root file system is the host's over 9p without caching: every exec of
# a big binary reads it again: the debug ros2-cni (~100 MB with debug info)
# took about 2 s per start under TCG, a copy in tmpfs bind-mounted over the
# original path 0.15 s (the tests run it for every CNI call).
mapfile -d '' hot <"$dir/copy"
mkdir -p /run/ros2-cni-vm
for i in "${!hot[@]}"; do
  f="${hot[$i]}"
  [ -f "$f" ] || continue
  if ! { cp "$f" "/run/ros2-cni-vm/$i" && mount --bind "/run/ros2-cni-vm/$i" "$f"; }; then
    echo "vm: warning: $f runs from the 9p root (slower)" >&2
  fi
done

cd "$repo"
t_tests="$(date +%s.%N)"
echo "vm: modules and copies took $(secs "$t_tests" "$t_booted") s; running the tests"
set +e
"$bin" "${args[@]}"
rc=$?
set -e
t_done="$(date +%s.%N)"
echo "$rc" >"$dir/rc"
printf 'boot %s\ntests %s\n' "$(secs "$t_booted" "$host_start")" "$(secs "$t_done" "$t_tests")" >"$dir/times"
if [ -n "${ROS2_CNI_VM_LSMOD:-}" ]; then
  echo "vm: modules loaded at the end:"
  lsmod | awk 'NR > 1 { print "  " $1 }' | sort
fi
echo "vm: the tests took $(secs "$t_done" "$t_tests") s inside the VM (exit status $rc)"
exit "$rc"
