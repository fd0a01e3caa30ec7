#!/usr/bin/env bash
# The GPU device check (issue 16, item 4), one command: training (fp32 + bf16) and exact search on
# the device torch sees, figures with the device named in OUT/device-<cuda|cpu>.json. Under 8 min on
# one GPU. Usage: bench/device_check.sh [OUT_DIR] [extra options, e.g. --quick --data-root DIR]
set -euo pipefail
cd "$(dirname "$0")/.." && exec python -m recfunnel.bench.device --out "${1:-bench/results/device}" "${@:2}"
