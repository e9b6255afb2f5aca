#!/usr/bin/env bash
# All five methods of a general fuser (issue 7, part 1) on ARC-Easy, ARC-Challenge, OpenBookQA and MMLU-Redux:
# 500 items each (the same items for every method: --limit 500 --seed 0), greedy answers, batch 1. One report per
# benchmark and method under docs/results/real-cpu/general-$SHARER/<benchmark>/<method>/; a finished report is
# skipped when re-run, so the evaluation resumes method by method across sessions.
#   bash examples/real_cpu/eval_general.sh qwen2.5-coder-0.5b-instruct
# Data: ../shared/data/benchmarks (DATA=...). The T2T hint is capped at 64 tokens (HINT_TOKENS) to fit a CPU session:
# on one thread the 0.5B sharer writes ~11 hints a minute.
set -euo pipefail
SHARER=${1:-qwen2.5-coder-0.5b-instruct}
DATA=${DATA:-../shared/data/benchmarks}
MODEL=${MODEL:-runs/real-cpu/general-$SHARER}
RESULTS=${RESULTS:-docs/results/real-cpu/general-$SHARER}
PATHS=(arc_easy=$DATA/arc_easy.jsonl arc_challenge=$DATA/arc_challenge.jsonl openbookqa=$DATA/openbookqa.jsonl
       mmlu_redux=$DATA/mmlu_redux)
for BENCHMARK in ${BENCHMARKS:-arc_easy arc_challenge openbookqa mmlu_redux}; do
  FIT=arc_challenge; if [ "$BENCHMARK" = arc_challenge ]; then FIT=arc_easy; fi
  for METHOD in ${METHODS:-receiver sharer c2c routing t2t}; do
    OUT="$RESULTS/$BENCHMARK/$METHOD"
    if [ -f "$OUT/results.json" ]; then echo "$BENCHMARK/$METHOD: done"; continue; fi
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} c2c-hf eval --model "$MODEL" --dtype bfloat16 \
      --benchmarks "$BENCHMARK" --benchmark-paths "${PATHS[@]}" --limit ${LIMIT:-500} --seed 0 \
      --methods "$METHOD" --mode generate --max-new-tokens 32 --hint-tokens ${HINT_TOKENS:-64} \
      --routing-fit-benchmark $FIT --routing-fit-limit 100 --batch-size 1 --output "$OUT"
  done
done
