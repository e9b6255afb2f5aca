#!/usr/bin/env bash
# All five methods of a general fuser on ARC-Easy, ARC-Challenge, OpenBookQA and MMLU-Redux:
# 500 items each (the same items for every method: --limit 500 --seed 0), batch 1. One report per benchmark and
# method under docs/results/real-cpu/general-$SHARER/$MODE-$PROMPT/<benchmark>/<method>/; a finished report is
# skipped when re-run, so the evaluation resumes method by method across sessions. At the end, every finished report
# of that mode and prompt is merged into one table, .../$MODE-$PROMPT/results.{json,md} and accuracy_latency.png
# (`c2c-hf eval --merge`). Git keeps the merged results.md the results README cites; the rest stays local.
#   bash experiments/real_cpu/eval_general.sh qwen2.5-coder-0.5b-instruct
#   METHODS="receiver c2c" BENCHMARKS=arc_easy bash experiments/real_cpu/eval_general.sh ...   # a part of it
# The baselines (every method but c2c) need no trained fuser: without a saved model in $MODEL they load the bases
# from $MODELS (../shared/tools/get-real-models, default ~/.cache/c2c-real-models).
# MODE=likelihood PROMPT=open (default): the bare question; the answer is the choice text most likely as the reply,
# per character (lm-eval's acc_norm). Models of this size cannot answer with a letter: with the lettered prompt
# (PROMPT=choices) SmolLM2-135M picks "A" for 94% of ARC-Easy questions in generate mode and 94% in logits mode,
# so every method sits at chance. Data: ../shared/data/benchmarks (DATA=...). The T2T hint is capped at 64 tokens
# (HINT_TOKENS) to fit a CPU session: on one thread the 0.5B sharer writes ~11 hints a minute.
# DTYPE (default bfloat16, as on the AMX machine; the fp32 runs set float32): bf16 bases are fast only on CPUs with
# bf16 matrix units (AMX, AVX512-BF16); elsewhere (e.g. AVX2 only) a bf16 matmul is ~50x slower: use DTYPE=float32.
# BATCH (default 1, the paper's protocol and every latency we compare): a larger batch only to get accuracies sooner
# (t2t fp32 on one AVX2 thread: 12 s an item at 1, 6.8 s at 16); its latency is a batch's wall clock / BATCH.
set -euo pipefail
SHARER=${1:-qwen2.5-coder-0.5b-instruct}
MODE=${MODE:-likelihood}
PROMPT=${PROMPT:-open}
DATA=${DATA:-../shared/data/benchmarks}
MODEL=${MODEL:-runs/real-cpu/general-$SHARER}
MODELS=${MODELS:-$HOME/.cache/c2c-real-models}
RESULTS=${RESULTS:-docs/results/real-cpu/general-$SHARER}/$MODE-$PROMPT
PATHS=(arc_easy=$DATA/arc_easy.jsonl arc_challenge=$DATA/arc_challenge.jsonl openbookqa=$DATA/openbookqa.jsonl
       mmlu_redux=$DATA/mmlu_redux)
for BENCHMARK in ${BENCHMARKS:-arc_easy arc_challenge openbookqa mmlu_redux}; do
  FIT=arc_challenge; if [ "$BENCHMARK" = arc_challenge ]; then FIT=arc_easy; fi
  for METHOD in ${METHODS:-receiver sharer c2c routing t2t}; do
    OUT="$RESULTS/$BENCHMARK/$METHOD"
    if [ -f "$OUT/results.json" ]; then echo "$BENCHMARK/$METHOD: done"; continue; fi
    MODEL_ARGS=(--model "$MODEL")
    if [ "$METHOD" != c2c ] && [ ! -f "$MODEL/config.json" ]; then
      MODEL_ARGS=(--receiver "$MODELS/smollm2-135m-instruct" --sharer "$MODELS/$SHARER")
    fi
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} c2c-hf eval "${MODEL_ARGS[@]}" --dtype "${DTYPE:-bfloat16}" \
      --benchmarks "$BENCHMARK" --benchmark-paths "${PATHS[@]}" --limit ${LIMIT:-500} --seed 0 \
      --methods "$METHOD" --mode "$MODE" --prompt "$PROMPT" --max-new-tokens 32 --hint-tokens ${HINT_TOKENS:-64} \
      --routing-fit-benchmark $FIT --routing-fit-limit 100 --batch-size ${BATCH:-1} --output "$OUT"
  done
done
FINISHED=$(ls -d "$RESULTS"/*/*/ 2>/dev/null | while read -r DIR; do [ -f "$DIR/results.json" ] && echo "$DIR"; done)
if [ -n "$FINISHED" ]; then c2c-hf eval --merge $FINISHED --output "$RESULTS"; fi
