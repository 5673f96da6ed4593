#!/usr/bin/env bash
# Runs the benchmarks on the namespace test bed and writes docs/benchmarks.md
# and docs/benchmarks.json (about 15 minutes on 2 cores).
#   ./bench/run.sh                 # everything (as root)
#   ./bench/run.sh --only 1,4      # some sections (1, 2, 3, 4, 4b, 5, 6, 6b, 7)
#   ./bench/run.sh --smoke         # every section, tiny (seconds)
#   ./bench/run.sh --out DIR       # write elsewhere
#   ./bench/run.sh --keep          # leave the test beds (debugging)
#   ./bench/run.sh --alt-plugin "LABEL=PATH"   # time another build beside (section 1)
#   ./bench/run.sh --notes-only            # re-append bench/notes.md to docs/benchmarks.md
# The plugin measured is the binary users get: the static musl build of
# deploy/Containerfile, when the musl target is installed (else the
# `cargo build --release` binary, static glibc by .cargo/config.toml, which is
# also timed beside it in section 1 as "glibc build").
# Needs root and: iproute2 nftables iptables containernetworking-plugins
# iperf3 cyclonedds-tools ethtool (and valgrind for instruction counts).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench/run.sh: the test bed needs root; run: sudo -E ./bench/run.sh" >&2
  exit 1
fi
args=()
musl=x86_64-unknown-linux-musl
tdir="${CARGO_TARGET_DIR:-target}"
host="$(rustc -vV | sed -n 's/^host: //p')"
# The binaries as users get them, copied out of cargo's way: `cargo bench`
# relinks target/<host tuple>/release/ros2-cni with the dev-dependencies'
# features (proptest turns on regex-syntax's Unicode tables: twice the
# run-time relocations, 0.9 MB more), which is not the binary
# `cargo build --release` makes.
# (Each keeps the name ros2-cni: section 6 finds the agent by it.)
bins="$tdir/bench-bins"
mkdir -p "$bins/glibc" "$bins/musl"
cargo build --release --locked --quiet --bin ros2-cni
cp "$tdir/$host/release/ros2-cni" "$bins/glibc/ros2-cni"
if [ -z "${R2B_GLIBC_ONLY:-}" ] && rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
  # what deploy/Containerfile builds
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --quiet --target "$musl" --bin ros2-cni
  cp "$tdir/$musl/release/ros2-cni" "$bins/musl/ros2-cni"
  args+=(--plugin "$bins/musl/ros2-cni" --alt-plugin "glibc build=$bins/glibc/ros2-cni")
else
  args+=(--plugin "$bins/glibc/ros2-cni")
fi
exec cargo bench --bench testbed -- "${args[@]}" "$@"
