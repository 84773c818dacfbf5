#!/usr/bin/env bash
# Rerun the rows of bench/RESULTS.md for the named tasks (resumable), then rewrite RESULTS.md.
# Default rows: the groups main and ablation; --rows picks others (see python bench/run.py -h).
#   bash bench/run.sh mrpc            bash bench/run.sh mrpc stsb rte cola
#   bash bench/run.sh --rows rte_beta bash bench/run.sh mrpc stsb rte --rows full
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
python bench/run.py "$@" --jobs "${JOBS:-2}"
python bench/run.py --report
