#!/usr/bin/env bash
# Set up, then run the whole test suite against the real MNIST files.
# Arguments go to pytest (e.g. -m "not browser", -k store, -x).
source "$(dirname "$0")/setup.sh"
if [ -z "${MNIST_DATA_DIR:-}" ]; then
  if [ -d ../shared/mnist ]; then export MNIST_DATA_DIR=../shared/mnist; else export MNIST_DATA_DIR=data/mnist; fi
fi
export MNIST_DATA_DIR
mnist-train --download-only --data-dir "$MNIST_DATA_DIR"  # a no-op when the files are there
# The browser tests drive Debian's Chromium; as root we install it, otherwise say how.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else
    echo "Chromium is missing: install it (sudo apt-get install chromium) or add -m 'not browser'." >&2
  fi
fi
exec python -m pytest "$@"
