#!/usr/bin/env bash
# Usage: fuzz/run.sh [SECONDS]   (default 20)
#
# Installs cargo-fuzz if missing, builds the `rtps_message` target and fuzzes
# it for SECONDS, starting from the committed corpus (fuzz/corpus/rtps_message).
# New corpus entries go to a scratch directory, not into the repository; a
# crash leaves its input in fuzz/artifacts/rtps_message/ and fails the script.
#
# Only the stable toolchain exists here: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass
# its -Z flags. The sanitizer defaults to none (the code under test is safe
# Rust; ASan only slows the build and the run); FUZZ_SANITIZER=address
# turns it back on.
set -euo pipefail
secs="${1:-20}"
cd "$(dirname "$0")"
now() { date +%s.%N; }
t0=$(now)
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "run.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
t1=$(now)
export RUSTC_BOOTSTRAP=1
san="${FUZZ_SANITIZER:-none}"
cargo fuzz build -s "$san" rtps_message
t2=$(now)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo fuzz run -s "$san" rtps_message "$work" corpus/rtps_message -- \
  -max_total_time="$secs" -max_len=8192 -print_final_stats=1
t3=$(now)
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" \
  'BEGIN { printf "run.sh: install %.1fs, build %.1fs, fuzz %.1fs\n", b-a, c-b, d-c }' >&2
