#!/usr/bin/env bash
# Rerun every row of bench/RESULTS.md for the named tasks (resumable), then rewrite RESULTS.md.
#   bash bench/run.sh mrpc            bash bench/run.sh mrpc stsb rte cola
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
python bench/run.py "$@" --jobs "${JOBS:-2}"
python bench/run.py --report
