#!/usr/bin/env bash
# Builds the Fast DDS test participant.
# Usage: integration/fastdds/build.sh [OUTPUT]   (default: target/fastdds/participant)
# Needs Debian's libfastrtps-dev (Fast DDS 2.9, pulls libfastcdr-dev) and g++.
# Rebuilds only when participant.cpp is newer than OUTPUT.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/target/fastdds/participant}"
src="$here/participant.cpp"
if [ -x "$out" ] && [ "$out" -nt "$src" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$(dirname "$out")"
# a private temp name: parallel tests may build at the same time
g++ -std=c++17 -O2 -Wall -Wextra -o "$out.tmp.$$" "$src" -lfastrtps -lfastcdr
mv "$out.tmp.$$" "$out"
echo "$out"
