# Sourced by the other scripts: create .venv and install the project into it when needed.
# SETUP_EXTRAS names the extras (serve.sh: train; default: train,test,docs). Reinstalls only when
# pyproject.toml or the extras changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
extras=${SETUP_EXTRAS:-train,test,docs}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${extras//,/-}
if [ ! -f "$stamp" ]; then
  # pip's own output is hundreds of lines: it goes to a log, and a summary to the terminal.
  log=.venv/pip-install.log
  echo "Installing mnist-serve[$extras] into .venv (pip's log: $log)..."
  started=$SECONDS
  if ! { python -m pip install --upgrade pip && python -m pip install --progress-bar off -e ".[$extras]"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "Installing failed; pip's whole log: $log" >&2
    exit 1
  fi
  installed=$(grep '^Successfully installed' "$log" | tail -n 1 | wc -w)
  echo "Installed $((installed > 2 ? installed - 2 : 0)) packages in $((SECONDS - started)) s."
  rm -f .venv/.installed-* && touch "$stamp"
fi
