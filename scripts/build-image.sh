#!/usr/bin/env bash
# Build the project's Dockerfile, exactly as written, with buildah: no Docker engine, no registry.
#
#   scripts/build-image.sh [TAG] [OPTION...] # default mnist-serve:latest; run as root
#   scripts/build-image.sh mnist-serve:serving --build-arg EXTRAS=   # the image without TensorFlow
#   buildah $(scripts/build-image.sh --storage-flags) images
#
# Base image: where no registry of base images can be reached, `python:3.11-slim` is a stand-in made
# from Debian bookworm packages with debootstrap and committed under that name (docs/deployment.md
# says how it differs from the official image). The stand-in and the built images live in a buildah
# storage under $MNIST_IMAGE_CACHE (default /var/tmp/mnist-serve-image), so a rebuild reuses the base;
# the Dockerfile's pip cache mount lives in buildah's own cache folder (/var/tmp/buildah-cache-$UID),
# so it downloads nothing again. Delete both folders for a cold build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE=${MNIST_IMAGE_CACHE:-/var/tmp/mnist-serve-image}
STORAGE_FLAGS=(--root "$CACHE/storage" --runroot "$CACHE/run" --storage-driver vfs)
BASE=python:3.11-slim
BASE_PACKAGES=python3.11,python3.11-venv,python3-pip,python-is-python3,ca-certificates

if [ "${1:-}" = --storage-flags ]; then
  echo "${STORAGE_FLAGS[@]}"
  exit 0
fi
TAG=${1:-mnist-serve:latest}
shift $(( $# > 0 ? 1 : 0 ))  # the rest go to `buildah bud`, before the context

for tool in buildah debootstrap; do
  if ! command -v "$tool" >/dev/null; then
    echo "build-image: $tool is not installed (apt-get install buildah debootstrap)" >&2
    exit 2
  fi
done
if [ "$(id -u)" != 0 ]; then
  echo "build-image: debootstrap and buildah's chroot isolation need root" >&2
  exit 2
fi

# The Debian mirror apt uses here (a site may only reach its own); DEBIAN_MIRROR overrides it.
debian_mirror() {
  grep -hsE '^[[:space:]]*(deb|URIs:)[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources | grep -oE 'https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
    | head -n 1 | tr -d '[:space:]'  || true
}

make_base() {
  local mirror rootfs container
  mirror=${DEBIAN_MIRROR:-$(debian_mirror)}
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs" "$rootfs.tar"' RETURN
  echo "build-image: making the $BASE stand-in with debootstrap from $mirror" >&2
  mkdir -p "$CACHE/debs"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" --cache-dir="$CACHE/debs" \
    bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$CACHE/debootstrap.log" >&2; return 1; }
  # This machine's own trust anchors (a TLS-inspecting egress proxy, a company CA): without them
  # pip inside the build cannot reach the package index that the machine itself reaches.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
  fi
  # Like the official image: pip may install into the system Python, and no package lists or caches.
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log
  container=$(buildah "${STORAGE_FLAGS[@]}" from scratch)
  tar -C "$rootfs" -cf "$rootfs.tar" . && rm -rf "$rootfs"
  buildah "${STORAGE_FLAGS[@]}" add "$container" "$rootfs.tar" / >/dev/null  # a tar is unpacked
  rm -f "$rootfs.tar"
  buildah "${STORAGE_FLAGS[@]}" config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label org.opencontainers.image.description="stand-in for $BASE: Debian bookworm" \
    "$container"
  buildah "${STORAGE_FLAGS[@]}" commit --quiet --rm --format docker "$container" "$BASE" >/dev/null
}

mkdir -p "$CACHE"
if ! buildah "${STORAGE_FLAGS[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  make_base
fi
# No --layers: buildah 1.28 reuses a cached `RUN --mount=type=bind,from=STAGE` step even when that
# stage's files changed, so an image built with layer caching can hold stale code. The base image and
# pip's download cache make a rebuild fast enough without it.
buildah "${STORAGE_FLAGS[@]}" bud --isolation chroot --format docker --layers=false --pull=false \
  --tag "$TAG" --file Dockerfile "$@" .
# A rebuilt tag leaves its previous image untagged, and the vfs driver keeps every image as a full
# copy of its tree (about 5 GB here): left alone, a day of rebuilds filled the disk. This storage is
# the script's own, so every untagged image in it is such a leftover.
buildah "${STORAGE_FLAGS[@]}" rmi --prune >/dev/null
