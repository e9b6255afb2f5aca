#!/usr/bin/env bash
# General fuser for receiver SmolLM2-135M-Instruct <- sharer $SHARER, on a CPU, resumable.
#   bash experiments/real_cpu/train_general.sh qwen2.5-coder-0.5b-instruct   # or gemma-3-270m
#   bash experiments/real_cpu/train_general.sh gemma-3-270m --fuser_zero_init True   # further `c2c-hf train` options
# Models: ../shared/tools/get-real-models (default ~/.cache/c2c-real-models). Data: experiments/real_cpu/prepare_data.py
# (DATASET=...: default the lettered multiple-choice mix; the open mix is trained as
#   DATASET=data/real-cpu/train-open.jsonl OUT=runs/real-cpu/general-open-$SHARER bash ...).
# Re-running the same command resumes from the last checkpoint in $OUT (default runs/real-cpu/general-$SHARER).
# DTYPE (default bfloat16, as on the AMX machine; the fp32 runs set float32): bf16 bases are fast only on CPUs with
# bf16 matrix units (AMX, AVX512-BF16); elsewhere (e.g. AVX2 only) a bf16 matmul is ~50x slower: use DTYPE=float32.
set -euo pipefail
SHARER=${1:-qwen2.5-coder-0.5b-instruct}
MODELS=${MODELS:-$HOME/.cache/c2c-real-models}
OUT=${OUT:-runs/real-cpu/general-$SHARER}
DATASET=${DATASET:-data/real-cpu/train.jsonl}
RESUME=()
if compgen -G "$OUT/checkpoint-*" > /dev/null; then RESUME=(--resume_from_checkpoint True); fi
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} c2c-hf train \
  --receiver "$MODELS/smollm2-135m-instruct" --sharer "$MODELS/$SHARER" --base_dtype "${DTYPE:-bfloat16}" \
  --fuser_hidden_size 256 --fuser_num_blocks 3 --fuser_dropout 0.1 \
  --dataset "$DATASET" --max_length 512 \
  --output_dir "$OUT" "${RESUME[@]}" \
  --per_device_train_batch_size 8 --train_sampling_strategy group_by_length --max_steps ${MAX_STEPS:-300} \
  --learning_rate 3e-4 --lr_scheduler_type linear --warmup_steps 25 --weight_decay 0.01 --max_grad_norm 1.0 \
  --logging_steps 10 --save_steps 25 --save_total_limit 2 --report_to none --disable_tqdm True --seed 0 "${@:2}"
