#!/usr/bin/env bash
# All five methods of a general fuser (issue 7, part 1) on ARC-Easy, ARC-Challenge, OpenBookQA and MMLU-Redux:
# 500 items each (the same items for every method), greedy answers, batch 1. One report per benchmark under
# docs/results/real-cpu/general-$SHARER/<benchmark>/; a finished benchmark is skipped when re-run (resumable).
#   bash examples/real_cpu/eval_general.sh qwen2.5-coder-0.5b-instruct
# Data: ../shared/data/benchmarks (DATA=...). The T2T hint is capped at 64 tokens (HINT_TOKENS) to fit a CPU session.
set -euo pipefail
SHARER=${1:-qwen2.5-coder-0.5b-instruct}
DATA=${DATA:-../shared/data/benchmarks}
MODEL=${MODEL:-runs/real-cpu/general-$SHARER}
RESULTS=${RESULTS:-docs/results/real-cpu/general-$SHARER}
PATHS=(arc_easy=$DATA/arc_easy.jsonl arc_challenge=$DATA/arc_challenge.jsonl openbookqa=$DATA/openbookqa.jsonl
       mmlu_redux=$DATA/mmlu_redux)
for BENCHMARK in ${BENCHMARKS:-arc_easy arc_challenge openbookqa mmlu_redux}; do
  if [ -f "$RESULTS/$BENCHMARK/results.json" ]; then echo "$BENCHMARK: done"; continue; fi
  FIT=arc_challenge; if [ "$BENCHMARK" = arc_challenge ]; then FIT=arc_easy; fi
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} c2c-hf eval --model "$MODEL" --dtype bfloat16 \
    --benchmarks "$BENCHMARK" --benchmark-paths "${PATHS[@]}" --limit ${LIMIT:-500} --seed 0 \
    --methods receiver sharer t2t routing c2c --mode generate --max-new-tokens 32 --hint-tokens ${HINT_TOKENS:-64} \
    --routing-fit-benchmark $FIT --routing-fit-limit 100 --batch-size 1 --output "$RESULTS/$BENCHMARK"
done
