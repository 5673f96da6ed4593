#!/usr/bin/env bash
# Builds the ros2-cni image and exports it as a tarball for
# `microk8s ctr image import`.
#
#   deploy/build-image.sh [--oci | --prebuilt | --vendor] [--arch ARCH]...
#                         [--bin-dir DIR] [--tag NAME] [--out FILE]
#
#   --oci        no container engine at all: builds the static musl binaries
#                here (deploy/build-release.sh) and writes the image by hand, an
#                OCI archive FROM scratch holding one image per architecture
#                under one name (an OCI index: amd64 and arm64 by default).
#                Needs tar, gzip, sha256sum; no network once the Rust targets
#                are installed.
#   --prebuilt   the same binaries, packed by podman or buildah (Containerfile
#                stage `prebuilt`, FROM scratch) into a manifest list, exported
#                as an OCI archive with every architecture
#   (default)    compile inside rust:alpine with podman or buildah (pulls that
#                image and the crates): an image for the engine's own
#                architecture only
#   --vendor     as the default, with `cargo vendor`ed crates, so the build step
#                itself needs no network (the builder image must already be
#                present: `podman pull docker.io/library/rust:1.89-alpine`)
#   --arch ARCH  with --oci and --prebuilt: amd64 or arm64, repeat for both
#                (default: both)
#   --bin-dir D  with --oci and --prebuilt: take D/ros2-cni-ARCH as they are
#                instead of building them (what build-release.sh --out D wrote)
#   --tag NAME   image name (default localhost/ros2-cni:<version from Cargo.toml>,
#                what deploy/*/ros2-cni.yaml reference)
#   --out FILE   tarball path (default ros2-cni-image.tar)
#
# Then, on every node:  microk8s ctr image import ros2-cni-image.tar
# (containerd keeps the index under the name and unpacks the node's own
# architecture; add --all-platforms to keep every architecture's layers too).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

mode=source
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
tag="localhost/ros2-cni:${version}"
out="ros2-cni-image.tar"
arches=()
bin_dir=
while [ $# -gt 0 ]; do
  case "$1" in
    --oci) mode=oci ;;
    --prebuilt) mode=prebuilt ;;
    --vendor) mode=vendor ;;
    --arch) arches+=("$2"); shift ;;
    --bin-dir) bin_dir="$2"; shift ;;
    --tag) tag="$2"; shift ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64)
for a in "${arches[@]}"; do
  case "$a" in
    amd64|arm64) ;;
    *) echo "build-image.sh: unknown architecture $a (amd64 or arm64)" >&2; exit 2 ;;
  esac
