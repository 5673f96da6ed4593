#!/usr/bin/env bash
# Runs every test: unit tests, and the integration tests on real network
# namespaces (root required; they only touch namespaces they create).
# Installs what the tests need and is missing first: the Debian packages in
# .ci/packages.txt (apt-get), kubernetes-validate and eclipse-zenoh (pip).
# ./test.sh --kernel debian [ARGS...]: the integration tests (ARGS: filter and
# test-binary options) in a VM on Debian 12's kernel instead: integration/vm/run.sh.
set -euo pipefail
cd "$(dirname "$0")"
kernel=
if [ "${1:-}" = --kernel ]; then
  kernel="${2:?test.sh: --kernel needs a name (debian)}"
  shift 2
fi
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the namespace tests need root (and install missing packages); run it as root: ./test.sh" >&2
  exit 1
fi
. .ci/deps.sh

mapfile -t missing < <(ci_missing_packages)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: installing missing Debian packages (.ci/packages.txt): ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2; then
    echo "test.sh: apt-get failed" >&2
  fi
  mapfile -t missing < <(ci_missing_packages)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "test.sh: the tests need these Debian packages, which are still missing: ${missing[*]}" >&2
    echo "test.sh: install them (apt-get install ${missing[*]}) and run ./test.sh again" >&2
    exit 1
  fi
fi

if ! command -v kubernetes-validate >/dev/null; then
  echo "test.sh: installing missing pip package: $KUBERNETES_VALIDATE" >&2
  if ! ci_pip_install_kubernetes_validate >&2 || ! command -v kubernetes-validate >/dev/null; then
    echo "test.sh: the manifest tests need kubernetes-validate, which is still missing (or not on PATH): python3 -m pip install [--break-system-packages] $KUBERNETES_VALIDATE" >&2
    exit 1
  fi
fi

if ! ci_have_zenoh; then
  echo "test.sh: installing missing pip package: $ZENOH_PY" >&2
  if ! ci_pip_install_zenoh >&2 || ! ci_have_zenoh; then
    echo "test.sh: the Zenoh tests need python3's zenoh module, which is still missing: python3 -m pip install [--break-system-packages] $ZENOH_PY" >&2
    exit 1
  fi
fi

if [ -n "$kernel" ]; then
  exec integration/vm/run.sh --kernel "$kernel" -- "$@"
fi
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}" "$@"
