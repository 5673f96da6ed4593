#!/usr/bin/env bash
# Builds the ros2-cni image (deploy/Containerfile) with podman or buildah and
# exports it as a tarball for `microk8s ctr image import`.
#
#   deploy/build-image.sh [--prebuilt | --vendor] [--tag NAME] [--out FILE]
#
#   (default)    compile inside rust:alpine (pulls that image and the crates)
#   --vendor     compile inside rust:alpine with `cargo vendor`ed crates, so the
#                build step itself needs no network (the builder image must
#                already be present: `podman pull docker.io/library/rust:1.89-alpine`)
#   --prebuilt   compile on this machine (`cargo build --release --target
#                x86_64-unknown-linux-musl`; needs `rustup target add
#                x86_64-unknown-linux-musl`) and put the binary into an image
#                FROM scratch: no base image, no network
#   --tag NAME   image name (default localhost/ros2-cni:<version from Cargo.toml>,
#                what deploy/*/ros2-cni.yaml reference)
#   --out FILE   tarball path (default ros2-cni-image.tar)
#
# Then, on every node:  microk8s ctr image import ros2-cni-image.tar
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

mode=source
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
tag="localhost/ros2-cni:${version}"
out="ros2-cni-image.tar"
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) mode=prebuilt ;;
    --vendor) mode=vendor ;;
    --tag) tag="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if command -v podman >/dev/null 2>&1; then
  engine=podman
elif command -v buildah >/dev/null 2>&1; then
  engine=buildah
else
  echo "build-image.sh: neither podman nor buildah is installed (Debian: apt-get install podman)" >&2
  exit 1
fi

# the build context: the sources only, never target/ (except the prebuilt binary)
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp -r Cargo.toml Cargo.lock src "$ctx/"
[ -d integration ] && cp -r integration "$ctx/"
target_stage=image
case "$mode" in
  prebuilt)
    cargo build --release --locked --target x86_64-unknown-linux-musl
    bin=target/x86_64-unknown-linux-musl/release/ros2-cni
    if file "$bin" 2>/dev/null | grep -q 'dynamically linked'; then
      echo "build-image.sh: $bin is dynamically linked" >&2
      exit 1
    fi
    mkdir -p "$ctx/target/x86_64-unknown-linux-musl/release"
    cp "$bin" "$ctx/target/x86_64-unknown-linux-musl/release/"
    target_stage=prebuilt
    ;;
  vendor)
    cargo vendor --quiet --locked --versioned-dirs "$ctx/vendor" >/dev/null
    ;;
esac

echo "build-image.sh: building $tag with $engine (stage $target_stage)" >&2
case "$engine" in
  podman)
    podman build --target "$target_stage" -f deploy/Containerfile -t "$tag" "$ctx"
    rm -f "$out"
    podman save --format docker-archive -o "$out" "$tag"
    ;;
  buildah)
    buildah build --target "$target_stage" -f deploy/Containerfile -t "$tag" "$ctx"
    rm -f "$out"
    buildah push "$tag" "docker-archive:$out:$tag"
    ;;
esac
echo "build-image.sh: wrote $out ($tag); on each node: microk8s ctr image import $out" >&2
