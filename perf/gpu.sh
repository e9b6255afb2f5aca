#!/usr/bin/env bash
# The performance runner on one CUDA GPU, bases in bf16, in under 5 minutes: shape sets small and paper, and real when
# its two model folders exist.
#
#   bash perf/gpu.sh [OUTPUT_DIR]      # default: $OUT, else docs/results/perf-gpu
#
# Environment: PYTHON (default python3), C2C_REAL_MODELS (default ~/.cache/c2c-real-models), BUDGET_S (hard stop,
# default 290 s). Needs the project's dependencies (pyproject.toml: transformers >= 5.24, datasets, ...); src/ is put
# on PYTHONPATH, so an uninstalled checkout works. The report is rewritten after each shape set, so a stop at the
# budget keeps the shape sets already finished.
set -euo pipefail

output="${1:-${OUT:-}}"
if [[ -n "$output" ]]; then output="$(realpath -m "$output")"; fi  # before cd: relative to the caller's folder
cd "$(dirname "$0")/.."
output="${output:-docs/results/perf-gpu}"
models="${C2C_REAL_MODELS:-$HOME/.cache/c2c-real-models}"
shapes=(small paper)
if [[ -d "$models/smollm2-135m-instruct" && -d "$models/qwen2.5-coder-0.5b-instruct" ]]; then
  shapes+=(real)
fi
mkdir -p "$output"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

status=0
timeout "${BUDGET_S:-290}" "${PYTHON:-python3}" -m perf.run \
  --device cuda --dtype bfloat16 --shapes "${shapes[@]}" --models "$models" \
  --repeats 3 --warmup 1 --output "$output" 2>&1 | tee "$output/run.log" || status=$?
if [[ $status -eq 124 ]]; then
  echo "gpu.sh: stopped at the ${BUDGET_S:-290} s budget; $output holds the shape sets that finished" >&2
fi
exit "$status"
