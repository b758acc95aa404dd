#!/usr/bin/env bash
# The test command: install what is missing, check the code's form (ruff, snakefmt, snakemake
# --lint, the generated schema), start the project's one-node Slurm (as root on Debian; the
# `slurm` tests skip elsewhere), then run pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-env.sh
VENV="${MATSAM_VENV:-$PWD/.venv}"
echo "[checks] ruff, snakefmt --check, snakemake --lint, schema --check"
"$VENV/bin/python" -m ruff check matsam scripts tests benchmarks
"$VENV/bin/snakefmt" --check Snakefile rules/
"$VENV/bin/snakemake" --lint
"$VENV/bin/python" -m matsam.workflow.schema --check
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  scripts/local-slurm.sh start
  # The report test opens `snakemake --report` output in a real headless browser.
  command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
fi
exec "$VENV/bin/python" -m pytest "$@"
