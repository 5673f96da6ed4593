#!/usr/bin/env bash
# Builds the release binaries for every architecture the image ships: static
# musl executables, one per architecture, into dist/.
#
#   deploy/build-release.sh [--arch ARCH]... [--out DIR]
#
#   --arch ARCH  amd64 or arm64; repeat for both (default: amd64 and arm64)
#   --out DIR    where the binaries go (default dist/): DIR/ros2-cni-ARCH,
#                plus DIR/SHA256SUMS
#
# amd64 is x86_64-unknown-linux-musl, arm64 is aarch64-unknown-linux-musl.
# Missing rustup targets are installed (`rustup target add`). The aarch64 link
# uses rust-lld from the Rust toolchain (.cargo/config.toml), so no C cross
# toolchain is needed. CARGO_TARGET_DIR is honoured (default: target/).
# Every binary is checked with `file`: an ELF executable of the right machine,
# statically linked; the script fails otherwise.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

arches=()
out=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arches+=("$2"); shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "build-release.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64)

triple_of() {
  case "$1" in
    amd64) echo x86_64-unknown-linux-musl ;;
    arm64) echo aarch64-unknown-linux-musl ;;
    *) echo "build-release.sh: unknown architecture $1 (amd64 or arm64)" >&2; return 2 ;;
  esac
}
# what `file` says about the machine
machine_of() {
  case "$1" in
    amd64) echo x86-64 ;;
    arm64) echo "ARM aarch64" ;;
  esac
}

if ! command -v file >/dev/null 2>&1; then
  echo "build-release.sh: \`file\` is needed to check the binaries (apt-get install file)" >&2
  exit 1
fi

target_dir="${CARGO_TARGET_DIR:-$root/target}"
installed="$(rustup target list --installed 2>/dev/null || true)"
mkdir -p "$out"
for arch in "${arches[@]}"; do
  triple="$(triple_of "$arch")"
  if ! grep -qx "$triple" <<<"$installed"; then
    if ! command -v rustup >/dev/null 2>&1; then
      echo "build-release.sh: the Rust target $triple is needed and rustup is not installed" >&2
      exit 1
    fi
    echo "build-release.sh: rustup target add $triple" >&2
    rustup target add "$triple"
  fi
done

for arch in "${arches[@]}"; do
  triple="$(triple_of "$arch")"
  echo "build-release.sh: building $arch ($triple) in $target_dir ..." >&2
  start=$SECONDS
  cargo build --release --locked --target "$triple" --bin ros2-cni
  bin="$target_dir/$triple/release/ros2-cni"
  desc="$(file -b "$bin")"
  want="$(machine_of "$arch")"
  case "$desc" in
    ELF\ 64-bit\ LSB\ *"$want"*) ;;
    *) echo "build-release.sh: $bin is not an ELF executable for $want: $desc" >&2; exit 1 ;;
  esac
  case "$desc" in
    *"statically linked"*|*"static-pie linked"*) ;;
    *) echo "build-release.sh: $bin is not statically linked: $desc" >&2; exit 1 ;;
  esac
  install -m 0755 "$bin" "$out/ros2-cni-$arch.tmp"
  mv -f "$out/ros2-cni-$arch.tmp" "$out/ros2-cni-$arch"
  echo "build-release.sh: $out/ros2-cni-$arch ($((SECONDS - start)) s): $desc" >&2
done

# checksums of every architecture's binary in $out (also those of an earlier run)
(
  cd "$out"
  present=()
  for a in amd64 arm64; do [ -f "ros2-cni-$a" ] && present+=("ros2-cni-$a"); done
  sha256sum "${present[@]}" > SHA256SUMS.tmp
  mv -f SHA256SUMS.tmp SHA256SUMS
)
echo "build-release.sh: done; $out/SHA256SUMS:" >&2
sed 's/^/  /' "$out/SHA256SUMS" >&2
