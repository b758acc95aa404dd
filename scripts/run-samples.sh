#!/usr/bin/env bash
# The main job: install what is missing, then run the whole pipeline on the sample micrographs
# in data/samples (CPU is fine). Extra arguments go to snakemake, e.g. --configfile other.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-env.sh
export PATH="${MATSAM_VENV:-$PWD/.venv}/bin:$PATH"
snakemake --cores "$(nproc)" "$@"
echo "results: $(sed -n 's/^results: *//p' config/config.yaml)/summary.csv"