done
# name[:tag] with the characters of a reference only, so it goes into JSON as is
if ! [[ "$tag" =~ ^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
  echo "build-image.sh: --tag $tag is not NAME:TAG (lower-case name, e.g. localhost/ros2-cni:$version)" >&2
  exit 2
fi
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

# The static binaries for --oci and --prebuilt: D/ros2-cni-ARCH
binaries() {
  if [ -n "$bin_dir" ]; then
    bins="$(cd "$bin_dir" && pwd)"
  else
    bins="$root/dist"
    args=()
    for a in "${arches[@]}"; do args+=(--arch "$a"); done
    "$root/deploy/build-release.sh" "${args[@]}" --out "$bins"
  fi
  for a in "${arches[@]}"; do
    if [ ! -f "$bins/ros2-cni-$a" ]; then
      echo "build-image.sh: $bins/ros2-cni-$a is missing (deploy/build-release.sh --arch $a --out $bins)" >&2
      exit 1
    fi
    if command -v file >/dev/null 2>&1 && file -b "$bins/ros2-cni-$a" | grep -q 'dynamically linked'; then
      echo "build-image.sh: $bins/ros2-cni-$a is dynamically linked" >&2
      exit 1
    fi
  done
}

# --- the engine-free OCI archive -------------------------------------------
#
# An OCI image layout (image-spec 1.0), packed as a tar:
#   oci-layout, index.json, blobs/sha256/<digest>
# index.json names one OCI index (under io.containerd.image.name, which
# containerd's import uses as the image name, and org.opencontainers.image.ref.name,
# the tag, which skopeo/podman use); that index has one manifest per
# architecture with its platform; each manifest has a config (architecture, os,
# entrypoint, the layer's diff_id) and one gzip layer: a tar holding /ros2-cni.
# Everything is written deterministically (fixed mtime, owner 0, sorted), so
# the same binaries give the same digests.
oci_dir=
blob() { # FILE -> prints "sha256:<hex> <size>", moves FILE into blobs/
  local f="$1" d s
  d="$(sha256sum "$f" | cut -d' ' -f1)"
  s="$(stat -c %s "$f")"
  mv -f "$f" "$oci_dir/blobs/sha256/$d"
  echo "sha256:$d $s"
}
json_blob() { # JSON text -> "sha256:<hex> <size>"
  local t="$oci_dir/tmp.json"
  printf '%s' "$1" > "$t"
  blob "$t"
}

build_oci() {
  binaries
  local epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
  local created
  created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
  oci_dir="$(mktemp -d)"
  trap 'rm -rf "$oci_dir"' EXIT
  mkdir -p "$oci_dir/blobs/sha256" "$oci_dir/rootfs"
  local entries=() a
  for a in "${arches[@]}"; do
    # the layer: /ros2-cni, mode 0755, root-owned
    install -m 0755 "$bins/ros2-cni-$a" "$oci_dir/rootfs/ros2-cni"
    tar -C "$oci_dir/rootfs" --format=ustar --owner=0 --group=0 --numeric-owner \
      --mtime="@$epoch" --mode=0755 -cf "$oci_dir/layer.tar" ros2-cni
    rm -f "$oci_dir/rootfs/ros2-cni"
    local diff_id
    diff_id="sha256:$(sha256sum "$oci_dir/layer.tar" | cut -d' ' -f1)"
    gzip -n -6 "$oci_dir/layer.tar"
    local layer layer_d layer_s
    layer="$(blob "$oci_dir/layer.tar.gz")"
    layer_d="${layer% *}" layer_s="${layer#* }"
    local variant=
    [ "$a" = arm64 ] && variant=',"variant":"v8"'
    local config cfg cfg_d cfg_s
    config="{\"created\":\"$created\",\"architecture\":\"$a\",\"os\":\"linux\"$variant,\"config\":{\"Entrypoint\":[\"/ros2-cni\"],\"Cmd\":[\"version\"],\"WorkingDir\":\"/\"},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"$diff_id\"]},\"history\":[{\"created\":\"$created\",\"created_by\":\"deploy/build-image.sh --oci: COPY ros2-cni-$a /ros2-cni\"}]}"
    cfg="$(json_blob "$config")"
    cfg_d="${cfg% *}" cfg_s="${cfg#* }"
    local manifest man man_d man_s
    manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$cfg_d\",\"size\":$cfg_s},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$layer_d\",\"size\":$layer_s}]}"
    man="$(json_blob "$manifest")"
    man_d="${man% *}" man_s="${man#* }"
    entries+=("{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$man_d\",\"size\":$man_s,\"platform\":{\"architecture\":\"$a\",\"os\":\"linux\"$variant}}")
    echo "build-image.sh: linux/$a: manifest $man_d, layer $layer_d ($layer_s bytes)" >&2
  done
  local list idx idx_d idx_s
  list="$(IFS=,; echo "${entries[*]}")"
  idx="$(json_blob "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[$list]}")"
  idx_d="${idx% *}" idx_s="${idx#* }"
  printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"digest\":\"$idx_d\",\"size\":$idx_s,\"annotations\":{\"io.containerd.image.name\":\"$tag\",\"org.opencontainers.image.ref.name\":\"${tag##*:}\"}}]}" > "$oci_dir/index.json"
  printf '%s' '{"imageLayoutVersion":"1.0.0"}' > "$oci_dir/oci-layout"
  rm -rf "$oci_dir/rootfs"
  (cd "$oci_dir" && find blobs -type f | LC_ALL=C sort > files &&
   tar --format=ustar --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
     --no-recursion -cf "$out.tmp" oci-layout index.json blobs blobs/sha256 -T files)
  mv -f "$out.tmp" "$out"
  echo "build-image.sh: wrote $out ($tag, index $idx_d: ${arches[*]}); on each node: microk8s ctr image import $out" >&2
}

if [ "$mode" = oci ]; then
  build_oci
  exit 0
fi

# --- podman / buildah --------------------------------------------------------
if command -v podman >/dev/null 2>&1; then
  engine=podman
elif command -v buildah >/dev/null 2>&1; then
  engine=buildah
else
  echo "build-image.sh: neither podman nor buildah is installed (Debian: apt-get install podman);" \
    "deploy/build-image.sh --oci needs neither" >&2
  exit 1
fi

# the build context: the sources only, never target/ (except the prebuilt binaries)
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp -r Cargo.toml Cargo.lock src "$ctx/"
[ -d integration ] && cp -r integration "$ctx/"
target_stage=image
case "$mode" in
  prebuilt)
    binaries
    mkdir -p "$ctx/dist"
    for a in "${arches[@]}"; do cp "$bins/ros2-cni-$a" "$ctx/dist/"; done
    target_stage=prebuilt
    ;;
  vendor)
    cargo vendor --quiet --locked --versioned-dirs "$ctx/vendor" >/dev/null
    ;;
esac

rm -f "$out"
if [ "$mode" = prebuilt ]; then
  # one image per architecture (TARGETARCH picks the binary; FROM scratch and
  # COPY run nothing, so no emulation is needed), gathered in a manifest list
  platforms="$(printf 'linux/%s,' "${arches[@]}")"
  platforms="${platforms%,}"
  echo "build-image.sh: building $tag for $platforms with $engine (stage prebuilt)" >&2
  "$engine" manifest rm "$tag" >/dev/null 2>&1 || true
  "$engine" rmi "$tag" >/dev/null 2>&1 || true
  "$engine" build --target prebuilt --platform "$platforms" --manifest "$tag" \
    -f deploy/Containerfile "$ctx"
  "$engine" manifest push --all "$tag" "oci-archive:$out:$tag"
  echo "build-image.sh: wrote $out ($tag: ${arches[*]}); on each node: microk8s ctr image import $out" >&2
  exit 0
fi

echo "build-image.sh: building $tag with $engine (stage $target_stage, this machine's architecture)" >&2
case "$engine" in
  podman)
    podman build --target "$target_stage" -f deploy/Containerfile -t "$tag" "$ctx"
    podman save --format docker-archive -o "$out" "$tag"
    ;;
  buildah)
    buildah build --target "$target_stage" -f deploy/Containerfile -t "$tag" "$ctx"
    buildah push "$tag" "docker-archive:$out:$tag"
    ;;
esac
echo "build-image.sh: wrote $out ($tag); on each node: microk8s ctr image import $out" >&2
