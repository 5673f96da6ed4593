#!/usr/bin/env bash
# Runs the benchmarks on the namespace test bed and writes docs/benchmarks.md
# and docs/benchmarks.json (about 10 minutes on 2 cores).
#   sudo -E ./bench/run.sh                 # everything
#   sudo -E ./bench/run.sh --only 1,4      # some sections (1-6)
#   sudo -E ./bench/run.sh --smoke         # every section, tiny (CI)
#   sudo -E ./bench/run.sh --out DIR       # write elsewhere
# Needs root and: iproute2 nftables iptables containernetworking-plugins
# iperf3 cyclonedds-tools (and valgrind for instruction counts).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench/run.sh: the test bed needs root; run: sudo -E ./bench/run.sh" >&2
  exit 1
fi
exec cargo bench --bench testbed -- "$@"
