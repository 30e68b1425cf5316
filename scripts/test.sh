#!/usr/bin/env bash
# Set up, then run the whole test suite against the real MNIST files.
# Arguments go to pytest (e.g. -m "not browser", -k store, -x).
source "$(dirname "$0")/setup.sh"
if [ -z "${MNIST_DATA_DIR:-}" ]; then
  if [ -d ../shared/mnist ]; then export MNIST_DATA_DIR=../shared/mnist; else export MNIST_DATA_DIR=data/mnist; fi
fi
export MNIST_DATA_DIR
mnist-train --download-only --data-dir "$MNIST_DATA_DIR"  # a no-op when the files are there
# The browser tests drive Debian's Chromium and the soak drives wrk; as root we install them.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "Missing ${missing[*]}: sudo apt-get install ${missing[*]} (or add -m 'not browser')." >&2
  fi
fi
exec python -m pytest "$@"
