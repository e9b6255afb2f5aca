#!/usr/bin/env bash
# The general-fuser experiment: receiver SmolLM2-135M-Instruct, sharers Qwen2.5-Coder-0.5B-Instruct and Gemma-3-270m,
# a 256-wide gated fuser trained 300 steps of 8 on instructions + MMLU, evaluated on ARC-Challenge, ARC-Easy,
# OpenBookQA and MMLU-Redux (500 items each). Every run of section 2 of docs/results/real-cpu/README.md, in the order
# they ran; each step resumes or skips what is done. bf16 bases need a CPU with bf16 matrix units (AMX); the runs with
# DTYPE=float32 ran on an AVX2-only CPU. Models: ../shared/tools/get-real-models (~/.cache/c2c-real-models); data:
# ../shared/data. Fusers go to runs/real-cpu/ (not in git), reports to docs/results/real-cpu/general-*/ (git keeps the
# merged results.md of the folders the README cites; the per-method reports stay local for paired_general.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
E=experiments/real_cpu
OPEN=data/real-cpu/train-open.jsonl
R=docs/results/real-cpu

# 1. The training mixes: MMLU asked with letters (train.jsonl) or as the bare question (train-open.jsonl).
python $E/prepare_data.py --data ../shared/data --output data/real-cpu/train.jsonl
python $E/prepare_data.py --data ../shared/data --mc-form open --output $OPEN

# 2. The lettered-mix fusers and every method on the four benchmarks (general-<sharer>/likelihood-open/).
for sharer in qwen2.5-coder-0.5b-instruct gemma-3-270m; do
  bash $E/train_general.sh $sharer                                   # 47-60 min on one thread
done
Q=qwen2.5-coder-0.5b-instruct G=gemma-3-270m
METHODS="receiver sharer c2c routing" bash $E/eval_general.sh $Q    # resumable, method by method
METHODS=t2t BENCHMARKS=arc_easy bash $E/eval_general.sh $Q          # 78 min on one thread
METHODS="receiver sharer c2c" bash $E/eval_general.sh $G
METHODS=routing BENCHMARKS=arc_easy bash $E/eval_general.sh $G
MODE=generate PROMPT=choices METHODS="receiver sharer" BENCHMARKS=arc_easy \
  bash $E/eval_general.sh qwen2.5-coder-0.5b-instruct               # the lettered prompt: generate-choices/

# 3. The open-mix Gemma fuser (general-open-gemma-3-270m/), and the same with the fuser started as the receiver.
OUT=runs/real-cpu/general-open-gemma-3-270m DATASET=$OPEN bash $E/train_general.sh gemma-3-270m
MODEL=runs/real-cpu/general-open-gemma-3-270m RESULTS=$R/general-open-gemma-3-270m METHODS="c2c receiver" \
  bash $E/eval_general.sh gemma-3-270m
OUT=runs/real-cpu/general-open-zero-gemma-3-270m DATASET=$OPEN bash $E/train_general.sh gemma-3-270m --fuser_zero_init True
MODEL=runs/real-cpu/general-open-zero-gemma-3-270m RESULTS=$R/general-open-zero-gemma-3-270m METHODS=c2c \
  BENCHMARKS=arc_easy bash $E/eval_general.sh gemma-3-270m

# 4. fp32 on an AVX2-only CPU: the control (the receiver as its own sharer), the open-mix Qwen fuser set up as the
#    control, text-to-text at batch 16 and the Gemma routing cells.
for sharer in smollm2-135m-instruct qwen2.5-coder-0.5b-instruct; do
  DTYPE=float32 OUT=runs/real-cpu/general-open-zero-$sharer DATASET=$OPEN MAX_STEPS=300 \
    bash $E/train_general.sh $sharer --fuser_zero_init True
done
DTYPE=float32 MODEL=runs/real-cpu/general-open-zero-smollm2-135m-instruct METHODS="receiver c2c" \
  RESULTS=$R/general-open-zero-smollm2-135m-instruct bash $E/eval_general.sh smollm2-135m-instruct
DTYPE=float32 MODEL=runs/real-cpu/general-open-zero-qwen2.5-coder-0.5b-instruct METHODS=c2c \
  RESULTS=$R/general-open-zero-qwen2.5-coder-0.5b-instruct bash $E/eval_general.sh qwen2.5-coder-0.5b-instruct
DTYPE=float32 MODEL=none BATCH=16 METHODS=t2t RESULTS=$R/general-gemma-3-270m-baselines-fp32-b16 \
  bash $E/eval_general.sh gemma-3-270m                               # 35-45 min a benchmark
DTYPE=float32 MODEL=none BATCH=16 METHODS="t2t receiver" RESULTS=$R/general-qwen2.5-coder-0.5b-instruct-baselines-fp32-b16 \
  bash $E/eval_general.sh qwen2.5-coder-0.5b-instruct                # t2t: 40-71 min a benchmark
DTYPE=float32 MODEL=none METHODS=routing BENCHMARKS="arc_challenge openbookqa mmlu_redux" \
  RESULTS=$R/general-gemma-3-270m-baselines-fp32 bash $E/eval_general.sh gemma-3-270m

# 5. Every cross-model comparison (general-paired.{json,md}) and the answer losses (general-answer-loss/).
bash $E/paired_general.sh
python $E/answer_loss.py init runs/real-cpu/general-gemma-3-270m runs/real-cpu/general-open-gemma-3-270m \
  runs/real-cpu/general-qwen2.5-coder-0.5b-instruct --output $R/general-answer-loss/answer_loss.json
python $E/answer_loss.py runs/real-cpu/general-open-zero-smollm2-135m-instruct --dtype float32 \
  --output $R/general-answer-loss/self-sharer-control.json
