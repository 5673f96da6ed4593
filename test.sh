#!/usr/bin/env bash
# Runs every test: unit tests, and the integration tests on real network
# namespaces (root required; they only touch namespaces they create).
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the namespace tests need root; run: sudo -E ./test.sh" >&2
  exit 1
fi
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}" "$@"
